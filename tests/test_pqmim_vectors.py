"""The shipped PQ-MIM checkpoints code their committed test streams bit for bit.

``tests/vectors/pqmim.json`` holds, for every checkpoint of ``checkpoints/pqmim/`` (the
base models and the perceptual variant) and two crops of ``tests/vectors/source.png``
(the whole 60x90 crop, padded to 64x96, and its 48x80 top-left corner, no padding): the
PQ-MIM stream as hex, its bits per coding step (Σ −log2 P of each step's codes) and the
SHA-256 of the decoded pixels. Regenerate it only after a deliberate change of the coder,
a checkpoint or the stream format::

    python tests/test_pqmim_vectors.py --write

Properties: decoding a committed stream gives the recorded pixels; coding the crop again
gives the committed stream and the recorded bits per step. Both compare float32
computations (g_a, the MIM transformer, g_s) bit for bit, so they run only on the
platform the record was pinned on (torch version, CPU capability and CPU model), on one
thread. The CPU model is part of the pin since 2026-12-07: the record pinned on an earlier
"AVX512" machine decoded to other pixels on an AMD EPYC that torch also calls "AVX512"
(oneDNN's float32 kernels differ between the two), so the capability alone does not name
the arithmetic.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nic_lib import coding, data, provenance
from nic_lib.models import pqmim

VECTOR_DIR = Path(__file__).parent / "vectors"
RECORD_PATH = VECTOR_DIR / "pqmim.json"
#: The crops coded: (name, rows, columns) of ``source.png`` (60x90).
CROPS = (("source", slice(0, 60), slice(0, 90)), ("corner48x80", slice(0, 48), slice(0, 80)))


def _platform() -> tuple[str, str, str]:
    return torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability(), provenance.cpu_model()


def _crop(name: str) -> np.ndarray:
    rows, cols = next((r, c) for n, r, c in CROPS if n == name)
    return np.ascontiguousarray(data.load_image(VECTOR_DIR / "source.png")[rows, cols])


@functools.lru_cache(maxsize=None)
def _model(checkpoint: str) -> pqmim.PQMIM:
    path = pqmim.checkpoint_dir() / checkpoint
    if not path.is_file():
        pytest.skip(f"no shipped PQ-MIM checkpoint {path}")
    return pqmim.load_pqmim(path)[0]


def _code(model: pqmim.PQMIM, img: np.ndarray) -> dict:
    """The stream, bits per step and decoded pixels of one crop (as ``code_image``)."""
    out = pqmim.code_image(model, img)
    x = coding.pad_to(coding.to_tensor(img), pqmim.DOWNSAMPLING)
    stream = model.compress(x)["strings"][0][0]
    assert len(stream) == out["bytes"] and out["exact"]
    return {"stream_hex": stream.hex(), "bits_per_step": out["bits_per_step"],
            "radius": out["radius"], "decoded_pixels_sha256": data.pixel_sha256(out["x_hat"])}


def _write() -> None:
    torch.set_num_threads(1)
    vectors = []
    for path in pqmim.find_checkpoints() + pqmim.find_checkpoints(perceptual=True):
        for name, _, _ in CROPS:
            vectors.append({"checkpoint": path.name, "crop": name,
                            **_code(pqmim.load_pqmim(path)[0], _crop(name))})
    torch_version, capability, cpu_model = _platform()
    record = {"source": "source.png", "crops": {n: [r.start, r.stop, c.start, c.stop]
                                                for n, r, c in CROPS},
              "pinned_on": {"torch": torch_version, "cpu_capability": capability,
                            "cpu_model": cpu_model},
              "vectors": vectors}
    RECORD_PATH.write_text(json.dumps(record, indent=1) + "\n")


RECORD = json.loads(RECORD_PATH.read_text()) if RECORD_PATH.is_file() else {"vectors": []}
VECTORS = RECORD["vectors"]
IDS = [f"{v['checkpoint'].removesuffix('.pt')}-{v['crop']}" for v in VECTORS]


def _pinned_platform() -> None:
    pinned = tuple(RECORD["pinned_on"].get(k) for k in ("torch", "cpu_capability", "cpu_model"))
    if _platform() != pinned:
        pytest.skip(f"PQ-MIM vectors pinned on torch {pinned[0]} / {pinned[1]} / {pinned[2]}; this "
                    f"is {' / '.join(_platform())} (float32 results may round otherwise)")


def test_every_shipped_checkpoint_has_vectors():
    shipped = {p.name for p in pqmim.find_checkpoints() + pqmim.find_checkpoints(perceptual=True)}
    assert {v["checkpoint"] for v in VECTORS} >= shipped
    assert {"M2-K256.pt", "M4-K256.pt"} <= {v["checkpoint"] for v in VECTORS}


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_decoding_a_committed_stream_gives_its_recorded_pixels(vector, one_thread):
    model = _model(vector["checkpoint"])
    img = _crop(vector["crop"])
    dec = model.decompress([[bytes.fromhex(vector["stream_hex"])]])
    h, w = img.shape[:2]
    x_hat = coding.from_tensor(dec["x_hat"][..., :h, :w])
    assert x_hat.shape == img.shape
    _pinned_platform()
    assert data.pixel_sha256(x_hat) == vector["decoded_pixels_sha256"]


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_coding_the_crop_again_gives_the_committed_stream(vector, one_thread):
    _pinned_platform()
    out = _code(_model(vector["checkpoint"]), _crop(vector["crop"]))
    assert out["stream_hex"] == vector["stream_hex"]
    assert out["bits_per_step"] == vector["bits_per_step"]
    assert out == {k: vector[k] for k in out}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python {sys.argv[0]} --write  (rewrites {RECORD_PATH})")
    _write()
