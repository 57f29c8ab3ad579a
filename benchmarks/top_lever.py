"""The top-levels lever (issue 25): a run of n96's top levels alone against n96 itself.

``n96-top`` (``scripts/train_cpu_profile.py --only n96-top``) is the main line at step
26,500 cut to q6–q8 and trained on with the main line's own schedule, so at every step
both runs evaluated (EMA weights, the same four Kodak 256² crops) its points can be set
against the main line's 8-level curve of that step: the PSNR gap at equal bpp
(:func:`nic_lib.training_curves.gap_to_run`; beyond the main line's top rate, the
difference to its nearest level and the bpp ratio instead). Positive: the top levels gain
from transforms of their own.

    python benchmarks/top_lever.py                      # the runs in ~/nic-runs/cpu-profile
    python benchmarks/top_lever.py --control RUN_OR_EVAL_CSV --top RUN_OR_EVAL_CSV

Prints the table and writes it to ``build/benchmarks/top_lever.csv``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from nic_lib import fileio, training_curves

RUNS = Path(os.environ.get("NIC_RUNS_DIR", "~/nic-runs")).expanduser() / "cpu-profile"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "build" / "benchmarks" / "top_lever.csv"


def _evals(source: Path) -> pd.DataFrame:
    evals = training_curves.read_evaluations(source)
    if evals.empty:
        raise SystemExit(f"no evaluations at {source}: pass a run folder or its eval.csv "
                         "(scripts/train_cpu_profile.py --only n96-top makes the run)")
    return evals


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--control", type=Path, default=RUNS / "n96", help="the main line's run (or eval.csv)")
    p.add_argument("--top", type=Path, default=RUNS / "n96-top", help="the top-levels run (or eval.csv)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    table = training_curves.gap_to_run(_evals(args.top.expanduser()), _evals(args.control.expanduser()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_open(args.out, "w", suffix=".tmp") as f:
        table.to_csv(f, index=False)
    print(table.round(3).to_string(index=False))
    return table


if __name__ == "__main__":
    main()
