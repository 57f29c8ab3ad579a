"""Width study of the cpu profile's joint model: which (N, M) is best at equal CPU time?

Issue 25: with M = 96 latent channels every cpu-profile curve flattened near 32 dB. This
benchmark trains the same variable-rate ``mbt2018`` (qualities 1-6) from scratch at
several widths for the same CPU budget each (converted to steps with each width's
measured throughput, :data:`THROUGHPUT`), one after the other on one thread,
and measures for each width:

- training throughput (images/s, from the run's log.csv);
- a learning curve at every level (PSNR and bpp of the likelihoods on 4 Kodak crops of
  256², from the run's eval.csv), of which the report keeps a low, a middle and the top λ;
- the *unquantized-autoencoder ceiling*: PSNR of ``g_s(g_a(x))`` with the gain units but no
  rounding, on the first 6 Kodak images at the top level (no entropy model can lift a
  curve above it);

and beside them the *PCA bound*: the PSNR of the best linear code that keeps K numbers per
16×16×3 block (PCA on Kodak's own blocks), the dimension count behind the ceiling.

    python benchmarks/width_study.py train --minutes 25        # runs that are missing (resumes)
    python benchmarks/width_study.py report                    # tables + figure from the runs

Runs go to ``$NIC_RUNS_DIR/width-study/<N>-<M>/`` (default ``~/nic-runs``, outside the
repository); the report to ``build/benchmarks/width_study/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nic_lib import capacity, data, fileio
from nic_lib.models import checkpoints, variable_rate

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "benchmarks" / "width_study"
#: (N, M) pairs: the shipped width, the paper's M at three N, and M = 320 (CompressAI's
#: high-rate width) at the narrow N.
DEFAULT_WIDTHS = ("64,96", "64,192", "96,192", "128,192")
#: Training images per second of each width on one thread of this project's 2-core machine
#: with the other core idle (variable-rate mbt2018, 128² crops, batch 8; measured
#: 2026-12-06 with 30-step runs of ``python -m nic_lib.train ... --threads 1``). The budget
#: is converted to steps with these, so every width gets the same CPU time however loaded
#: the machine is while the study runs (a wall-clock budget would not be fair on a shared
#: machine). A width not listed is measured with a 40-step probe first.
THROUGHPUT = {(64, 96): 30.4, (64, 192): 20.4, (96, 192): 13.3, (128, 192): 9.35,
              (64, 320): 12.0}
#: Same recipe for every width; only N and M differ. From scratch, variable rate q1-6,
#: 128² crops (the cpu profile's), peak 5e-4 after 200 warm-up steps, cosine over the
#: run's steps so every width finishes its decay inside the same budget.
BATCH = 8
RECIPE = ["--model", "mbt2018", "--qualities", "1", "2", "3", "4", "5", "6",
          "--crop", "128", "--batch-size", str(BATCH), "--lr", "5e-4", "--warmup-steps", "200",
          "--min-lr-ratio", "0.05", "--eval-images", "4", "--eval-crop", "256",
          "--threads", "1", "--no-progress"]
#: Evaluations per run (each evaluates the 6 levels on the 4 crops).
EVALS_PER_RUN = 16
#: Levels the report follows: a low, a middle and the top λ.
REPORT_QUALITIES = (1, 4, 6)
#: PCA bound: K components per 16x16x3 block (768 numbers).
PCA_K = (48, 96, 144, 192, 256, 320)
#: Kodak images for the autoencoder ceiling (whole images).
CEILING_IMAGES = 6


def runs_dir() -> Path:
    return Path(os.environ.get("NIC_RUNS_DIR", Path.home() / "nic-runs")) / "width-study"


def _widths(values) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in w.split(",")) for w in values]


def _probe(n: int, m: int) -> float:
    """Images/s of a width on one thread: a 40-step run (the last 30 steps timed)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "nic_lib.train", *RECIPE, "--N", str(n),
                        "--M", str(m), "--max-steps", "40", "--eval-every", "0",
                        "--log-every", "10", "--out-dir", tmp], check=True, cwd=REPO,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
        return float(pd.read_csv(Path(tmp) / "log.csv").images_per_s.iloc[1:].mean())


def budget_steps(n: int, m: int, minutes: float) -> int:
    """Steps that ``minutes`` of one idle core buy at this width (:data:`THROUGHPUT`)."""
    rate = THROUGHPUT.get((n, m)) or _probe(n, m)
    return int(round(minutes * 60 * rate / BATCH))


def train(widths: list[tuple[int, int]], minutes: float) -> None:
    """Train each width for ``minutes`` of CPU (skip finished runs, resume interrupted ones)."""
    for n, m in widths:
        out = runs_dir() / f"{n}-{m}"
        if (out / "final.pt").is_file():
            print(f"[{n},{m}] done: {out}")
            continue
        steps = budget_steps(n, m, minutes)
        cmd = [sys.executable, "-m", "nic_lib.train", *RECIPE, "--N", str(n), "--M", str(m),
               "--max-steps", str(steps), "--eval-every", str(max(1, steps // EVALS_PER_RUN)),
               "--out-dir", str(out)]
        if (out / "ckpt.pt").is_file():
            cmd = [sys.executable, "-m", "nic_lib.train", "--resume", str(out)]
        print(f"[{n},{m}] {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})


def report(widths: list[tuple[int, int]]) -> None:
    """Write learning curves, throughput, ceilings and the PCA bound; draw the figure."""
    images = data.load_images("kodak", limit=CEILING_IMAGES)
    curves, summary = [], []
    for n, m in widths:
        run = runs_dir() / f"{n}-{m}"
        if not (run / "eval.csv").is_file():
            print(f"[{n},{m}] no run yet at {run}")
            continue
        ev = pd.read_csv(run / "eval.csv")
        ev = ev[ev.weights == "model"].assign(N=n, M=m)
        curves.append(ev)
        log = pd.read_csv(run / "log.csv")
        row = {"N": n, "M": m, "images_per_s": float(log.images_per_s.iloc[5:].median()),
               "steps": int(log.step.max()), "hours": float(log.wall_s.max() / 3600)}
        final = run / "final.pt"
        if final.is_file():
            model, _ = checkpoints.load_checkpoint(final, calibrated=False)
            top = len(variable_rate.rate_levels(model)) - 1
            row["ceiling_psnr_top"] = capacity.autoencoder_ceiling(model, images, top)
        last = ev[ev.step == ev.step.max()]
        for q in REPORT_QUALITIES:
            r = last[last.quality == q]
            if len(r):
                row[f"psnr_q{q}"], row[f"bpp_q{q}"] = float(r.psnr.iloc[0]), float(r.bpp.iloc[0])
        summary.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    pca = capacity.pca_bound([img for _, img in data.load_images("kodak")], PCA_K)
    fileio.atomic_write_text(OUT / "pca_bound.csv", pca.to_csv(index=False))
    if curves:
        fileio.atomic_write_text(OUT / "learning_curves.csv",
                                 pd.concat(curves).to_csv(index=False))
    fileio.atomic_write_text(OUT / "summary.csv", pd.DataFrame(summary).to_csv(index=False))
    print(pca.to_string(index=False))
    print(pd.DataFrame(summary).to_string(index=False))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["train", "report"])
    p.add_argument("--widths", nargs="+", default=list(DEFAULT_WIDTHS), help="N,M pairs")
    p.add_argument("--minutes", type=float, default=25.0,
                   help="training budget per width, in minutes of one idle core")
    args = p.parse_args(argv)
    widths = _widths(args.widths)
    if args.command == "train":
        train(widths, args.minutes)
    else:
        report(widths)


if __name__ == "__main__":
    main()
