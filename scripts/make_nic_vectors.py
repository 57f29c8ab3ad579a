"""Write the ``.nic`` test vectors of the shipped cpu-profile checkpoints.

    python scripts/make_nic_vectors.py            # rewrite tests/vectors/
    python scripts/make_nic_vectors.py --check    # compare with them, write nothing
    python scripts/make_nic_vectors.py --repin    # rewrite them pinned on this platform

Why: a refactoring of the coding path (padding, the container, the models' coders) must
not change a byte. Each vector is a crop of Kodak's kodim23 coded by ``nic compress``'s
path (:func:`nic_lib.container.encode_image` on :func:`nic_lib.models.get_model`'s
model) at the lowest and the highest quality the cpu profile serves for the model (over
its shipped files: ``n96.pt``, and ``n96-top.pt`` where shipped, which then makes the
top vector, :func:`nic_lib.models.hub.cpu_checkpoint_for`). For each,
``tests/vectors/vectors.json`` records the SHA-256 of the file and of the pixels it
decodes to (:func:`nic_lib.data.pixel_sha256`); ``tests/test_vectors.py`` decodes every
committed file with the current code and re-encodes the crop, and compares both.

The crop (:data:`CROP`, 60x90: odd sizes, so the replicate padding of both the bottom
and the right edge is exercised) is stored beside them as ``source.png``, so the test
needs neither the dataset nor this script.

Regenerate only after a deliberate change of a coder, a checkpoint or the format, and
say so in the commit: the digests are what "behaviour unchanged" means. Digests of
float32 convolutions (the transforms g_a, g_s) depend on the platform (torch version and
CPU capability, as in ``tests/test_device.py``; :func:`pinned_on` reads the committed one),
so regenerate on that platform, or with ``--repin`` on this one (the pinned tests then skip
on the other: say so in the commit). A CPU with AVX-512 runs the AVX2 kernels when told to,
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` (:data:`AVX2_ON_AVX512`):
checked on 2026-12-07, AMD EPYC with AVX-512, where the vectors pinned on an AVX2 machine
decoded and re-encoded bit for bit that way (the 14 tests of the models not retrained).
Torch runs on one thread here, as in the test: the hyperprior models' h_s is not bit-exact
across thread counts for every input size (mbt2018-mean q6 decodes this crop one pixel
level apart on 2 threads).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nic_lib import container, data
from nic_lib.models import hub, registry

#: Where the vectors live.
VECTOR_DIR = Path(__file__).resolve().parents[1] / "tests" / "vectors"
#: The source image and its window (top, left, height, width): 60x90 pads 4 rows and 38
#: columns to 64x128 at downsampling factor 64 (a 16 factor pads 4 and 6).
SOURCE, CROP = ("kodak", "kodim23"), (200, 300, 60, 90)
#: Weights profile of the vectors: the checkpoints this repository ships.
PROFILE = "cpu"


#: The environment that makes an AVX-512 CPU run torch's, oneDNN's and MKL's AVX2 kernels,
#: so that vectors pinned on AVX2 can be regenerated there.
AVX2_ON_AVX512 = "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2"


def pinned_on() -> tuple[str, str] | None:
    """(torch version, CPU capability) the committed vectors were made on, as in
    tests/test_device.py (float32 convolutions take other code paths elsewhere); None
    without committed vectors."""
    path = VECTOR_DIR / "vectors.json"
    if not path.is_file():
        return None
    pinned = json.loads(path.read_text())["pinned_on"]
    return pinned["torch"], pinned["cpu_capability"]


def this_platform() -> tuple[str, str]:
    """(torch version, CPU capability) of this machine."""
    return torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability()


def shipped_models() -> list[tuple[str, list[int]]]:
    """(model key, [lowest, highest] quality) of every model with a shipped cpu checkpoint.

    Returns:
        Models in registry order whose variable-rate checkpoint (``n96.pt``) exists, with
        the lowest and highest quality the cpu profile serves for it
        (:func:`nic_lib.models.hub.cpu_qualities`: its top file's included).
    """
    out = []
    for name in registry.available_models():
        if hub.variable_rate_checkpoint_path(name).is_file():
            qualities = hub.cpu_qualities(name)
            out.append((name, [qualities[0], qualities[-1]]))
    return out


def source_crop() -> np.ndarray:
    """The crop of :data:`SOURCE` the vectors code, (60, 90, 3) uint8."""
    dataset, image = SOURCE
    top, left, height, width = CROP
    pixels = dict(data.load_images(dataset))[image]
    return pixels[top:top + height, left:left + width].copy()


def make_vectors() -> tuple[dict, dict[str, bytes]]:
    """Code the crop with every shipped model at its lowest and highest quality.

    Returns:
        ``(record, files)``: the JSON record and ``{file name: .nic bytes}``.
    """
    img = source_crop()
    record = {
        "source": {"dataset": SOURCE[0], "image": SOURCE[1], "crop_top_left_height_width":
                   list(CROP), "file": "source.png", "pixels_sha256": data.pixel_sha256(img)},
        "profile": PROFILE,
        "pinned_on": dict(zip(("torch", "cpu_capability"), this_platform())),
        "vectors": [],
    }
    files = {}
    for name, qualities in shipped_models():
        for quality in qualities:
            model = hub.get_model(name, quality, PROFILE)
            payload = container.encode_image(model, img, name, quality, PROFILE)
            decoded = container.decode_image(payload, model, quality)
            file = f"{name}-q{quality}.nic"
            files[file] = payload
            record["vectors"].append({
                "file": file, "model": name, "quality": quality,
                "nic_sha256": hashlib.sha256(payload).hexdigest(),
                "decoded_pixels_sha256": data.pixel_sha256(decoded),
                "bpp": round(container.read_header(payload).bpp, 4),
            })
    return record, files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="compare with the committed vectors instead of writing them")
    p.add_argument("--repin", action="store_true",
                   help="write them pinned on this platform even if they were on another")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # see the module docstring
    here, pinned = this_platform(), pinned_on()
    if pinned not in (None, here) and not (args.check or args.repin):
        sys.exit(f"this is torch {here[0]} / {here[1]}; the vectors are pinned on "
                 f"{pinned[0]} / {pinned[1]} (float32 convolutions differ elsewhere): regenerate "
                 "them there (on an AVX-512 CPU the AVX2 kernels run with the environment "
                 f"{AVX2_ON_AVX512}), or pass --repin to pin them on this platform instead")
    record, files = make_vectors()
    if args.check:
        committed = json.loads((VECTOR_DIR / "vectors.json").read_text())
        same = committed == record
        print("vectors: the same" if same else "vectors: DIFFERENT from tests/vectors/")
        return 0 if same else 1
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    Image.fromarray(source_crop()).save(VECTOR_DIR / "source.png", optimize=True)
    for stale in sorted(set(p.name for p in VECTOR_DIR.glob("*.nic")) - set(files)):
        (VECTOR_DIR / stale).unlink()  # a model no longer shipped
    for file, payload in files.items():
        (VECTOR_DIR / file).write_bytes(payload)
    (VECTOR_DIR / "vectors.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{len(record['vectors'])} vectors -> {VECTOR_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
