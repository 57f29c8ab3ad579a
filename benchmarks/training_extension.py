"""Time to quality past the shipped profile: BD-rate against JPEG 2000 vs training hours.

History (issue 8, the M = 96 cpu profile). Its inputs, ``checkpoints/mbt2018/vr.pt`` and the
files it exported, left the tree when the N = 96 generation replaced them (2026-12-07);
restore them to run it again: ``git checkout $(git log -1 --format=%h --diff-filter=D --
checkpoints/mbt2018/vr.pt)~1 -- checkpoints/mbt2018 checkpoints/stages``. Notebook 06 shows
its committed table. The N = 96 main line's time to quality is notebook 01's figure 5.

Issue 8 asks for JPEG 2000 parity (BD-rate <= 0 on Kodak, 0.1-1.0 bpp) within 5 hours of
training on this machine. The shipped variable-rate ``mbt2018`` (``checkpoints/mbt2018/
vr.pt``) had about 1.3 hours (three stages, two threads; their logs are in
``checkpoints/stages/`` and ``checkpoints/mbt2018/``). This benchmark continues it for
MINUTES more and measures, at every evaluation, the BD-rate of all six rate levels against
JPEG 2000 (configured as in notebook 00) on all 24 Kodak images, whole, bpp from the
likelihoods, for the trained weights and for their exponential moving average (``--ema``,
one of issue 8's levers, measured in the same run)::

    python benchmarks/training_extension.py --minutes 120 --threads 1     # trains, then reports
    python benchmarks/training_extension.py --minutes 120 --report-only   # table from the run so far
    python benchmarks/training_extension.py --minutes 120 --export checkpoints/mbt2018/vr-extended.pt
    python benchmarks/training_extension.py --init-from checkpoints/mbt2018/vr-extended.pt \
        --minutes 100 --lr 2e-4 --export checkpoints/mbt2018/vr-5h.pt

``--export`` ships the run's final model (the EMA weights) as a cpu-profile checkpoint
(float16 convolutions, as ``scripts/train_cpu_profile.py`` ships) with its config, log and
evaluations beside it: the commands that made ``checkpoints/mbt2018/vr-extended.pt`` (2 h
on one core past ``vr.pt``) and ``vr-5h.pt`` (100 min more past ``vr-extended.pt``: 5 h
in all).

A continuation is one ``python -m nic_lib.train`` run (:data:`TRAIN_FLAGS`): Adam at
``--lr`` (default 5e-4, the shipped VR stage's peak) with a 100-step warm-up and a cosine
decay to 5% over the time budget, 128x128 crops, batch 8, the six λ of the quality table
(gain units), EMA 0.999. It resumes from its ``ckpt.pt`` when interrupted
(``$NIC_RUNS_DIR/extend/mbt2018-<init>-<MINUTES>min``, default ``runs/``, git-ignored;
``--run-dir`` to keep runs of other learning rates apart).

Chains. ``--init-from`` may name a checkpoint this script exported: its lineage is read
from the ``.config.json`` shipped beside it (``init_from``), back to ``vr.pt``, and the
table holds every link's evaluations (from the ``.eval.csv`` shipped beside each) before
the run's own, each tagged with its ``segment``.

Hours. ``total_h`` = the shipped model's training (the last ``wall_s`` of each stage's
log, summed: :func:`shipped_hours`) + the hours of every earlier link (its log's last
``wall_s``) + the link's ``wall_s`` at the evaluation. The shipped stages ran on two
threads, each continuation on its own thread count (from its config; ``--threads``, one by
default, so the other core stays usable); ``core_h`` counts thread-hours.

Outputs (``build/results/benchmarks/``, atomic): ``training_extension.csv`` (one row per
evaluation x weights x rate level, with ``bd_rate_vs_jpeg2000_pct`` repeated on each
level's row), ``training_extension.md`` (the summary, also on stdout); notebook 01 draws
the table when it exists. The starting checkpoint's own evaluation (step 0, the same
images and code) is cached beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from nic_lib import cache, fileio, training_curves
from nic_lib.training_curves import EVAL_CROP, EVAL_IMAGES

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "build" / "results" / "benchmarks" / "training_extension.csv"
#: JPEG 2000's sweep on the evaluation images: the cache benchmarks/learning_curves.py's
#: default run fills (the same images, codec and rates).
JPEG2000_CACHE = REPO / "build" / "results" / "benchmarks" / "learning_curves.jpeg2000.csv"
DEFAULT_INIT = REPO / "checkpoints" / "mbt2018" / "vr.pt"
#: The logs of the shipped model's stages, in training order (their wall_s add up).
SHIPPED_LOGS = (REPO / "checkpoints" / "stages" / "base.log.csv",
                REPO / "checkpoints" / "stages" / "mbt2018-vr.log.csv",
                REPO / "checkpoints" / "mbt2018" / "vr.log.csv")
#: Threads the shipped stages trained with (scripts/train_cpu_profile.py: all cores).
SHIPPED_THREADS = 2
DEFAULT_MINUTES = 120.0
QUALITIES = ("1", "2", "3", "4", "5", "6")
#: The continuation's flags of ``python -m nic_lib.train`` (without budget, threads, paths).
TRAIN_FLAGS = ["--model", "mbt2018", "--qualities", *QUALITIES, "--N", "64", "--M", "96",
               "--crop", "128", "--batch-size", "8", "--no-progress",
               "--schedule-clock", "time", "--lr", "5e-4", "--warmup-steps", "100",
               "--min-lr-ratio", "0.05", "--max-steps", "1000000", "--ema", "0.999",
               "--eval-images", str(EVAL_IMAGES), "--eval-crop", str(EVAL_CROP)]
#: Peak learning rate of a continuation (``--lr``): the shipped VR stage's.
DEFAULT_LR = 5e-4


def train_flags(lr: float = DEFAULT_LR) -> list[str]:
    """:data:`TRAIN_FLAGS` with the peak learning rate ``lr``."""
    flags = list(TRAIN_FLAGS)
    flags[flags.index("--lr") + 1] = f"{lr:g}"
    return flags


#: Evaluate every this many steps (~20 minutes on one thread here, ~1.5 min per evaluation).
EVAL_EVERY = 4000
#: Joins weights and link names in training_curves' ``recipe`` column.
SEP = "|"
#: Columns of the output table.
COLUMNS = ("weights", "segment", "total_h", "core_h", "run_h", "step", "quality", "lmbda", "images",
           "bpp", "psnr", "jpeg2000_psnr", "gap_to_jpeg2000_db", "bd_rate_vs_jpeg2000_pct")


def shipped_hours(logs=SHIPPED_LOGS) -> float:
    """Training hours of the shipped model: the last ``wall_s`` of each stage log, summed.

    Raises:
        FileNotFoundError: a log is missing (the name says which).
    """
    total = 0.0
    for path in logs:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no training log at {path}; the shipped checkpoints "
                                    "come with their logs (git checkout checkpoints/)")
        total += float(pd.read_csv(path)["wall_s"].max())
    return total / 3600.0


def run_evaluations(run_dir: Path) -> pd.DataFrame:
    """A run's eval.csv (``run_dir`` a run folder, or the eval CSV itself): the rows of
    :func:`nic_lib.training_curves.read_evaluations`, with their hours named ``run_h``."""
    return training_curves.read_evaluations(run_dir).rename(columns={"hours": "run_h"})


def lineage(init: Path, root: Path = DEFAULT_INIT) -> list[dict]:
    """The continuations a checkpoint descends from, oldest first, back to ``root``.

    Each checkpoint this script exported carries ``<stem>.config.json`` (its run's config:
    ``init_from``, ``resolved.threads``), ``<stem>.log.csv`` and ``<stem>.eval.csv``.

    Returns:
        ``[{"segment", "evals" (path), "hours", "threads"}, ...]``: empty for ``root``.

    Raises:
        FileNotFoundError: a link has no config or log beside it (its hours are unknown).
        ValueError: the chain does not lead back to ``root``.
    """
    chain, seen, path = [], set(), Path(init)
    while path.resolve() != Path(root).resolve():
        if path.resolve() in seen:
            raise ValueError(f"{init}: its lineage loops at {path}")
        seen.add(path.resolve())
        config = path.parent / f"{path.stem}.config.json"
        log = path.parent / f"{path.stem}.log.csv"
        if not (config.is_file() and log.is_file()):
            raise FileNotFoundError(
                f"{path} has no {config.name} and {log.name} beside it, so its training hours "
                f"are unknown: continue {root} or a checkpoint this script exported (--export)")
        record = json.loads(config.read_text())
        parent = record["config"].get("init_from")
        if not parent:
            raise ValueError(f"{config} names no init_from: {path} does not descend from {root}")
        chain.insert(0, {"segment": path.stem,
                         "evals": path.parent / f"{path.stem}.eval.csv",
                         "hours": shipped_hours([log]),
                         "threads": int(record.get("resolved", {}).get("threads") or 1)})
        path = Path(parent) if Path(parent).is_absolute() else REPO / parent
    return chain


def start_evaluation(init: Path, cache_path: Path) -> pd.DataFrame:
    """The starting checkpoint evaluated as train.py evaluates (step 0, cached by digest)."""
    import torch

    from nic_lib import train
    from nic_lib.models import checkpoints, variable_rate

    key = {"checkpoint": checkpoints.checkpoint_digest(init), "images": EVAL_IMAGES, "crop": EVAL_CROP}
    cfg = train.TrainConfig(eval_images=EVAL_IMAGES, eval_crop=EVAL_CROP)
    images = train.load_eval_images(cfg)

    def compute() -> pd.DataFrame:
        model, _ = checkpoints.load_checkpoint(init)
        rows = []
        for level, lmbda in enumerate(variable_rate.rate_levels(model)):
            variable_rate.set_rate_level(model, level)
            r = train.evaluate(model, images, lmbda, "mse", torch.device("cpu"))
            rows.append({"weights": "start", "run_h": 0.0, "step": 0, "quality": level + 1,
                         "lmbda": lmbda, "images": r["images"], "bpp": r["bpp"],
                         "psnr": r["psnr"]})
        return pd.DataFrame(rows)

    return cache.cached_table(cache_path, key, compute, data=images, models=init)


def extension_table(segments: list[dict], start: pd.DataFrame, curve: pd.DataFrame,
                    shipped_h: float) -> pd.DataFrame:
    """Evaluations of a chain of continuations with hours and their distance to JPEG 2000.

    Args:
        segments: the links, oldest first, each ``{"segment" (name), "evals"
            (:func:`run_evaluations`), "hours" (its duration: where the next link starts),
            "threads"}``; the last one's hours are not used.
        start: :func:`start_evaluation` of the root (its rows count as evaluations at
            hour 0 of the first link for both weights: the EMA starts as a copy).
        curve: JPEG 2000's RD curve (``rd.rd_table``: bpp, psnr_rgb).
        shipped_h: :func:`shipped_hours` (the root's training).

    Returns:
        Columns :data:`COLUMNS`, sorted by weights, time and λ.
    """
    parts, offsets = [], {}
    offset_h, offset_core = shipped_h, SHIPPED_THREADS * shipped_h
    for i, seg in enumerate(segments):
        evals = seg["evals"].assign(segment=seg["segment"])
        if i == 0:
            for weights in ("model", "ema"):
                if (evals["weights"] == weights).any():
                    evals = pd.concat([evals, start.assign(weights=weights,
                                                           segment=seg["segment"])])
        parts.append(evals)
        offsets[seg["segment"]] = (offset_h, offset_core, seg["threads"])
        offset_h += seg["hours"]
        offset_core += seg["threads"] * seg["hours"]
    table = pd.concat(parts, ignore_index=True)
    # training_curves computes one BD-rate per (recipe, step): one "recipe" per weights
    # and link, as the step count restarts in each link
    table["recipe"] = table["weights"] + SEP + table["segment"]
    table["wall_h"] = table["run_h"]
    table = training_curves.add_jpeg2000_columns(table, curve)
    table[["weights", "segment"]] = table["recipe"].str.split(SEP, n=1, expand=True)
    table["run_h"] = table["wall_h"]
    link = table["segment"].map(offsets)
    table["total_h"] = [o[0] for o in link] + table["run_h"]
    table["core_h"] = [o[1] for o in link] + [o[2] for o in link] * table["run_h"]
    table = table.sort_values(["weights", "total_h", "lmbda"], kind="stable")
    return table.reset_index(drop=True)[list(COLUMNS)]


def summary_markdown(table: pd.DataFrame) -> str:
    """One line per evaluation, weights and link: hours, BD-rate vs JPEG 2000, bpp and PSNR
    range; then the verdict on issue 8's target (BD-rate <= 0 within 5 hours)."""
    lines = ["| weights | link | total hours | core-hours | step | BD-rate vs JPEG 2000 | "
             "bpp range | PSNR range (dB) |", "|---|---|---|---|---|---|---|---|"]
    per_eval = table.groupby(["weights", "segment", "step"], sort=False)
    best = None
    for (weights, segment, step), rows in per_eval:
        bd = rows["bd_rate_vs_jpeg2000_pct"].iloc[0]
        lines.append(f"| {weights} | {segment} | {rows['total_h'].iloc[0]:.2f} | {rows['core_h'].iloc[0]:.2f} "
                     f"| {step} | {training_curves.format_or_blank(bd, '+.1f', ' %')} | {rows['bpp'].min():.3f}-"
                     f"{rows['bpp'].max():.3f} | {rows['psnr'].min():.2f}-{rows['psnr'].max():.2f} |")
        if np.isfinite(bd) and (best is None or bd < best[0]):
            best = (bd, weights, rows["total_h"].iloc[0])
    lines.append("")
    if best is None:
        lines.append("- no evaluation with a defined BD-rate against JPEG 2000 yet.")
    else:
        met = best[0] <= 0 and best[2] <= 5
        lines.append(f"- best: {best[0]:+.1f}% BD-rate against JPEG 2000 ({best[1]} weights, "
                     f"{best[2]:.2f} h of training in all); JPEG 2000 parity within 5 h: "
                     f"{'met' if met else 'not met'}.")
    return "\n".join(lines)


def export(run_dir: Path, dest: Path, init: Path = DEFAULT_INIT) -> Path:
    """Ship a finished run's ``final.pt`` to ``dest`` (float16 convolutions) with its
    config, log and eval CSVs beside it (``nic_lib.train.ship_run``).

    Raises:
        FileNotFoundError: the run has no final.pt yet.
    """
    from nic_lib import train

    return train.ship_run(run_dir, dest, [_repo_relative(init),
                                          f"runs/extend/{Path(run_dir).name}"])


def _sibling(out: Path, suffix: str) -> Path:
    """``<out stem><suffix>`` beside the output table (its summary, the start's cache)."""
    return out.with_name(out.stem + suffix)


def _repo_relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (configs stay portable)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Command line: continue the shipped model (resumable), then write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--minutes", type=float, default=DEFAULT_MINUTES,
      help="training budget of the continuation (default: %(default)s)")
    a("--threads", type=int, default=1, help="torch threads of the run (default: %(default)s)")
    a("--lr", type=float, default=DEFAULT_LR, help="peak learning rate of the run "
      "(default: %(default)s)")
    a("--init-from", type=Path, default=DEFAULT_INIT, help="checkpoint to continue "
      "(default: the shipped checkpoints/mbt2018/vr.pt; or one this script exported)")
    a("--run-dir", type=Path, help="run folder (default: $NIC_RUNS_DIR or runs/, then "
      "extend/mbt2018-<init>-<MINUTES>min; give one per --lr to compare rates)")
    a("--out", type=Path, default=DEFAULT_OUT, help="output table (default: %(default)s)")
    a("--report-only", action="store_true", help="train nothing: table from the run so far")
    a("--export", type=Path, help="after the report, ship the run's final model here "
      "(e.g. checkpoints/mbt2018/vr-extended.pt)")
    args = p.parse_args(argv)
    if not args.init_from.is_file():
        raise SystemExit(f"no checkpoint at {args.init_from}; give --init-from")
    if args.run_dir is None:
        from nic_lib import train

        args.run_dir = (train.default_runs_dir() / "extend"
                        / f"mbt2018-{args.init_from.stem}-{args.minutes:g}min")
    chain = lineage(args.init_from)  # fails fast when the hours cannot be known
    shipped_h = shipped_hours()
    # the reference first: a codec problem shows in seconds, not after hours of training
    curve = training_curves.jpeg2000_curve(EVAL_IMAGES, EVAL_CROP, JPEG2000_CACHE)
    start = start_evaluation(DEFAULT_INIT, _sibling(args.out, ".start.csv"))
    if not args.report_only and not (args.run_dir / "final.pt").is_file():
        resume = (args.run_dir / "ckpt.pt").is_file()
        flags = ([*train_flags(args.lr), "--max-minutes", f"{args.minutes:g}", "--eval-every",
                  str(EVAL_EVERY), "--init-from", _repo_relative(args.init_from)]
                 if not resume else ["--resume", str(args.run_dir)])
        flags += ["--threads", str(args.threads), "--out-dir", str(args.run_dir)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
               "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        subprocess.run([sys.executable, "-m", "nic_lib.train", *flags], check=True, env=env)
    evals = run_evaluations(args.run_dir)
    if evals.empty:
        raise SystemExit(f"no evaluations in {args.run_dir} yet; run without --report-only")
    links = [{**link, "evals": run_evaluations(link["evals"])} for link in chain]
    # the run is named as it ships (its checkpoint's stem), or else by its folder
    links.append({"segment": args.export.stem if args.export else args.run_dir.name,
                  "evals": evals, "hours": 0.0,
                  "threads": args.threads})
    table = extension_table(links, start, curve, shipped_h)
    cache.write_table(table, args.out)
    summary = summary_markdown(table)
    fileio.atomic_write_text(_sibling(args.out, ".md"), summary + "\n")
    print(f"\nwrote {args.out} ({len(table)} rows) and its .md; run in {args.run_dir}\n")
    print(summary)
    if args.export:
        dest = export(args.run_dir, args.export, args.init_from)
        print(f"\nshipped {dest} ({dest.stat().st_size / 1e6:.2f} MB) with its logs")
    return table


if __name__ == "__main__":
    main()
