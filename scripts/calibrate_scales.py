"""Fit the scale calibration of the hyperprior checkpoints on held-out photos.

    OMP_NUM_THREADS=1 python scripts/calibrate_scales.py                 # the shipped cpu-profile models
    python scripts/calibrate_scales.py --checkpoint runs/x/final.pt --images 4

Why: a hyperprior model predicts one Gaussian scale σ per latent; if those scales are
systematically too small or too large, every latent pays for it. For each rate level the
factor c that minimises the estimated bits Σ −log2 P(ŷ | c·σ, μ) of the first ``--images``
photos-hr images (the CLIC stand-in, centre-cropped to Kodak's size; never Kodak, the test
set) is written into the model: the checkpoint's state dict gets the factors
(``scale_calibration``, :func:`nic_lib.models.checkpoints.write_calibration`, atomically),
and ``<checkpoint>.calibration.json`` records the fit (the bits of every candidate, the
tuning images, the SHA-256 of the calibrated file). ŷ does not depend on σ, so only the
rate moves; see :mod:`nic_lib.models.calibration`.

A checkpoint whose best factors save less than ``--min-saving`` on every level is left
uncalibrated (it is calibrated already; factors would change its streams for nothing):
factors it held are removed, and so is an existing record. Prints the factors and savings
per level.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from nic_lib import data
from nic_lib.models import calibration, checkpoints, hub

#: Models whose checkpoints are fitted by default (the cpu profile's variable-rate files).
DEFAULT_MODELS = calibration.CALIBRATED_MODELS
#: A record is kept only if some level saves at least this share of the bits.
MIN_SAVING = 0.005


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="+", type=Path,
                   help="checkpoints to fit (default: every cpu-profile file of "
                        f"{', '.join(DEFAULT_MODELS)}: checkpoints/<model>/n96.pt, and "
                        "n96-top.pt where shipped)")
    p.add_argument("--images", type=int, default=12, help="tuning images (default 12)")
    p.add_argument("--min-saving", type=float, default=MIN_SAVING,
                   help=f"keep a record only if a level saves this share (default {MIN_SAVING})")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error("--images must be at least 1")
    paths = args.checkpoint or [p for m in DEFAULT_MODELS for p in hub.cpu_checkpoint_files(m)]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        sys.exit(f"no checkpoint at {', '.join(missing)}; train it first "
                 "(python scripts/train_cpu_profile.py --only <model>)")
    images = data.load_tuning_images(args.images)
    for path in paths:
        start = time.perf_counter()
        model, ckpt = checkpoints.load_checkpoint(path, calibrated=False)
        if not calibration.supports_calibration(model):
            sys.exit(f"{path} holds {ckpt['model']!r}, which scale calibration does not cover "
                     "(see nic_lib.models.calibration)")
        table = calibration.fit_scale_calibration(model, images)
        info = {"tuning_set": data.TUNING_SET, "crop": list(data.TUNING_CROP),
                "images": [name for name, _ in images],
                "qualities": list(ckpt["config"].get("qualities") or []),
                "torch": torch.__version__,
                "command": "python scripts/calibrate_scales.py " + " ".join(argv or sys.argv[1:])}
        target = calibration.calibration_path(path)
        record = calibration.save_calibration(path, table, **info)
        if max(record["saving"]) < args.min_saving:
            target.unlink()
            if "scale_calibration" in ckpt["state_dict"]:
                checkpoints.write_calibration(path, None)
            print(f"{path}: calibrated already (best saving {max(record['saving']):.2%} < "
                  f"{args.min_saving:.1%}); no record")
            continue
        # the factors into the model (its state dict), then the record names that file
        checkpoints.write_calibration(path, record["factors"])
        record = calibration.save_calibration(path, table, **info)
        print(f"{path}: {time.perf_counter() - start:.0f} s -> {path} ({calibration.BUFFER}), "
              f"record {target}")
        for level, (c, s) in enumerate(zip(record["factors"], record["saving"])):
            print(f"  level {level}: factor {c:.2f}, {s:.2%} fewer bits of y on "
                  f"{len(images)} {data.TUNING_SET} crops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
