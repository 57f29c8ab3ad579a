"""The ablation protocol's table: every entropy model on the same frozen transforms.

``scripts/train_cpu_profile.py`` trains the ``ablate-*`` stages: the paper's entropy
models (joint, mean-scale, scale-only, factorized, context-only, GMM, checkerboard,
context sizes 3/5/7), each from a fresh initialisation on the *same frozen* M = 192
transforms and gain units, for the same steps and learning rate. Their distortion is
therefore the same by construction (up to how each model rounds ŷ), and the table
measures what each entropy model makes of the same latents. For every run this benchmark
codes Kodak (real bitstreams; ``--images`` to use fewer) at the six levels and writes:

- ``rd_points.csv``: per model and level, mean bpp (real), bpp estimated from the
  likelihoods, PSNR;
- ``table.csv``: per model, BD-rate against the joint model (``ablate-mbt2018``) and
  against JPEG 2000 (notebook 00's committed Kodak curve, so only with all 24 images;
  NaN otherwise), and the real-vs-estimated bits gap (largest over the levels);
- ``orderings.csv``: the paper's orderings, each with the two BD-rates and whether ours
  agrees.

    python benchmarks/ablations.py                   # all ablate-* runs that finished
    python benchmarks/ablations.py --images 6        # quicker, first 6 Kodak images

Runs are read from ``$NIC_RUNS_DIR/cpu-profile/ablate-*/final.pt`` (default ~/nic-runs);
the output goes to ``build/benchmarks/ablations/``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import torch

from nic_lib import data, fileio, neural, rd, train
from nic_lib.models import checkpoints, hub

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "benchmarks" / "ablations"
JOINT = "ablate-mbt2018"
#: The paper's orderings (Minnen et al. 2018, Fig. 2 / Table 1): (better, worse).
ORDERINGS = [
    ("ablate-mbt2018", "ablate-mbt2018-mean"),
    ("ablate-mbt2018", "ablate-mbt2018-context"),
    ("ablate-mbt2018", "ablate-bmshj2018-hyperprior"),
    ("ablate-mbt2018", "ablate-bmshj2018-factorized"),
    ("ablate-mbt2018-mean", "ablate-bmshj2018-hyperprior"),
    ("ablate-bmshj2018-hyperprior", "ablate-bmshj2018-factorized"),
    ("ablate-mbt2018", "ablate-mbt2018-checkerboard"),
]
#: Pairs the paper reports as (nearly) equal or leaves open: measured, not judged.
MEASURED_ONLY = [
    ("ablate-mbt2018-gmm", "ablate-mbt2018"),
    ("ablate-mbt2018-ctx3", "ablate-mbt2018"),
    ("ablate-mbt2018-ctx7", "ablate-mbt2018"),
]


def runs_dir() -> Path:
    return Path(os.environ.get("NIC_RUNS_DIR", Path.home() / "nic-runs")).expanduser() / "cpu-profile"


def _jpeg2000() -> pd.DataFrame:
    path = REPO / "paper_figures" / "00_classic_codecs" / "rd_curves.csv"
    curves = pd.read_csv(path)
    return curves[curves.codec == "jpeg2000"][["codec", "setting", "bpp", "psnr_rgb"]]


def settled(run: Path) -> tuple[Path, dict]:
    """The run's final.pt with its quantiles settled (nic_lib.train.settle_quantiles).

    Every ablation trained 2,000 steps at the default aux learning rate (1e-3), which moves
    the quantiles of a fresh density about 2 units from their ±10 start: the coder's range
    would be wrong, and values outside it escaped at a cost the likelihood does not show.
    Each model gets the same fix before it codes anything.
    """
    model, ckpt = checkpoints.load_checkpoint(run / "final.pt", calibrated=False)
    report = train.settle_quantiles(model)
    path = OUT / f"{run.name}.settled.pt"
    checkpoints.save_checkpoint(model, path, ckpt["config"], extra={"settled_quantiles": report})
    return path, report


def sweep(path: Path, label: str, images, device: str = "cpu") -> pd.DataFrame:
    """Code the images at every level of a checkpoint; one row per image and level."""
    models = neural.quality_models(path, device=device)
    return neural.rate_sweep(images, {label: models}, decode=False, progress=False)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=24, help="first N Kodak images (default all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto|cpu|cuda: where the networks run (default auto: a GPU when present)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = hub.resolve_device(args.device)
    runs = sorted(r for r in runs_dir().glob("ablate-*") if (r / "final.pt").is_file())
    if not any(r.name == JOINT for r in runs):
        sys.exit(f"no {runs_dir() / JOINT / 'final.pt'}: train the ablations first "
                 "(python scripts/train_cpu_profile.py --only ablate-mbt2018 ...)")
    images = data.load_images("kodak", limit=args.images)
    OUT.mkdir(parents=True, exist_ok=True)
    rows, aux = [], {}
    for run in runs:
        cache = OUT / f"sweep_{run.name}_{args.images}.csv"
        path = OUT / f"{run.name}.settled.pt"
        fresh = path.is_file() and path.stat().st_mtime > (run / "final.pt").stat().st_mtime
        if fresh:
            aux[run.name] = checkpoints.load_checkpoint(path, calibrated=False)[1]["settled_quantiles"]
        else:
            path, aux[run.name] = settled(run)
        if fresh and cache.is_file() and cache.stat().st_mtime > path.stat().st_mtime:
            df = pd.read_csv(cache)
        else:
            df = sweep(path, run.name, images, device)
            fileio.atomic_write_text(cache, df.to_csv(index=False))
        print(f"{run.name}: {len(df)} codings; aux loss {aux[run.name]['aux_loss_before']:.1f} "
              f"-> {aux[run.name]['aux_loss_after']:.3f}", flush=True)
        rows.append(df)
    per_image = pd.concat(rows)
    points = rd.rd_table(per_image, by=("codec", "setting"), metrics=("bpp", "bpp_est", "psnr_rgb"))
    fileio.atomic_write_text(OUT / "rd_points.csv", points.to_csv(index=False))
    curves = pd.concat([points[["codec", "setting", "bpp", "psnr_rgb"]], _jpeg2000()])
    vs_joint = rd.bd_rate_table(curves, JOINT).set_index("codec")
    vs_j2k = rd.bd_rate_table(curves, "jpeg2000").set_index("codec")
    if args.images != 24:  # notebook 00's curve averages all 24 images: not comparable
        vs_j2k[["bd_rate_percent", "overlap"]] = float("nan")
    gap = (points.assign(gap=100 * (points.bpp / points.bpp_est - 1))
           .groupby("codec").gap.agg(lambda g: g.loc[g.abs().idxmax()]))
    table = pd.DataFrame({
        "bd_rate_vs_joint_percent": vs_joint.bd_rate_percent,
        "bd_psnr_vs_joint_db": vs_joint.bd_distortion,
        "bd_rate_vs_jpeg2000_percent": vs_j2k.bd_rate_percent,
        "overlap_vs_jpeg2000": vs_j2k.overlap,
        "real_vs_estimated_bits_worst_percent": gap,
    }).drop(index="jpeg2000", errors="ignore").reset_index(names="model")
    cfg = {r.name: checkpoints.load_checkpoint(r / "final.pt", calibrated=False)[1].get("step")
           for r in runs}
    table["steps"] = table.model.map(cfg)
    table["aux_loss_trained"] = table.model.map({k: v["aux_loss_before"] for k, v in aux.items()})
    table["aux_loss_settled"] = table.model.map({k: v["aux_loss_after"] for k, v in aux.items()})
    table["images"] = args.images
    fileio.atomic_write_text(OUT / "table.csv", table.to_csv(index=False))
    bd = table.set_index("model").bd_rate_vs_joint_percent
    order = []
    for kind, pairs in (("paper's ordering", ORDERINGS), ("measured", MEASURED_ONLY)):
        for better, worse in pairs:
            if better in bd and worse in bd:
                order.append({"kind": kind, "better (paper)": better, "worse (paper)": worse,
                              "bd_rate_better_vs_joint": bd[better],
                              "bd_rate_worse_vs_joint": bd[worse],
                              "agrees": bool(bd[better] < bd[worse]) if kind != "measured" else None})
    orderings = pd.DataFrame(order)
    fileio.atomic_write_text(OUT / "orderings.csv", orderings.to_csv(index=False))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
        print(orderings.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
