"""The shipped checkpoints decode their committed ``.nic`` test vectors bit for bit.

``tests/vectors/`` holds a 60x90 crop of kodim23 (``source.png``) coded by every shipped
cpu-profile model at its lowest and highest quality, and ``vectors.json`` the SHA-256 of
each file and of the pixels it decodes to (written by ``scripts/make_nic_vectors.py``;
regenerate only after a deliberate change of a coder, a checkpoint or the format).

Properties: the committed files are intact and their headers name their model; decoding
a file with today's code gives the recorded pixels; coding the crop again gives the
committed bytes. The last two compare float32 convolutions (g_a, g_s) bit for bit, so
they run only on the platform the digests were pinned on (torch version and CPU
capability, as in ``tests/test_device.py``), and on one thread: the hyperprior models'
h_s is not bit-exact across thread counts for every input size (mbt2018-mean q6 decodes
this crop one pixel level apart on 2 threads).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nic_lib import container, data
from nic_lib.models import CheckpointNotFoundError, get_model

VECTOR_DIR = Path(__file__).parent / "vectors"
RECORD = json.loads((VECTOR_DIR / "vectors.json").read_text())
VECTORS = RECORD["vectors"]
PINNED_ON = (RECORD["pinned_on"]["torch"], RECORD["pinned_on"]["cpu_capability"])
#: Lowest PSNR of a decoded vector against its source: the q1 models reach ~24 dB on it.
MIN_PSNR_DB = 20.0


def _ids(vectors: list[dict]) -> list[str]:
    return [v["file"].removesuffix(".nic") for v in vectors]


@functools.lru_cache(maxsize=None)
def _model(name: str, quality: int) -> torch.nn.Module:
    try:
        return get_model(name, quality, RECORD["profile"])
    except CheckpointNotFoundError as err:
        pytest.skip(str(err))


def _source() -> np.ndarray:
    img = data.load_image(VECTOR_DIR / RECORD["source"]["file"])
    assert data.pixel_sha256(img) == RECORD["source"]["pixels_sha256"]
    return img


def _pinned_platform() -> None:
    here = (torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability())
    if here != PINNED_ON:
        pytest.skip(f"digests pinned on torch {PINNED_ON[0]} / {PINNED_ON[1]}; this is "
                    f"{here[0]} / {here[1]} (float32 convolutions may round otherwise)")


def test_every_shipped_model_has_vectors_at_both_ends_of_its_range():
    from nic_lib.models import hub, registry

    covered = {(v["model"], v["quality"]) for v in VECTORS}
    shipped = {name for name in registry.available_models()
               if name not in registry.SINGLE_RATE_MODELS and hub.variable_rate_checkpoint_path(name).is_file()}
    assert "mbt2018" in shipped and {v["model"] for v in VECTORS} == shipped
    for name in {v["model"] for v in VECTORS}:
        qualities = sorted(q for n, q in covered if n == name)
        assert len(qualities) == 2 and qualities[0] < qualities[1], name


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_vector_files_are_intact_and_name_their_model(vector):
    payload = (VECTOR_DIR / vector["file"]).read_bytes()
    assert hashlib.sha256(payload).hexdigest() == vector["nic_sha256"]
    header = container.read_header(payload)
    assert (header.model, header.quality, header.profile) == (
        vector["model"], vector["quality"], RECORD["profile"])
    assert (header.height, header.width) == _source().shape[:2]


@pytest.mark.slow
@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_decoding_a_vector_gives_its_recorded_pixels(vector, one_thread):
    payload = (VECTOR_DIR / vector["file"]).read_bytes()
    decoded = container.decode_image(payload, _model(vector["model"], vector["quality"]),
                                     vector["quality"])
    source = _source()
    assert decoded.shape == source.shape and decoded.dtype == np.uint8
    mse = np.mean((decoded.astype(np.float64) - source) ** 2)
    assert 10 * np.log10(255**2 / mse) > MIN_PSNR_DB  # it decodes to the picture
    _pinned_platform()
    assert data.pixel_sha256(decoded) == vector["decoded_pixels_sha256"]


@pytest.mark.slow
@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_coding_the_source_again_gives_the_committed_bytes(vector, one_thread):
    _pinned_platform()
    payload = container.encode_image(_model(vector["model"], vector["quality"]), _source(),
                                     vector["model"], vector["quality"], RECORD["profile"])
    assert payload == (VECTOR_DIR / vector["file"]).read_bytes()
