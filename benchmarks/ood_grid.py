"""Time the OOD evaluation grid: Kodak-C x classic codecs (and NIC models when trained).

The issue's target: the full Kodak-C grid for one NIC model at 6 rate points in under 30
minutes on the project's machine. This script runs :func:`nic_lib.bench.run_grid` into a
fresh cache folder, reports wall time, rows, seconds per row per codec (from a timed pass over
one image and condition), and extrapolates to the full grid (24 images x 76 conditions).

NIC models are included with ``--nic mbt2018[:1,2,...]`` (this project's cpu checkpoints);
``--rate likelihood`` uses entropy-model bpp after the grid's 2% check against real
bitstreams. ``--tiny-nic`` adds an untrained N=8, M=12 mbt2018 (real bitstreams) to time the
NIC path before checkpoints exist.

Usage::

    nice -n 19 python benchmarks/ood_grid.py --limit 1 --corruptions fog gaussian_noise --severities 3
    nice -n 19 python benchmarks/ood_grid.py --nic mbt2018 --codecs jpeg2000 --rate likelihood   # the target
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from nic_lib import bench, corruptions

#: Size of the full Kodak-C grid, for the extrapolation: 24 images x (1 clean + 15 x 5) conditions.
FULL_UNITS_PER_CODEC = 24 * (1 + len(corruptions.CORRUPTIONS) * len(corruptions.SEVERITIES))
#: The issue's target for one NIC model at 6 rate points (seconds).
TARGET_S = 30 * 60.0


def tiny_nic() -> bench.NicCodec:
    """An untrained, tiny mbt2018 (N=8, M=12): times the NIC code path, not a real codec."""
    import torch

    from nic_lib.models import build_model, default_config

    torch.manual_seed(0)
    config = default_config("mbt2018", 1)
    config.update(N=8, M=12)
    return bench.NicCodec("tiny-mbt2018", {1: build_model("mbt2018", **config)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="kodak")
    parser.add_argument("--codecs", nargs="*", default=["jpeg", "webp", "jpeg2000", "avif"])
    parser.add_argument("--nic", nargs="*", default=[], metavar="MODEL[:Q1,Q2,..]")
    parser.add_argument("--tiny-nic", action="store_true", help="add an untrained tiny mbt2018")
    parser.add_argument("--rate", choices=("bitstream", "likelihood"), default="bitstream")
    parser.add_argument("--corruptions", nargs="*", default=None, choices=corruptions.CORRUPTIONS)
    parser.add_argument("--severities", nargs="*", type=int, default=None, choices=corruptions.SEVERITIES)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-ms-ssim", action="store_true")
    parser.add_argument("--cache", type=Path, default=None, help="grid cache (default: a fresh temporary folder)")
    args = parser.parse_args(argv)
    entries = [bench.classic_codec(n) for n in args.codecs] + bench.nic_codecs_from_checkpoints(args.nic, args.rate)
    if args.tiny_nic:
        entries.append(tiny_nic())
    grid = bench.Grid(args.dataset, entries, corruptions=args.corruptions or corruptions.CORRUPTIONS,
                      severities=args.severities or corruptions.SEVERITIES, limit=args.limit,
                      with_ms_ssim=not args.no_ms_ssim)
    cache_dir = args.cache or Path(tempfile.mkdtemp(prefix="ood-grid-bench-"))
    try:
        # the -C images first, so the grid's time is codecs and metrics only
        start = time.perf_counter()
        corruptions.build(args.dataset, None, grid.corruptions, grid.severities, limit=args.limit, progress=False)
        print(f"-C images ready in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        table = bench.run_grid(grid, cache_dir, progress=True)
        took = time.perf_counter() - start
        units = len(grid.units())
        print(f"{len(table)} rows, {units} units in {took:.1f} s ({took / units:.2f} s per unit)")
        [(_name, img)] = corruptions.load_clean(args.dataset, limit=1)
        for entry in entries:
            t0 = time.perf_counter()
            for setting in entry.settings:
                entry.code(img, setting)
            per_unit = time.perf_counter() - t0
            full = per_unit * FULL_UNITS_PER_CODEC
            print(f"  {entry.name:14s} {per_unit:6.2f} s per image for {len(entry.settings)} rate points (codec only) "
                  f"-> full Kodak-C grid ~{full / 60:.0f} min" + (f" (target {TARGET_S / 60:.0f} min)"
                                                                    if isinstance(entry, bench.NicCodec) else ""))
    finally:
        if args.cache is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
