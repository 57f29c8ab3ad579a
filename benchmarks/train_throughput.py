"""Training throughput: nic_lib.train against a plain CompressAI-example loop.

For each width (N, M) and crop size, two loops train the same
``compressai.models.JointAutoregressiveHierarchicalPriors(N, M)`` with the same batch:

- ``plain``: CompressAI's ``examples/train.py`` style: a ``DataLoader`` whose workers decode
  the PNG/JPEG file and ``RandomCrop`` it on every step, NCHW tensors, torch's default
  threads and OpenMP settings, Adam + aux Adam, gradient clipping 1.0.
- ``ours``: ``python -m nic_lib.train`` with its defaults (decoded uint8 pool cropped in a
  background thread, channels-last, OpenMP defaults), reading images/s from its
  log.csv.
- ``ours-bf16`` (with ``--variants``): the same with ``--precision bf16`` (the networks'
  forward under bfloat16 autocast, :func:`nic_lib.train.reduced_precision`).

Each measurement runs in a fresh subprocess (so OpenMP settings and caches do not leak
between them), the variants alternate (so a change in machine load hits both), and
images/s is counted over the steps after ``--warmup`` steps. Writes
``build/benchmarks/train_throughput.csv`` (one row per width x crop x variant x repeat,
with the 1-minute load average before each run) and prints ours / plain.

    nice python benchmarks/train_throughput.py                  # ~3-6 minutes on 2 cores
    python benchmarks/train_throughput.py --widths 64,96 --crops 128 --steps 3   # quick
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --widths 64,192 96,192 --crops 128 \
        --variants ours ours-bf16 --repeats 2    # the bf16 lever, one thread
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import tempfile
import sys
import time
from pathlib import Path

from nic_lib import fileio

REPO = Path(__file__).resolve().parent.parent
#: Output table (build/ is git-ignored).
DEFAULT_OUT = REPO / "build" / "benchmarks" / "train_throughput.csv"
#: Three widths from narrow to the zoo's low-rate mean-scale size.
DEFAULT_WIDTHS = ("64,96", "96,128", "128,192")
#: The example's 256 crops, and 128 as a cheaper CPU setting.
DEFAULT_CROPS = (128, 256)
#: The papers' batch of 8.
DEFAULT_BATCH = 8
#: Steps excluded from the timing: oneDNN picks its kernels and the allocator warms up.
DEFAULT_WARMUP = 2
#: Timed steps per measurement: enough to average a few steps, few enough for minutes total.
DEFAULT_STEPS = 5
#: DataLoader workers of the plain loop: one per core of this machine (the example's 30
#: would only oversubscribe two cores).
DEFAULT_PLAIN_WORKERS = min(2, os.cpu_count() or 1)
VARIANTS = ("plain", "ours")
#: Every loop --variants can time.
ALL_VARIANTS = ("plain", "ours", "ours-bf16")
COLUMNS = ("variant", "N", "M", "crop", "batch", "repeat", "images_per_s", "steps",
           "load_avg_1min")


def plain_worker(N: int, M: int, crop: int, batch: int, warmup: int, steps: int,
                 workers: int) -> float:
    """Images/s of the CompressAI-example loop (run inside a fresh process).

    Args:
        N, M: widths of the model.
        crop: RandomCrop side.
        batch: batch size.
        warmup, steps: untimed and timed steps.
        workers: DataLoader worker processes.

    Returns:
        Training images per second over the timed steps.
    """
    import torch
    from compressai.losses import RateDistortionLoss
    from compressai.models import JointAutoregressiveHierarchicalPriors
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from nic_lib.train import training_files

    class Files(Dataset):
        def __init__(self, files, transform):
            self.files, self.transform = files, transform

        def __getitem__(self, i):
            return self.transform(Image.open(self.files[i]).convert("RGB"))

        def __len__(self):
            return len(self.files)

    torch.manual_seed(0)
    tf = transforms.Compose([transforms.RandomCrop(crop, pad_if_needed=True),
                             transforms.ToTensor()])
    loader = DataLoader(Files(training_files(["train"]), tf), batch_size=batch, shuffle=True,
                        num_workers=workers, drop_last=True)
    net = JointAutoregressiveHierarchicalPriors(N, M).train()
    params = dict(net.named_parameters())
    optimizer = torch.optim.Adam([p for n, p in params.items() if not n.endswith(".quantiles")],
                                 lr=1e-4)
    aux_optimizer = torch.optim.Adam([p for n, p in params.items() if n.endswith(".quantiles")],
                                     lr=1e-3)
    criterion = RateDistortionLoss(lmbda=0.0067)
    it = iter(loader)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        d = next(it)
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        criterion(net(d), d)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        net.aux_loss().backward()
        aux_optimizer.step()
    return steps * batch / (time.perf_counter() - t0)


def ours(N: int, M: int, crop: int, batch: int, warmup: int, steps: int,
         precision: str = "fp32") -> float:
    """Images/s of ``python -m nic_lib.train`` (a subprocess), read from its log.csv.

    Args:
        N, M, crop, batch, warmup, steps: as :func:`plain_worker`.
        precision: ``--precision`` of the run.

    Returns:
        Training images per second over the steps after ``warmup`` (sum of images over sum
        of step times of the per-step log rows).
    """
    with tempfile.TemporaryDirectory(prefix="nic-bench-") as tmp:
        cmd = [sys.executable, "-m", "nic_lib.train", "--model", "mbt2018", "--N", str(N),
               "--M", str(M), "--crop", str(crop), "--batch-size", str(batch),
               "--max-steps", str(warmup + steps), "--log-every", "1", "--eval-every", "0",
               "--ckpt-every", "0", "--no-progress", "--precision", precision, "--out-dir", tmp]
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        with open(Path(tmp) / "log.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) > warmup]
    seconds = sum(batch / float(r["images_per_s"]) for r in rows)
    return len(rows) * batch / seconds


def _plain(N, M, crop, batch, warmup, steps, workers) -> float:
    """Run :func:`plain_worker` in a fresh interpreter and return its images/s."""
    cmd = [sys.executable, __file__, "--worker", json.dumps([N, M, crop, batch, warmup, steps,
                                                            workers])]
    out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the grid, write the CSV, print the ratios.

    Args:
        argv: command-line flags (see ``--help``).

    Returns:
        The rows written.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--widths", nargs="+", default=list(DEFAULT_WIDTHS), help="N,M pairs")
    p.add_argument("--crops", nargs="+", type=int, default=list(DEFAULT_CROPS))
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--repeats", type=int, default=1, help="alternating repeats of each pair")
    p.add_argument("--plain-workers", type=int, default=DEFAULT_PLAIN_WORKERS)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--variants", nargs="+", choices=ALL_VARIANTS, default=list(VARIANTS),
                   help="loops to time (default: plain ours)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:  # inside the fresh interpreter of one plain measurement
        print(plain_worker(*json.loads(args.worker)))
        return []

    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for widths in args.widths:
        N, M = (int(v) for v in widths.split(","))
        for crop in args.crops:
            for repeat in range(args.repeats):
                order = args.variants if repeat % 2 == 0 else args.variants[::-1]
                for variant in order:
                    load = os.getloadavg()[0]
                    if variant == "plain":
                        ips = _plain(N, M, crop, args.batch, args.warmup, args.steps,
                                     args.plain_workers)
                    else:
                        ips = ours(N, M, crop, args.batch, args.warmup, args.steps,
                                   "bf16" if variant == "ours-bf16" else "fp32")
                    rows.append({"variant": variant, "N": N, "M": M, "crop": crop,
                                 "batch": args.batch, "repeat": repeat, "images_per_s": ips,
                                 "steps": args.steps, "load_avg_1min": load})
                    print(f"{variant:9s} N={N:3d} M={M:3d} crop={crop:3d}: {ips:7.2f} img/s "
                          f"(load {load:.2f})", flush=True)
                    _write(rows, args.out)
    base = args.variants[0]
    print(f"\nagainst {base} (geometric mean over repeats), table: {args.out}")
    for widths in args.widths:
        N, M = (int(v) for v in widths.split(","))
        for crop in args.crops:
            ips = {v: _gmean([r["images_per_s"] for r in rows
                              if (r["variant"], r["N"], r["M"], r["crop"]) == (v, N, M, crop)])
                   for v in args.variants}
            ratios = ", ".join(f"{v} {ips[v] / ips[base]:.2f}x" for v in args.variants[1:])
            print(f"  N={N:3d} M={M:3d} crop={crop:3d}: {ratios}")
    return rows


def _gmean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def _write(rows: list[dict], path: Path) -> None:
    """Write the table atomically (temporary file + rename)."""
    with fileio.atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()}
                         for r in rows)


if __name__ == "__main__":
    main()
