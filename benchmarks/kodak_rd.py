"""Where a checkpoint stands against issue 25's targets: Kodak RD from real bitstreams.

Codes all 24 Kodak images at every level of a variable-rate checkpoint (a shipped ``.pt``
or a run folder, whose latest EMA weights are snapshotted), with real bitstreams (the
bpp is the length of the coded streams; the PSNR is the decoder's for the first
``--decode`` images and the forward pass' for the others, :func:`nic_lib.neural.rate_sweep`),
and writes for each:

- the BD-rate against notebook 00's committed JPEG 2000, WebP and AVIF curves
  (``paper_figures/00_classic_codecs/rd_curves.csv``, same images) and against the
  published CompressAI ``mbt2018`` curve (``rd.load_anchors``), each with the share of the
  PSNR range the BD value describes;
- issue 25's coverage: the share of JPEG 2000's PSNR range between 0.1 and 1.0 bpp that
  the checkpoint's curve covers (the −20% target must hold over at least 60% of it);
- the top level's PSNR (target ≥ 36 dB) and the unquantized-autoencoder ceiling at the top
  level on the same images (target ≥ 37 dB).

A model key (``mbt2018``) measures the cpu profile as it is served: each quality from the
file that holds it (``n96.pt``, and ``n96-top.pt`` for q6-q8 where shipped:
:func:`nic_lib.models.hub.cpu_checkpoint_for`); its ceiling is the top quality's.

Every call appends one row per checkpoint to ``history.csv`` (with the run's step and
training hours when the source is a run folder), so BD-rate can be plotted against
training time across sessions.

    python benchmarks/kodak_rd.py mbt2018                 # the cpu profile as served
    python benchmarks/kodak_rd.py checkpoints/mbt2018/n96.pt
    python benchmarks/kodak_rd.py ~/nic-runs/cpu-profile/m192-q8 ~/nic-runs/cpu-profile/n96 --images 24

Output: ``build/benchmarks/kodak_rd/`` (``<label>.csv`` RD points, ``summary.csv``,
``history.csv``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nic_lib import capacity, data, fileio, neural, rd, train
from nic_lib.models import checkpoints, hub, registry

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "benchmarks" / "kodak_rd"
CLASSIC = REPO / "paper_figures" / "00_classic_codecs" / "rd_curves.csv"
#: Issue 25: the range of JPEG 2000 over which the BD-rate target must hold.
J2K_BPP_RANGE = (0.1, 1.0)


def j2k_coverage(points: pd.DataFrame, j2k: pd.DataFrame, bpp_range=J2K_BPP_RANGE) -> float:
    """Share of JPEG 2000's PSNR range over ``bpp_range`` that a curve's PSNR range covers.

    Args:
        points: the curve (``psnr_rgb`` column).
        j2k: JPEG 2000's curve (``bpp``, ``psnr_rgb``), monotone.
        bpp_range: (low, high) bpp.

    Returns:
        ``|[lo, hi] ∩ [min, max] of the curve| / (hi − lo)``, with lo, hi the PSNR of
        JPEG 2000 at the range's ends (interpolated in log bpp).
    """
    j = j2k.sort_values("bpp")
    lo, hi = np.interp(np.log(bpp_range), np.log(j.bpp), j.psnr_rgb)
    a, b = float(points.psnr_rgb.min()), float(points.psnr_rgb.max())
    return max(0.0, min(hi, b) - max(lo, a)) / (hi - lo)


def _resolve(source: Path, tmp: Path) -> tuple[Path, dict]:
    """(checkpoint file, info) of a checkpoint or a run folder (its latest EMA weights)."""
    if source.is_dir():
        state = torch.load(source / "ckpt.pt", map_location="cpu", weights_only=False)
        snap = train.snapshot_final(source, tmp / f"{source.name}.pt")
        return snap, {"step": int(state["step"]), "run_hours": float(state["elapsed_s"]) / 3600}
    return source, {}


def _served(key: str) -> tuple[dict, torch.nn.Module, dict]:
    """{quality: model} of a model key as the cpu profile serves it, the top quality's model
    (set to its level) for the ceiling, and the files it came from."""
    models = neural.quality_models(key)
    top = max(models)
    used = {hub.cpu_checkpoint_for(key, q) for q in models}
    files = [path.name for path in hub.cpu_checkpoint_files(key) if path in used]  # main file first
    return models, models[top], {"files": "+".join(files)}


def measure(source: Path, images, decode: int) -> tuple[pd.DataFrame, dict]:
    """RD points and the summary row of one checkpoint, run folder or model key."""
    run_or_file = source.is_file() or (source / "ckpt.pt").is_file()
    if str(source) in registry.available_models() and not run_or_file:
        label = f"{source} (cpu, served)"
        models, model, info = _served(str(source))
        level = None  # the top model is set to its own level
    else:
        label = source.stem if source.is_file() else source.name
        with tempfile.TemporaryDirectory() as tmp:
            path, info = _resolve(source, Path(tmp))
            models = neural.quality_models(path)
            model, ck = checkpoints.load_checkpoint(path, calibrated=False)
        level = len(models) - 1
    points = neural.rate_sweep(images, {label: models}, decode=decode, progress=True)
    curve = points.groupby(["codec", "setting"], as_index=False)[["bpp", "bpp_est", "psnr_rgb"]].mean()
    classic = pd.read_csv(CLASSIC)
    classic = classic[classic.n_images == len(images)] if len(images) < 24 else classic
    row = {"label": label, "N": int(model.N), "M": int(model.M), "images": len(images), **info,
           "psnr_top": float(curve.psnr_rgb.max()), "bpp_top": float(curve.bpp.max()),
           "ceiling_psnr_top": capacity.autoencoder_ceiling(model, images, level)}
    # real bits vs Σ −log2 p of the forward pass, per level over the images (target ≤ 2%)
    row["real_vs_estimated_max_percent"] = float((100 * (curve.bpp / curve.bpp_est - 1)).abs().max())
    if len(images) == 24:  # notebook 00's committed curves are over all 24 images
        for codec in ("jpeg2000", "webp", "avif"):
            ref = classic[classic.codec == codec].groupby("setting", as_index=False)[["bpp", "psnr_rgb"]].mean()
            both = pd.concat([ref.assign(codec=codec), curve])
            t = rd.bd_rate_table(both, codec).set_index("codec").loc[label]
            row[f"bd_vs_{codec}"] = float(t.bd_rate_percent)
            row[f"overlap_vs_{codec}"] = float(t.overlap)
        row["j2k_range_covered"] = j2k_coverage(curve, classic[classic.codec == "jpeg2000"])
    t = rd.bd_rate_table(curve, "compressai-mbt2018").set_index("codec").loc[label]
    row["bd_vs_compressai_mbt2018"] = float(t.bd_rate_percent)
    return points, row


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", type=Path, nargs="+", help="checkpoints (.pt), run folders, or model keys (the cpu profile as served)")
    p.add_argument("--images", type=int, default=24, help="first K Kodak images (24: all, "
                   "needed for the BD-rates against notebook 00)")
    p.add_argument("--decode", type=int, default=2, help="decode the first K images too")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    images = data.load_images("kodak", limit=args.images)
    rows = []
    for source in args.sources:
        points, row = measure(source.expanduser(), images, args.decode)
        fileio.atomic_write_text(OUT / f"{row['label'].split(' ')[0]}.csv", points.to_csv(index=False))
        rows.append(row)
    summary = pd.DataFrame(rows)
    fileio.atomic_write_text(OUT / "summary.csv", summary.to_csv(index=False))
    history = OUT / "history.csv"
    old = pd.read_csv(history) if history.is_file() else pd.DataFrame()
    fileio.atomic_write_text(history, pd.concat([old, summary.assign(
        measured=pd.Timestamp.now().isoformat(timespec="seconds"))]).to_csv(index=False))
    print(summary.T.to_string())
    return summary


if __name__ == "__main__":
    main()
