"""Device handling: a bitstream written on one device decodes on another.

Where PyTorch sees a GPU the pairs (cuda -> cpu) and (cpu -> cuda) run; without one they
skip and the (cpu -> cpu) pair checks the same code path: encoder and decoder are separate
copies of the model, so nothing but the bitstream passes between them.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nic_lib import coding, neural
from nic_lib.models import build_model, default_device, resolve_device

HAS_CUDA = torch.cuda.is_available()
PAIRS = [("cpu", "cpu"), ("cuda", "cpu"), ("cpu", "cuda")]
MODELS = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "mbt2018-checkerboard"]


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(3)
    model = build_model(name, N=16, M=24).eval()
    model.update(force=True)  # coder tables built on the CPU, then copied with the model
    return model


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(64, 64), mode="bilinear")
    return smooth.clamp(0, 1)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("encode_on,decode_on", PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_a_bitstream_written_on_one_device_decodes_on_another(name, encode_on, decode_on, one_thread):
    if "cuda" in (encode_on, decode_on) and not HAS_CUDA:
        pytest.skip("no GPU here: the cpu-to-cpu case runs the same code")
    model = _model(name)
    encoder, decoder, reference = (copy.deepcopy(model).to(d) for d in (encode_on, decode_on, "cpu"))
    x = _image()
    with torch.no_grad():
        enc = encoder.compress(x.to(encode_on))
        x_hat = decoder.decompress(enc["strings"], enc["shape"])["x_hat"].cpu()
        # the same stream decoded on the CPU: the latents must be the same, so the pictures
        # differ at most by the float rounding of g_s between devices
        x_ref = reference.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert torch.allclose(x_hat, x_ref, atol=1e-4), float((x_hat - x_ref).abs().max())


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_code_image_runs_where_the_model_is(device, one_thread):
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("no GPU here")
    model = _model("mbt2018-mean").to(device)
    img = (np.random.default_rng(1).random((48, 80, 3)) * 255).astype(np.uint8)
    out = coding.code_image(model, img)
    assert out["x_hat"].shape == img.shape and out["x_hat"].dtype == np.uint8
    assert out["bpp"] > 0 and out["bpp_est"] > 0
    assert neural.latent_statistics(model, img)["bits"].ndim == 3


def test_the_default_device_is_a_gpu_when_there_is_one():
    assert default_device() == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device(None).type == default_device()
    assert resolve_device("auto").type == default_device()
    assert resolve_device("cpu").type == "cpu"
    if not HAS_CUDA:
        with pytest.raises(ValueError, match="no GPU"):
            resolve_device("cuda")


# The shipped checkpoints' bitstreams are pinned in one place, tests/test_vectors.py
# (scripts/make_nic_vectors.py writes them, on one platform; --repin moves them to another).
