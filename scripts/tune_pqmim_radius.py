"""Tune the MIM entropy model's attention radius of each PQ-MIM checkpoint on held-out photos.

    OMP_NUM_THREADS=1 python scripts/tune_pqmim_radius.py            # every shipped checkpoint
    python scripts/tune_pqmim_radius.py --checkpoint X.pt --images 2  # quicker, noisier

Why: the MIM transformer is trained on 12x12-token windows (192-pixel crops; see
``scripts/train_pqmim_cpu.py``), but codes a whole image: 32x48 tokens on Kodak. With global
attention every token then attends to ~10x more tokens, most of them farther away than any
it saw in training. :func:`nic_lib.models.pqmim.local_attention_mask` restricts attention at
inference to a (2r+1)x(2r+1) token window; the radius r is written in every stream's header,
so it is the encoder's choice and costs the decoder nothing to learn.

How: for each checkpoint, the codes of the first ``--images`` photos-hr images (the CLIC
stand-in; not Kodak, the test set), centre-cropped to Kodak's 768x512 (512x768 for portrait
photos), are priced (Σ −log2 P over S steps, no coding) under each radius of
:data:`~nic_lib.models.pqmim.RADIUS_CANDIDATES`. The radius with the fewest bits is written
into the checkpoint's config (``attention_radius``, which the loaded model codes with) and,
with the whole table, to ``<checkpoint>.radius.json`` (both atomically), so the choice can
be checked. A perceptual checkpoint has its base model's encoder and entropy model, so it
gets its base model's radius.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from nic_lib import data
from nic_lib.models import pqmim

TUNING_SET = data.TUNING_SET
#: Kodak's size (landscape); portrait photos are cropped to the transpose.
CROP = data.TUNING_CROP


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="+", type=Path,
                   help=f"base PQ-MIM checkpoints (default: {pqmim.checkpoint_dir()}/*.pt)")
    p.add_argument("--images", type=int, default=12, help="tuning images (default 12)")
    p.add_argument("--steps", type=int, default=pqmim.DEFAULT_STEPS, help="coding steps S")
    p.add_argument("--candidates", type=int, nargs="+", default=list(pqmim.RADIUS_CANDIDATES),
                   help="radii to try (0 = global attention)")
    args = p.parse_args(argv)
    if pqmim.GLOBAL_ATTENTION not in args.candidates or min(args.candidates) < 0:
        p.error(f"--candidates must include {pqmim.GLOBAL_ATTENTION} (global attention, the "
                "reference) and no negative radius")
    paths = args.checkpoint or pqmim.find_checkpoints()
    if not paths:
        sys.exit(f"no PQ-MIM checkpoints in {pqmim.checkpoint_dir()}; pass --checkpoint")
    images = data.load_tuning_images(args.images)
    for path in paths:
        if pqmim.is_perceptual_checkpoint(path):
            sys.exit(f"{path} is a perceptual variant: tune its base model, whose radius it "
                     "shares")
        start = time.perf_counter()
        model, _ = pqmim.load_pqmim(path)
        table = pqmim.tune_attention_radius(model, images, args.steps, args.candidates)
        info = {"tuning_set": TUNING_SET, "crop": list(CROP), "steps": args.steps,
                "torch": torch.__version__,
                "command": "python scripts/tune_pqmim_radius.py " + " ".join(argv or sys.argv[1:])}
        record = pqmim.save_tuned_radius(path, table, **info)
        for perceptual in pqmim.find_checkpoints(path.parent, perceptual=True):
            if perceptual.stem.startswith(path.stem + "-"):  # same encoder and MIM model
                pqmim.save_tuned_radius(perceptual, table, **info, base=path.name)
        print(f"{path.name}: radius {record['radius']} ({record['saving_vs_global']:.1%} fewer "
              f"bits than global attention on {len(images)} {TUNING_SET} crops; "
              f"{time.perf_counter() - start:.0f} s) -> {pqmim.radius_path(path)}")
        print("  bits by radius: " + ", ".join(f"{r}: {b:.0f}"
                                              for r, b in record["bits_by_radius"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
