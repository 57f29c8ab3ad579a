"""Learning curves: Kodak quality bought by each hour of CPU training, per recipe (issue 8).

Every learned-codec number of this project comes from models trained on this machine's
CPU, so the figure that matters is quality against training time. This benchmark trains
the same model family at the same rate with a named baseline recipe and with the
project's recipe, one run each, **sequentially** on the same machine (in parallel they
would compete for the cores), and records Kodak PSNR and bpp at checkpoints in
wall-clock time, beside JPEG 2000 measured on the same images::

    python benchmarks/learning_curves.py --minutes 60                      # ~2 h 5 min
    python benchmarks/learning_curves.py --minutes 300 --recipes baseline project project-vr
    python benchmarks/learning_curves.py --minutes 60 --report-only        # table from the runs so far

The recipes may also run side by side, one core each (how the README's numbers were
measured): one process per recipe with ``--threads 1 --recipes NAME --out <own table>``
(the runs land in the same folders), then ``--report-only`` for the joint table.

Recipes (every flag is one of ``python -m nic_lib.train``; the model is CompressAI's
``JointAutoregressiveHierarchicalPriors`` as registered under ``mbt2018``):

============  ==============================================================================
recipe        flags
============  ==============================================================================
baseline      ``--model mbt2018 --lmbda 0.013 --crop 256 --batch-size 8 --lr 1e-4``
              ``--aux-lr 1e-3 --lr-schedule constant --warmup-steps 0 --clip-grad-norm 1.0``
project       ``--model mbt2018 --lmbda 0.013 --crop 128 --batch-size 8 --lr 1e-3``
              ``--aux-lr 1e-3 --lr-schedule cosine --warmup-steps 200 --min-lr-ratio 0.05``
              ``--clip-grad-norm 1.0 --schedule-clock time``
project-vr    ``--model mbt2018 --qualities 1 2 3 4 5 6 --crop 128 --batch-size 8 --lr 1e-3``
              ``--aux-lr 1e-3 --lr-schedule cosine --warmup-steps 200 --min-lr-ratio 0.05``
              ``--clip-grad-norm 1.0 --schedule-clock time``
project-c256  ``--model mbt2018 --lmbda 0.013 --crop 256 --batch-size 2 --lr 1e-3``
              ``--aux-lr 1e-3 --lr-schedule cosine --warmup-steps 200 --min-lr-ratio 0.05``
              ``--clip-grad-norm 1.0 --schedule-clock time``
project-hilr  ``--model mbt2018 --lmbda 0.013 --crop 128 --batch-size 8 --lr 2e-3``
              ``--aux-lr 1e-3 --lr-schedule cosine --warmup-steps 200 --min-lr-ratio 0.05``
              ``--clip-grad-norm 1.0 --schedule-clock time``
project-w96   ``--model mbt2018 --lmbda 0.013 --crop 128 --batch-size 8 --lr 1e-3``
              ``--aux-lr 1e-3 --lr-schedule cosine --warmup-steps 200 --min-lr-ratio 0.05``
              ``--clip-grad-norm 1.0 --schedule-clock time``
(all)         ``--N 64 --M 96 --seed 0 --max-steps 100000000 --max-minutes MINUTES``
              ``--eval-every E --eval-images 24 --eval-crop 0 --no-progress --out-dir RUN``
============  ==============================================================================

- ``baseline`` is CompressAI's ``examples/train.py`` (Adam 1e-4, constant; aux Adam 1e-3;
  gradient clipping 1.0; 256x256 crops, batch 8; its ReduceLROnPlateau never fires within
  hours) on the project's training pool, fixed rate only.
- ``project`` is stage 1 of ``scripts/train_cpu_profile.py`` with its cosine horizon set
  by the budget instead of 10,000 steps: ``--schedule-clock time`` runs the schedule on
  elapsed / ``--max-minutes`` (``--max-steps`` is out of reach), so the decay ends at
  ``MINUTES``.
- ``project-c256`` and ``project-hilr`` (optional) are ``project`` with one of issue 8's
  levers changed: 256x256 crops in batches of 2 (the same pixels per step: crop size vs
  batch) and a peak learning rate of 2e-3 (twice ``project``'s).
- ``project-w96`` (optional) is ``project`` at larger widths, ``--N 96 --M 144`` instead of
  the cpu profile's 64/96 (:data:`RECIPE_WIDTHS`; issue 8's widths lever): about twice the
  multiply-adds per pixel, so about half the steps in the same time.
- ``project-vr`` (optional) is one variable-rate model (gain units) trained from scratch
  with the same settings, λ = 0.0018 ... 0.0483; the shipped profile instead warm-starts
  it from ``project`` (stages 1-2 of the script), which a single run cannot show.

Evaluation times. ``nic_lib.train`` evaluates every E steps, so E is picked per recipe
from a short measured throughput (``--probe-steps`` steps of the recipe itself, no
evaluation) to land near every ``--eval-every-minutes``; the run also evaluates at its
end. The table reports each curve **at its own evaluation points**, with the time
``wall_s`` that train.py wrote into eval.csv (the seconds since the run started,
evaluations included: a full-Kodak evaluation of this model takes ~3 s here, ~20 s for
six rate levels). Two recipes are compared at equal times by interpolating each one's
curve linearly in time, at every evaluation time inside both runs' range.

Quality. Each evaluation is train.py's: all 24 Kodak images, whole (``--eval-crop 0``),
bpp from the likelihoods, PSNR-RGB averaged over images. JPEG 2000 is
``nic_lib.codecs`` ``jpeg2000`` (configured as in notebook 00), encoded on the same images,
one RD curve from the mean bpp and PSNR of each setting. Per evaluation row,
``nic_lib.training_curves`` adds ``gap_to_jpeg2000_db`` (dB ahead of JPEG 2000 at the same
bpp), ``rate_vs_jpeg2000_pct`` (bits against JPEG 2000 at the same PSNR) and, for
variable-rate evaluations, ``bd_rate_vs_jpeg2000_pct`` (its docstring defines each).

The issue's target, "project ahead of the baseline at every equal training time", is
checked on ``gap_to_jpeg2000_db`` at the baseline's λ (for ``project-vr``: its λ = 0.013
level, quality 4), which puts two fixed-rate points at different rates on one scale.

Resuming: runs live in ``$NIC_RUNS_DIR/learning-curves/<MINUTES>min/<recipe>/`` (default
``runs/``, git-ignored; ``--runs-dir`` moves them). A recipe whose folder holds
``final.pt`` is not trained again; one holding ``ckpt.pt`` continues with
``--resume``. Each folder keeps the flags it was started with (``learning_curves.json``):
asking for other flags in the same folder is refused, not silently mixed.

Outputs: the tidy table (:data:`COLUMNS`, one row per recipe x evaluation x rate level)
at ``--out``, written atomically; beside it, with the same stem, the equal-time comparison
with the baseline (``.comparison.csv``, :func:`comparison_table`), the Markdown summary
(``.md``, also on stdout) and the per-image JPEG 2000 sweep (``.jpeg2000.csv`` + key).
Notebook 01 draws the table and the comparison from the default ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from nic_lib import cache, fileio, training_curves
from nic_lib.training_curves import EVAL_CROP, EVAL_IMAGES

REPO = Path(__file__).resolve().parent.parent
#: Output table (build/ is git-ignored).
DEFAULT_OUT = REPO / "build" / "results" / "benchmarks" / "learning_curves.csv"
#: One hour per recipe: long enough for the curves to separate, short enough for a session.
DEFAULT_MINUTES = 60.0
#: Six points on an hour's curve; a full-Kodak evaluation costs ~3 s, so this is <1 %.
DEFAULT_EVAL_EVERY_MINUTES = 10.0
#: The issue's comparison; project-vr is opt-in (one more run of MINUTES).
DEFAULT_RECIPES = ("baseline", "project")
#: The recipe every other one is compared against.
BASELINE = "baseline"
#: Steps of the throughput probe; the first LOG_EVERY are discarded (oneDNN picks kernels).
DEFAULT_PROBE_STEPS = 40
#: log.csv interval of the probe (train.py's default): rows at 10, 20, 30, 40.
PROBE_LOG_EVERY = 10
#: The issue's rate: λ = 0.013 (quality 4 of the MSE table), about 0.5 bpp on Kodak.
LMBDA = 0.013
#: The cpu profile's widths when these recipes were compared (N = 64, M = 96; now
#: nic_lib.models.registry.CPU_PROFILE_WIDTHS is larger).
WIDTHS = (64, 96)
#: --max-steps out of reach: the budget (--max-minutes) ends every run.
MAX_STEPS = 100_000_000
#: Fixed seed: one run per recipe, the same initial weights for all of them.
SEED = 0
#: Folder of the runs under the runs directory, then one per budget (the project recipe's
#: schedule depends on it).
RUNS_SUBDIR = "learning-curves"
#: Flags file of each run folder (the command it was started with).
FLAGS_FILE = "learning_curves.json"

_PROJECT = ["--crop", "128", "--batch-size", "8", "--lr", "1e-3", "--aux-lr", "1e-3",
            "--lr-schedule", "cosine", "--warmup-steps", "200", "--min-lr-ratio", "0.05",
            "--clip-grad-norm", "1.0", "--schedule-clock", "time"]
#: recipe -> its own flags of ``python -m nic_lib.train`` (the module docstring's table).
RECIPES: dict[str, list[str]] = {
    "baseline": ["--model", "mbt2018", "--lmbda", str(LMBDA), "--crop", "256", "--batch-size",
                 "8", "--lr", "1e-4", "--aux-lr", "1e-3", "--lr-schedule", "constant",
                 "--warmup-steps", "0", "--clip-grad-norm", "1.0"],
    "project": ["--model", "mbt2018", "--lmbda", str(LMBDA), *_PROJECT],
    "project-vr": ["--model", "mbt2018", "--qualities", "1", "2", "3", "4", "5", "6", *_PROJECT],
    # crop vs batch at the same pixels per step (issue 8's lever): 256x256 crops, batch 2
    "project-c256": ["--model", "mbt2018", "--lmbda", str(LMBDA),
                     *_PROJECT[:_PROJECT.index("--crop")], "--crop", "256", "--batch-size", "2",
                     *_PROJECT[_PROJECT.index("--batch-size") + 2:]],
    # the peak learning rate (issue 8's lever): 2e-3 instead of 1e-3
    "project-hilr": ["--model", "mbt2018", "--lmbda", str(LMBDA),
                     *_PROJECT[:_PROJECT.index("--lr")], "--lr", "2e-3",
                     *_PROJECT[_PROJECT.index("--lr") + 2:]],
    # the widths (issue 8's lever): the project recipe at RECIPE_WIDTHS["project-w96"]
    "project-w96": ["--model", "mbt2018", "--lmbda", str(LMBDA), *_PROJECT],
}

#: Recipes trained at other widths than the cpu profile's (N, M); the rest use ``widths``.
RECIPE_WIDTHS: dict[str, tuple[int, int]] = {"project-w96": (96, 144)}

#: Columns of the output table, one row per recipe x evaluation x rate level.
COLUMNS = training_curves.COLUMNS
#: Columns of the equal-time comparison.
COMPARISON_COLUMNS = ("wall_h", "recipe_gap_db", "baseline_gap_db", "margin_db", "ahead")


# ---------------------------------------------------------------------------------------
# Pure functions: equal-time comparison, evaluation interval, summary (the distance of each
# evaluation to JPEG 2000 is nic_lib.training_curves').


def _gap_curve(table: pd.DataFrame, recipe: str, lmbda: float) -> pd.DataFrame:
    rows = table[(table["recipe"] == recipe) & np.isclose(table["lmbda"], lmbda)]
    rows = rows.dropna(subset=["gap_to_jpeg2000_db"])
    return rows.groupby("wall_h", as_index=False)["gap_to_jpeg2000_db"].mean()


def compare_at_equal_times(table: pd.DataFrame, recipe: str, baseline: str = BASELINE,
                           lmbda: float = LMBDA) -> pd.DataFrame:
    """A recipe's gap to JPEG 2000 against the baseline's, at equal training times.

    Each curve (gap_to_jpeg2000_db at ``lmbda`` against wall_h) is interpolated linearly in
    time at every evaluation time of either run that lies inside both runs' time range.

    Args:
        table: the output table (:data:`COLUMNS`).
        recipe: the recipe under test.
        baseline: the recipe it is compared with.
        lmbda: the rate level compared (a variable-rate run's level with this λ).

    Returns:
        Columns :data:`COMPARISON_COLUMNS`: wall_h, both gaps (dB), margin = recipe −
        baseline, and ahead = margin >= 0. Empty when the runs share no time interval.
    """
    a, b = _gap_curve(table, recipe, lmbda), _gap_curve(table, baseline, lmbda)
    if a.empty or b.empty:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    low = max(a["wall_h"].min(), b["wall_h"].min())
    high = min(a["wall_h"].max(), b["wall_h"].max())
    times = np.union1d(a["wall_h"], b["wall_h"])
    times = times[(times >= low) & (times <= high)]
    va = np.interp(times, a["wall_h"], a["gap_to_jpeg2000_db"])
    vb = np.interp(times, b["wall_h"], b["gap_to_jpeg2000_db"])
    return pd.DataFrame({"wall_h": times, "recipe_gap_db": va, "baseline_gap_db": vb,
                         "margin_db": va - vb, "ahead": va >= vb})


def ahead_at_every_time(comparison: pd.DataFrame) -> bool:
    """Whether a recipe is at or ahead of the baseline at every compared time.

    Args:
        comparison: the result of :func:`compare_at_equal_times`.

    Returns:
        True when there is at least one common time and the recipe is ahead at each; an
        empty comparison (no common time) is not evidence of being ahead, so False.
    """
    return bool(len(comparison)) and bool(comparison["ahead"].all())


def comparison_table(table: pd.DataFrame, baseline: str = BASELINE,
                     lmbda: float = LMBDA) -> pd.DataFrame:
    """Every other recipe against the baseline at equal times, in one table.

    Args:
        table: the output table (:data:`COLUMNS`).
        baseline: the recipe the others are compared with.
        lmbda: the rate level compared.

    Returns:
        Columns recipe, baseline and :data:`COMPARISON_COLUMNS`
        (:func:`compare_at_equal_times` per recipe); empty without a baseline run.
    """
    columns = ["recipe", "baseline", *COMPARISON_COLUMNS]
    recipes = list(dict.fromkeys(table["recipe"]))
    parts = [compare_at_equal_times(table, r, baseline, lmbda).assign(recipe=r, baseline=baseline)
             for r in recipes if r != baseline and baseline in recipes]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def _sibling(out: Path, suffix: str) -> Path:
    """``<out stem><suffix>`` beside the output table (its comparison, summary, cache)."""
    return out.with_name(out.stem + suffix)


def eval_every_steps(images_per_s: float, batch_size: int, minutes: float) -> int:
    """Evaluation interval in steps that lands near every ``minutes`` of training.

    Args:
        images_per_s: measured training throughput.
        batch_size: images per step.
        minutes: wanted time between evaluations.

    Returns:
        round(60 · minutes · images_per_s / batch_size), at least 1.

    Raises:
        ValueError: a non-positive throughput, batch or interval.
    """
    if not (images_per_s > 0 and batch_size > 0 and minutes > 0):
        raise ValueError(f"throughput {images_per_s} img/s, batch {batch_size}, interval "
                         f"{minutes} min: all must be > 0 (check the probe run's log.csv)")
    # steps = seconds · (images / s) / (images / step)
    return max(1, round(60.0 * minutes * images_per_s / batch_size))


def read_run(run_dir: Path, recipe: str) -> pd.DataFrame:
    """The evaluations of one run, from its eval.csv.

    Args:
        run_dir: the run folder.
        recipe: its recipe name (goes into the ``recipe`` column).

    Returns:
        Columns recipe, wall_h, step, quality, lmbda, images, bpp, psnr; wall_h is the
        time of the evaluation's first row (a variable-rate evaluation writes one row per
        level, seconds apart). A run trained with ``--ema`` also evaluates the average
        weights: those rows are the recipe ``<recipe>-ema``. Empty if the run has no
        eval.csv yet.
    """
    ev = training_curves.read_evaluations(run_dir).rename(columns={"hours": "wall_h"})
    # a run with --ema evaluates its average too: a curve of its own
    ev.insert(0, "recipe", [f"{recipe}-ema" if w == "ema" else recipe for w in ev["weights"]])
    return ev.drop(columns="weights")


def summary_markdown(table: pd.DataFrame, baseline: str = BASELINE,
                     lmbda: float = LMBDA) -> str:
    """The findings as Markdown, generated from the table.

    Args:
        table: the output table.
        baseline: the recipe the others are compared with.
        lmbda: the rate level of the fixed-rate comparison.

    Returns:
        One table per recipe (its curve at ``lmbda``, with BD-rate for variable-rate
        runs) and one line per other recipe saying whether it is ahead of the baseline at
        every equal time.
    """
    lines = []
    for recipe, rows in table.groupby("recipe", sort=False):
        at = rows[np.isclose(rows["lmbda"], lmbda)]
        lines += [f"### {recipe} (λ = {lmbda})", "",
                  ("| hours | step | bpp | PSNR (dB) | gap to JPEG 2000 (dB) | "
                   "rate vs JPEG 2000 | BD-rate vs JPEG 2000 (all levels) |"),
                  "|---|---|---|---|---|---|---|"]
        for r in at.itertuples():
            lines.append(f"| {r.wall_h:.2f} | {r.step} | {r.bpp:.3f} | {r.psnr:.2f} | "
                         f"{training_curves.format_or_blank(r.gap_to_jpeg2000_db, '+.2f')} | "
                         f"{training_curves.format_or_blank(r.rate_vs_jpeg2000_pct, '+.1f', ' %')} | "
                         f"{training_curves.format_or_blank(r.bd_rate_vs_jpeg2000_pct, '+.1f', ' %')} |")
        lines.append("")
    recipes = list(dict.fromkeys(table["recipe"]))
    if baseline in recipes:
        for recipe in (r for r in recipes if r != baseline):
            cmp_ = compare_at_equal_times(table, recipe, baseline, lmbda)
            if cmp_.empty:
                lines.append(f"- {recipe} vs {baseline}: no common training time at which "
                             "both have a gap to JPEG 2000 at this λ (runs not overlapping in "
                             "time, or bpp outside the JPEG 2000 sweep).")
                continue
            worst = cmp_.loc[cmp_["margin_db"].idxmin()]
            verdict = "yes" if ahead_at_every_time(cmp_) else "**no**"
            lines.append(
                f"- {recipe} ahead of {baseline} at every equal time "
                f"({len(cmp_)} times, {cmp_['wall_h'].min():.2f}-{cmp_['wall_h'].max():.2f} h): "
                f"{verdict}; smallest margin {worst['margin_db']:+.2f} dB at "
                f"{worst['wall_h']:.2f} h, final margin {cmp_['margin_db'].iloc[-1]:+.2f} dB.")
    else:
        lines.append(f"- no {baseline} run in the table: nothing to compare against.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Training: one subprocess per recipe, sequential; resumable.


def train_flags(recipe: str, minutes: float, eval_every: int, *, widths=WIDTHS,
                eval_images: int = EVAL_IMAGES, eval_crop: int = EVAL_CROP) -> list[str]:
    """The ``python -m nic_lib.train`` flags of a recipe (without ``--out-dir``).

    Args:
        recipe: a key of :data:`RECIPES`.
        minutes: the training budget (``--max-minutes``).
        eval_every: evaluation interval in steps.
        widths: (N, M), unless the recipe has its own in :data:`RECIPE_WIDTHS`.
        eval_images, eval_crop: the Kodak evaluation set.

    Returns:
        The flags, the recipe's own first (see the module docstring's table).

    Raises:
        KeyError: unknown recipe (the message lists the known ones).
    """
    if recipe not in RECIPES:
        raise KeyError(f"unknown recipe {recipe!r}; choose from {sorted(RECIPES)} "
                       "(benchmarks/learning_curves.py RECIPES)")
    n, m = RECIPE_WIDTHS.get(recipe, widths)
    return [*RECIPES[recipe], "--N", str(n), "--M", str(m), "--seed", str(SEED),
            "--max-steps", str(MAX_STEPS), "--max-minutes", f"{minutes:g}",
            "--eval-every", str(eval_every), "--eval-images", str(eval_images),
            "--eval-crop", str(eval_crop), "--no-progress"]


def _train(flags: list[str], threads: int | None) -> None:
    extra = ["--threads", str(threads)] if threads else []
    subprocess.run([sys.executable, "-m", "nic_lib.train", *flags, *extra], check=True, cwd=REPO)


def probe_throughput(flags: list[str], steps: int, threads: int | None) -> float:
    """Training images/s of a recipe, from a short run of it without evaluation.

    Args:
        flags: the recipe's train flags.
        steps: steps of the probe (the first :data:`PROBE_LOG_EVERY` are not timed).
        threads: ``--threads`` for train.py (None: its default).

    Returns:
        Mean images_per_s of the probe's log.csv rows after the first.
    """
    with tempfile.TemporaryDirectory(prefix="learning-curves-probe-") as tmp:
        _train([*flags, "--max-steps", str(steps), "--max-minutes", "5", "--eval-every", "0",
                "--ckpt-every", "0", "--log-every", str(PROBE_LOG_EVERY), "--out-dir", tmp],
               threads)
        log = pd.read_csv(Path(tmp) / "log.csv")
    timed = log[log["step"] > PROBE_LOG_EVERY]
    return float((timed if len(timed) else log)["images_per_s"].mean())


def _batch_size(flags: list[str]) -> int:
    return int(flags[flags.index("--batch-size") + 1])


def run_recipe(recipe: str, run_dir: Path, minutes: float, eval_every_minutes: float,
               probe_steps: int, threads: int | None, **flag_options) -> None:
    """Train one recipe into ``run_dir`` unless done; resume it if interrupted.

    Args:
        recipe: a key of :data:`RECIPES`.
        run_dir: its run folder.
        minutes: training budget.
        eval_every_minutes: wanted time between evaluations.
        probe_steps: steps of the throughput probe (only for a fresh run).
        threads: torch threads of train.py (None: all cores).
        **flag_options: widths, eval_images, eval_crop (see :func:`train_flags`).

    Raises:
        SystemExit: the folder holds a run started with other flags (the message says
            which and how to fix it).
        subprocess.CalledProcessError: training failed (its output is above).
    """
    flags_path = run_dir / FLAGS_FILE
    wanted = train_flags(recipe, minutes, 0, **flag_options)
    stored = json.loads(flags_path.read_text()) if flags_path.is_file() else None
    if stored is not None:
        if stored["flags"] != train_flags(recipe, minutes, stored["eval_every"], **flag_options):
            raise SystemExit(
                f"{run_dir} was started with other flags:\n  {' '.join(stored['flags'])}\n"
                f"now asked for:\n  {' '.join(wanted)} (with its own --eval-every)\n"
                "delete that folder, or pass --runs-dir to keep both runs")
        if (run_dir / "final.pt").is_file():
            print(f"[{recipe}] done: {run_dir}", flush=True)
            return
        if (run_dir / "ckpt.pt").is_file():
            print(f"[{recipe}] resuming {run_dir}", flush=True)
            _train(["--resume", str(run_dir)], threads)
            return
        eval_every = stored["eval_every"]  # started, no checkpoint yet: start again
    else:
        ips = probe_throughput(wanted, probe_steps, threads)
        eval_every = eval_every_steps(ips, _batch_size(wanted), eval_every_minutes)
        print(f"[{recipe}] probe: {ips:.1f} images/s -> --eval-every {eval_every}", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write_text(flags_path, json.dumps({
            "recipe": recipe, "eval_every": eval_every, "probe_images_per_s": ips,
            "flags": train_flags(recipe, minutes, eval_every, **flag_options)}, indent=1))
    flags = train_flags(recipe, minutes, eval_every, **flag_options)
    print(f"[{recipe}] python -m nic_lib.train {' '.join(flags)} --out-dir {run_dir}", flush=True)
    _train([*flags, "--out-dir", str(run_dir)], threads)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Command line: train the recipes (sequentially), write the table, print the summary.

    Args:
        argv: flags without the program name (default ``sys.argv[1:]``); see ``--help``.

    Returns:
        The output table.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--minutes", type=float, default=DEFAULT_MINUTES,
      help="training budget per recipe (default: %(default)s)")
    a("--recipes", nargs="+", default=list(DEFAULT_RECIPES), choices=sorted(RECIPES),
      help="recipes to run, in this order (default: %(default)s)")
    a("--eval-every-minutes", type=float, default=DEFAULT_EVAL_EVERY_MINUTES,
      help="wanted time between evaluations (default: %(default)s)")
    a("--out", type=Path, default=DEFAULT_OUT, help="output table (default: %(default)s)")
    a("--runs-dir", type=Path, help=f"run folders (default: $NIC_RUNS_DIR or runs/, then "
      f"{RUNS_SUBDIR}/<MINUTES>min)")
    a("--report-only", action="store_true", help="train nothing: table from the runs so far")
    a("--probe-steps", type=int, default=DEFAULT_PROBE_STEPS,
      help="steps of the throughput probe (default: %(default)s)")
    a("--threads", type=int, help="torch threads of the training runs (default: all cores)")
    # for quick checks only: the benchmark's numbers are the defaults'
    a("--N", type=int, default=WIDTHS[0], help="width N (testing; default: %(default)s)")
    a("--M", type=int, default=WIDTHS[1], help="width M (testing; default: %(default)s)")
    a("--eval-images", type=int, default=EVAL_IMAGES, help="Kodak images (default: %(default)s)")
    a("--eval-crop", type=int, default=EVAL_CROP, help="centre crop, 0 = whole (default: %(default)s)")
    args = p.parse_args(argv)

    if args.runs_dir is None:
        from nic_lib import train

        args.runs_dir = train.default_runs_dir() / RUNS_SUBDIR / f"{args.minutes:g}min"
    options = {"widths": (args.N, args.M), "eval_images": args.eval_images,
               "eval_crop": args.eval_crop}
    # the reference first: a codec problem shows in seconds, not after hours of training
    curve = training_curves.jpeg2000_curve(args.eval_images, args.eval_crop,
                                           _sibling(args.out, ".jpeg2000.csv"))
    if not args.report_only:
        for recipe in args.recipes:  # one after the other: parallel runs share the cores
            run_recipe(recipe, args.runs_dir / recipe, args.minutes, args.eval_every_minutes,
                       args.probe_steps, args.threads, **options)
    evals = [read_run(args.runs_dir / r, r) for r in args.recipes]
    evals = [e for e in evals if len(e)]
    if not evals:
        raise SystemExit(f"no eval.csv under {args.runs_dir} for {args.recipes}; run without "
                         "--report-only to train them")
    table = training_curves.add_jpeg2000_columns(pd.concat(evals, ignore_index=True), curve)
    cache.write_table(table, args.out)
    comparison = comparison_table(table)
    cache.write_table(comparison, _sibling(args.out, ".comparison.csv"))
    summary = summary_markdown(table)
    fileio.atomic_write_text(_sibling(args.out, ".md"), summary + "\n")
    print(f"\nwrote {args.out} ({len(table)} rows), its .comparison.csv and .md; "
          f"runs in {args.runs_dir}\n")
    print(summary)
    return table


if __name__ == "__main__":
    main()
