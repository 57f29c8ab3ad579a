"""Time one Fourier heat map (32x17 half-plane of a 32x32 grid) for one codec over Kodak crops.

The issue's budget: a 32x17 half-plane map over a few Kodak crops in under 15 minutes on
this project's CPU machine. Prints the runs, seconds per codec run, the total, and the
map's summary (PSNR drop by radial band); writes the tidy table as CSV.

    python benchmarks/fourier_heatmap.py --codec jpeg2000 --setting 0.5 --crops 3
    python benchmarks/fourier_heatmap.py --codec tiny-nic --crops 3      # untrained mbt2018-mean N=8, M=12
    python benchmarks/fourier_heatmap.py --codec mbt2018:3 ...            # a cpu-profile checkpoint

Run it niced: ``OMP_NUM_THREADS=1 nice -n 19 python benchmarks/fourier_heatmap.py``.

The per-call cost behind notebook 03's paper-setting map (512x512 crops, lowest
frequencies, one thread; ``nic_lib.heatmaps.HeatmapSetting`` turns it into a budget)::

    python benchmarks/fourier_heatmap.py --codec jpeg2000 --setting 0.5 --crops 2 --crop 512 --grid 4 --step 1
    python benchmarks/fourier_heatmap.py --codec mbt2018:3 --crops 1 --crop 512 --grid 10 --step 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from nic_lib import cache, data, heatmaps, spectral
from nic_lib.plotting import BUILD_DIR

#: Kodak crops: 3 is "a few", enough to average the random signs over.
DEFAULT_CROPS = 3
#: JPEG 2000 at 0.5 bpp: mid-rate, where both smooth and textured content lose detail.
DEFAULT_SETTING = 0.5


def _codec(spec: str, setting: float) -> spectral.CodecFn:
    if spec == "tiny-nic":
        import torch

        from nic_lib.models import build_model

        torch.manual_seed(0)
        # untrained: its estimate is not checked against real bits (no coder tables)
        return spectral.nic_codec(build_model("mbt2018-mean", N=8, M=12), check=None)
    if ":" in spec:
        from nic_lib.models import get_model

        name, quality = spec.split(":")
        return spectral.nic_codec(get_model(name, int(quality), profile="cpu"))
    return spectral.classic_codec(spec, setting=setting)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the map, print timings and band summary."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default="jpeg2000", help="classic codec name, 'tiny-nic', or MODEL:QUALITY (cpu checkpoint)")
    p.add_argument("--setting", type=float, default=DEFAULT_SETTING, help="classic codec setting (JPEG 2000: bpp)")
    p.add_argument("--crops", type=int, default=DEFAULT_CROPS, help="number of Kodak images (centre crops)")
    p.add_argument("--grid", type=int, default=heatmaps.DEFAULT_HEATMAP_GRID)
    p.add_argument("--crop", type=int, default=heatmaps.DEFAULT_CROP)
    p.add_argument("--eps", type=float, default=heatmaps.DEFAULT_EPS)
    p.add_argument("--step", type=int, default=None, help="frequency step in cycles per crop (default crop // grid: up to Nyquist)")
    p.add_argument("--out", type=Path, default=BUILD_DIR / "benchmarks" / "fourier_heatmap.csv")
    args = p.parse_args(argv)

    images = [img for _, img in data.load_images("kodak", limit=args.crops)]
    codec = _codec(args.codec, args.setting)
    step = args.step or args.crop // args.grid
    runs = len(heatmaps.heatmap_frequencies(args.grid, step, args.crop)[0])
    print(f"codec: {getattr(codec, 'description', args.codec)}")
    print(f"grid {args.grid}x{args.grid}, {runs} distinct frequencies (half-plane), crop {args.crop}, eps {args.eps}, "
          f"step {step}, {len(images)} crops -> {runs * len(images)} codec runs")
    start = time.perf_counter()
    table = heatmaps.fourier_heatmap(images, codec, grid=args.grid, eps=args.eps, crop=args.crop, step=step, progress=True)
    seconds = time.perf_counter() - start
    cache.write_table(table, args.out)
    per_run = seconds / (runs * len(images) + len(images))
    print(f"total {seconds:.1f} s, {per_run * 1000:.1f} ms per codec run; table -> {args.out}")
    table["psnr_drop"] = table["psnr_unperturbed"] - table["psnr"]
    table["band"] = np.asarray(spectral.BANDS)[spectral.band_of(table["radius"].to_numpy())]
    print(table.groupby("band")[["psnr_drop", "bpp"]].mean().round(3).to_string())


if __name__ == "__main__":
    main()
