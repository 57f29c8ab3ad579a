"""Fuzz the .nic reader: mutate valid files, decode each, classify what happens.

The command line of :mod:`nic_lib.testing.fuzz` (the mutation kinds, the outcomes and the
budget are documented there). Every mutant must either decode to an image of the size its
header announces or raise a :class:`nic_lib.container.NicError`; ``tests/test_fuzz.py``
runs a few hundred cases of the same generator, this script as many as you ask::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/fuzz_nic.py --cases 5000
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import torch

from nic_lib.testing.fuzz import MODELS, fuzz


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer and print outcome counts per model and mutation kind.

    Returns:
        0 if every case decoded or raised a NicError, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="mutants per model")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="model keys")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    all_failures = []
    for name in args.models:
        start = time.perf_counter()
        outcomes, failures = fuzz(name, args.cases, args.seed)
        all_failures += failures
        print(f"## {name}: {args.cases} cases in {time.perf_counter() - start:.1f} s")
        by_outcome = collections.Counter()
        for (kind, outcome), n in sorted(outcomes.items()):
            print(f"  {kind:16s} {outcome:24s} {n}")
            by_outcome[outcome] += n
        print("  total: " + ", ".join(f"{o} {n}" for o, n in by_outcome.most_common()))
    for line in all_failures:
        print("FAILURE", line)
    return 1 if all_failures else 0


if __name__ == "__main__":
    sys.exit(main())
