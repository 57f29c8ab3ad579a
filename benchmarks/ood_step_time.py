"""Seconds per training step of the OOD benchmark's NIC variants (issue 30), one thread.

Each variant is its recipe's ``python -m nic_lib.train`` command (scripts/
train_cpu_profile.py's ``ood-*`` stages, same widths, crop, batch, precision and warm
start), cut to ``--steps`` steps and run in a fresh subprocess; the variants alternate
over ``--repeats`` rounds so a change in machine load hits all of them, and the 1-minute
load average is printed beside each run. s/step is the median over log rows after the
first (oneDNN's kernel choice and the allocator's warm-up). The recipes' CPU-hour budgets
are steps x these numbers. Writes nothing but a temporary folder.

    nice python benchmarks/ood_step_time.py                     # ~3 minutes
    nice python benchmarks/ood_step_time.py --variants elic2022-n64 elic2022-n96 --steps 10
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The shipped main line every mbt2018 variant starts from.
N96 = REPO / "checkpoints" / "mbt2018" / "n96.pt"
_ONE = ["--batch-size", "8", "--threads", "1", "--eval-every", "0", "--ckpt-every", "0",
        "--no-progress", "--log-every", "2"]
_N96 = ["--model", "mbt2018", "--N", "96", "--M", "192", "--precision", "bf16",
        "--init-from", str(N96)]
_Q = ["--qualities", *map(str, range(1, 9))]
#: variant -> its flags (the ood-* stages' model, widths, crop and precision)
VARIANTS = {
    "mbt2018-n96-vr": [*_N96, *_Q, "--crop", "128"],
    "mbt2018-n96-pruned": [*_N96, *_Q, "--crop", "128", "--prune", "0.5"],
    "mbt2018-n96-fixed": [*_N96, "--lmbda", "0.0067", "--crop", "128"],
    "mbt2018-n96-msssim": [*_N96, *_Q, "--crop", "192", "--metric", "ms-ssim"],
    "elic2022-n64": ["--model", "elic2022", "--N", "64", "--M", "192", "--lmbda", "0.0067",
                     "--crop", "128"],
    "elic2022-n96": ["--model", "elic2022", "--N", "96", "--M", "192", "--lmbda", "0.0067",
                     "--crop", "128"],
    # the same N = 64 ELIC with its transforms and hyperprior under bfloat16 autocast
    # (nic_lib.training.precision; fp32 on a CPU without native bf16)
    "elic2022-n64-bf16": ["--model", "elic2022", "--N", "64", "--M", "192", "--lmbda", "0.0067",
                          "--crop", "128", "--precision", "bf16"],
}


def seconds_per_step(run: Path) -> float:
    """Median s/step over log.csv's rows after the first (each row: --log-every steps)."""
    with open(run / "log.csv", newline="") as f:
        rows = [(int(r["step"]), float(r["wall_s"])) for r in csv.DictReader(f)]
    return statistics.median((w1 - w0) / (s1 - s0) for (s0, w0), (s1, w1) in
                             zip(rows[1:], rows[2:]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    if not N96.is_file() and any(v.startswith("mbt2018") for v in args.variants):
        sys.exit(f"{N96} is missing: the mbt2018 variants start from it (scripts/"
                 "train_cpu_profile.py --only n96)")
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for v in args.variants:
                out = Path(tmp) / f"{v}-{r}"
                load = os.getloadavg()[0]
                subprocess.run([sys.executable, "-m", "nic_lib.train", *VARIANTS[v], *_ONE,
                                "--max-steps", str(args.steps), "--out-dir", str(out)],
                               check=True, cwd=REPO, capture_output=True)
                times[v].append(seconds_per_step(out))
                print(f"{v:20s} round {r}: {times[v][-1]:.3f} s/step (load {load:.2f})",
                      flush=True)
    for v, ts in times.items():
        print(f"{v:20s} median {statistics.median(ts):.3f} s/step over {len(ts)} runs")


if __name__ == "__main__":
    main()
