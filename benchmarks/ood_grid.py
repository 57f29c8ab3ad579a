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
    python benchmarks/ood_grid.py --nic mbt2018 --codecs --rate likelihood --shards 2   # the target

``--shards n`` runs n shard processes side by side (the grid's own sharding, as several
machines would) and times them to the merged table. ``--cache DIR`` keeps the rows; with
notebook 02's cache folder (``build/results/cpu/02_ood_benchmark``) the notebook's grid
reuses them (nic_lib.bench copies rows of the same codec between grids).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
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


def _grid(args) -> bench.Grid:
    entries = [bench.classic_codec(n) for n in args.codecs] + bench.nic_codecs_from_checkpoints(args.nic, args.rate)
    if args.tiny_nic:
        entries.append(tiny_nic())
    return bench.Grid(args.dataset, entries, corruptions=args.corruptions or corruptions.CORRUPTIONS,
                      severities=args.severities or corruptions.SEVERITIES, limit=args.limit,
                      with_ms_ssim=not args.no_ms_ssim)


def _run_shard(args, cache_dir: Path, i: int, n: int) -> int:
    """One shard in its own process, with its share of the cores."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    return len(bench.run_grid(_grid(args), cache_dir, (i, n), progress=n == 1))


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
    parser.add_argument("--shards", type=int, default=1,
                        help="processes running shards i/n side by side (default 1; 2 uses both cores here)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="grid cache (default: a fresh temporary folder; give the notebook's, "
                             "build/results/cpu/02_ood_benchmark, to let notebook 02 reuse the rows)")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-codec timing on one image")
    args = parser.parse_args(argv)
    grid = _grid(args)
    cache_dir = args.cache or Path(tempfile.mkdtemp(prefix="ood-grid-bench-"))
    if args.cache is not None and (grid.folder(cache_dir) / "key.json").exists():
        print(f"note: {grid.folder(cache_dir)} exists: finished units are not recomputed, so the time "
              "below is not a from-scratch time (give a fresh --cache for that)")
    try:
        # the -C images first, so the grid's time is codecs and metrics only
        start = time.perf_counter()
        corruptions.build(args.dataset, None, grid.corruptions, grid.severities, limit=args.limit, progress=False)
        print(f"-C images ready in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        if args.shards == 1:
            _run_shard(args, cache_dir, 0, 1)
        else:
            # the likelihood-vs-bitstream check once, before the shards (each would run it)
            bench._likelihood_gate(grid, grid.folder(cache_dir),
                                   list(corruptions.load_clean(args.dataset, args.limit)))
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(args.shards, mp_context=ctx) as pool:
                list(pool.map(_run_shard, *zip(*[(args, cache_dir, i, args.shards) for i in range(args.shards)])))
        table = bench.merge_shards(grid, args.shards, cache_dir)
        took = time.perf_counter() - start
        units = len(grid.units())
        print(f"{len(table)} rows, {units} units in {took:.1f} s ({took / 60:.1f} min, {took / units:.2f} s per "
              f"unit) with {args.shards} shard process(es)"
              + (f"; target {TARGET_S / 60:.0f} min for one NIC model at 6 rate points" if args.nic else ""))
        if args.no_profile:
            return 0
        [(_name, img)] = corruptions.load_clean(args.dataset, limit=1)
        for entry in grid.codecs:
            t0 = time.perf_counter()
            if hasattr(entry, "code_many"):
                entry.code_many(img)
            else:
                for setting in entry.settings:
                    entry.code(img, setting)
            per_unit = time.perf_counter() - t0
            full = per_unit * FULL_UNITS_PER_CODEC
            print(f"  {entry.name:14s} {per_unit:6.2f} s per image for {len(entry.settings)} rate points (codec only, "
                  f"one process) -> ~{full / 60:.0f} min of one process for the full Kodak-C grid")
    finally:
        if args.cache is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
