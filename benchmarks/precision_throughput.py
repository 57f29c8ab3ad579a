"""Training step time in fp32 and in bf16 (``--precision``), side by side in one process.

``nic_lib.train --precision bf16`` runs the networks' forward under bfloat16 autocast
(:func:`nic_lib.train.reduced_precision`). Whether that pays depends on the CPU (oneDNN
uses AMX / AVX512-BF16 where present; without them bfloat16 can be slower). This script
times one training step (forward, loss, backward; mbt2018 at each width, channels-last,
128² crops, batch 8, one thread) alternating fp32 and bf16 step by step in the same
process, so that load from other work on a shared machine hits both alike, and reports
the median step time of each and their ratio. (``benchmarks/train_throughput.py
--variants ours ours-bf16`` times whole training runs in fresh processes instead: cleaner
on an idle machine, meaningless on a loaded one.)

    OMP_NUM_THREADS=1 python benchmarks/precision_throughput.py --widths 64,192 96,192

Writes ``build/benchmarks/precision_throughput.csv``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from nic_lib import fileio, train

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "benchmarks" / "precision_throughput.csv"


def step_times(N: int, M: int, steps: int, crop: int = 128, batch: int = 8) -> dict[str, list[float]]:
    """Seconds per training step in each precision, the two alternating."""
    torch.manual_seed(0)
    cfg = train.TrainConfig(model="mbt2018", N=N, M=M, lmbda=0.013)
    model = train.build_model(cfg).train().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {p: [] for p in train.PRECISIONS}

    def step(precision: str) -> float:
        t = time.perf_counter()
        with train.reduced_precision(model, precision):
            out = model(x)
        bpp = sum((-torch.log2(v)).sum() for v in out["likelihoods"].values()) / (batch * crop * crop)
        loss = cfg.lmbda * 255**2 * torch.mean((out["x_hat"] - x) ** 2) + bpp
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    for _ in range(2):  # warm-up: oneDNN picks its kernels
        for p in train.PRECISIONS:
            step(p)
    for i in range(steps):
        for p in (train.PRECISIONS if i % 2 == 0 else train.PRECISIONS[::-1]):
            times[p].append(step(p))
    return times


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", nargs="+", default=["64,192", "96,192"], help="N,M pairs")
    p.add_argument("--steps", type=int, default=8, help="timed steps per precision")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for w in args.widths:
        N, M = (int(v) for v in w.split(","))
        times = step_times(N, M, args.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"N": N, "M": M, "threads": args.threads, "steps": args.steps,
                     "fp32_s_per_step": med["fp32"], "bf16_s_per_step": med["bf16"],
                     "speedup": med["fp32"] / med["bf16"],
                     "cpu_bf16_support": torch.backends.mkldnn.is_available()})
        print(f"N={N} M={M}: fp32 {med['fp32']:.3f} s/step, bf16 {med['bf16']:.3f} s/step, "
              f"{med['fp32'] / med['bf16']:.2f}x", flush=True)
    table = pd.DataFrame(rows)
    fileio.atomic_write_text(OUT, table.to_csv(index=False))
    return table


if __name__ == "__main__":
    main()
