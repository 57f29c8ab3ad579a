"""PQ-MIM stage A's training step in fp32 and in bf16 (``--precision``), side by side in one process.

Stage A (:mod:`nic_lib.training.pqmim.stage_a`) trains g_a, g_s and the product quantizer.
Under ``--precision bf16`` g_a and g_s compute in bfloat16 and the quantizer's distances,
codebooks and losses stay float32 (:func:`nic_lib.training.pqmim.stage_a.train_step`).
This script times that step (forward, L_A, backward, clip, Adam) of each rate point of
``scripts/train_pqmim_cpu.py`` (``--rate-points``, named ``M<M>-K<K>``) at the shipped
recipe's widths and crops (``checkpoints/pqmim/M4-K256.config.json``: N = 64, D = 32,
128² crops, batch 8), on training crops, one thread. A rate point with a shipped
checkpoint starts from its weights and codebooks (the quantizer then restarts as few
codes as mid-run); one without (the VQ pair) from the seeded initialisation. Two copies of
the model and optimizer, one per precision, step in turn (the order swapped every round),
so load from other work on a shared machine hits both alike; it prints the median s/step
of each, their ratio and the 1-minute load average.

    OMP_NUM_THREADS=1 nice python benchmarks/pqmim_precision.py           # ~25 s
    OMP_NUM_THREADS=1 nice python benchmarks/pqmim_precision.py --rounds 20 \
        --rate-points M4-K256 M1-K256 M2-K16                              # ~1.5 minutes

Writes ``build/benchmarks/pqmim_precision.csv``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from nic_lib import fileio
from nic_lib.models import pqmim
from nic_lib.training import PRECISIONS, CropSampler, load_pool, training_files
from nic_lib.training.pqmim.config import step_generator, to_input
from nic_lib.training.pqmim.stage_a import QUANTIZER_STREAM, train_step
from nic_lib.training.precision import native_bf16

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "checkpoints" / "pqmim"
#: The shipped run whose configuration (widths, crops, rate, clip) every rate point takes:
#: scripts/train_pqmim_cpu.py trains them all with the same flags but M and K.
RECIPE = SHIPPED / "M4-K256.config.json"
OUT = REPO / "build" / "benchmarks" / "pqmim_precision.csv"
#: Untimed steps per precision first: oneDNN picks its kernels, the allocator warms up.
WARMUP_STEPS = 2


def rate_point_model(name: str, config: dict) -> pqmim.PQMIM:
    """The model of rate point ``name`` (``"M4-K256"``): the shipped checkpoint's weights
    when there is one, else the recipe's widths with M and K from the name, seeded."""
    if (SHIPPED / f"{name}.pt").is_file():
        return pqmim.load_pqmim(SHIPPED / f"{name}.pt")[0]
    try:
        M, K = (int(part[1:]) for part in name.split("-"))
    except ValueError:
        raise ValueError(f"rate point {name!r}: name it M<M>-K<K>, e.g. M1-K256") from None
    torch.manual_seed(0)
    return pqmim.PQMIM(config["N"], config["latent_dim"], M, K, config["width"],
                       config["layers"], config["heads"])


def step_times(name: str, rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per stage-A step of a rate point in each precision, the two alternating.

    Args:
        name: the rate point (:func:`rate_point_model`).
        rounds: timed steps per precision.
        seed: the crops' seed (:class:`~nic_lib.training.CropSampler`).

    Returns:
        ``{"fp32": [s, ...], "bf16": [s, ...]}``.

    Raises:
        FileNotFoundError: no shipped recipe (:data:`RECIPE`). ValueError: a name that is
            not ``M<M>-K<K>``.
    """
    config = json.loads(RECIPE.read_text())["config"]
    model = rate_point_model(name, config)
    runs = {}
    for p in PRECISIONS:  # identical starts: the same weights, codebooks and fresh Adam
        m = copy.deepcopy(model).train()
        # stage A's parameters: the autoencoder's (the MIM model trains in stage B)
        params = [q for n, q in m.named_parameters() if not n.startswith("entropy_model.")]
        runs[p] = (m, torch.optim.Adam(params, lr=config["lr_a"]), params)
    sampler = CropSampler(load_pool(training_files(config["data"])), config["crop"],
                          config["batch_size"], seed)
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}

    def step(precision: str, k: int) -> float:
        m, opt, params = runs[precision]
        x = to_input(sampler.batch(k))
        t = time.perf_counter()
        train_step(m, opt, params, x, step_generator(seed, QUANTIZER_STREAM, k),
                   config["clip_grad_norm"], precision)
        return time.perf_counter() - t

    for k in range(WARMUP_STEPS):
        for p in PRECISIONS:
            step(p, k)
    for i in range(rounds):
        for p in (PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]):
            times[p].append(step(p, WARMUP_STEPS + i))
    return times


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=12, help="timed steps per precision")
    p.add_argument("--rate-points", nargs="+", default=["M4-K256"],
                   help="M<M>-K<K> names (default M4-K256, the shipped middle point)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not native_bf16():
        print("this CPU has no native bfloat16: bf16 is emulated here (the training "
              "computes fp32 instead)", flush=True)
    rows = []
    for name in args.rate_points:
        load = os.getloadavg()[0]
        times = step_times(name, args.rounds)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"rate_point": name, "threads": args.threads, "rounds": args.rounds,
                     "fp32_s_per_step": med["fp32"], "bf16_s_per_step": med["bf16"],
                     "speedup": med["fp32"] / med["bf16"], "native_bf16": native_bf16(),
                     "load_1min_before": load, "load_1min_after": os.getloadavg()[0]})
        print(f"PQ-MIM {name} stage A ({args.rounds} rounds, {args.threads} thread): "
              f"fp32 {med['fp32']:.3f} s/step, bf16 {med['bf16']:.3f} s/step, "
              f"{med['fp32'] / med['bf16']:.2f}x (load {load:.2f} -> "
              f"{rows[-1]['load_1min_after']:.2f})", flush=True)
    table = pd.DataFrame(rows)
    fileio.atomic_write_text(OUT, table.to_csv(index=False))
    return table


if __name__ == "__main__":
    main()
