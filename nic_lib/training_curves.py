"""Training runs against JPEG 2000: each evaluation's distance to the classic codec's curve.

``python -m nic_lib.train`` evaluates a run every so many steps (``eval.csv``: one row per
step and rate level, bpp from the likelihoods, PSNR-RGB). The benchmarks that compare
training recipes (``benchmarks/learning_curves.py``) and continue the shipped model
(``benchmarks/training_extension.py``) put those rows beside JPEG 2000 measured on the same
images (configured as in notebook 00), with the same columns:

- ``gap_to_jpeg2000_db`` = PSNR - PSNR_J2K(bpp), PSNR_J2K interpolated linearly in log
  bpp (NaN outside the JPEG 2000 sweep; negative = behind JPEG 2000);
- ``rate_vs_jpeg2000_pct`` = 100 (bpp / bpp_J2K(PSNR) - 1), the one-point analogue of
  BD-rate (negative = fewer bits than JPEG 2000 at that quality);
- ``bd_rate_vs_jpeg2000_pct``: variable-rate evaluations only, the BD-rate of the
  evaluation's levels against the JPEG 2000 curve (:func:`nic_lib.rd.bd_rate`), repeated
  on each level's row.

The interpolation is the rule of :func:`nic_lib.rd.quality_gap_at_rate` (linear in log bpp,
no extrapolation), here in both directions and with errors for a reference that is not a
curve; the reference is first reduced to the points that are on it (:func:`monotone_curve`).

The runs' own records are read here too: :func:`read_evaluations` (a run's ``eval.csv``)
and :func:`shipped_logs` (the log and evaluations shipped beside a checkpoint, which
notebook 01 draws).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from nic_lib import cache, codecs, data, rd, training

#: nic_lib.training's evaluation set as the benchmarks use it: all 24 Kodak images, whole, so the
#: numbers are the real Kodak ones.
EVAL_IMAGES = 24
EVAL_CROP = 0
#: Classic reference codec, configured as in notebook 00 (nic_lib.codecs defaults).
REFERENCE_CODEC = "jpeg2000"
#: Its rates: the default sweep widened to 0.05 and 3 bpp, so the gap stays defined for
#: early, off-target evaluations (JPEG 2000 needs 0.3 s per Kodak image and setting).
REFERENCE_BPPS = (0.05, 0.075, *codecs.JPEG2000_BPPS, 3.0)
#: Columns of :func:`read_evaluations`: one row per step x weights x rate level.
EVALUATION_COLUMNS = ("weights", "hours", "step", "quality", "lmbda", "images", "bpp", "psnr")
#: Columns of :func:`add_jpeg2000_columns`: one row per run ("recipe") x evaluation x rate level.
COLUMNS = ("recipe", "wall_h", "step", "quality", "lmbda", "images", "bpp", "psnr",
           "jpeg2000_psnr", "gap_to_jpeg2000_db", "rate_vs_jpeg2000_pct",
           "bd_rate_vs_jpeg2000_pct")


def _reference(curve_bpp, curve_psnr) -> tuple[np.ndarray, np.ndarray]:
    """The reference curve as (log bpp, PSNR) sorted by rate, or raise."""
    bpp = np.asarray(curve_bpp, dtype=float)
    psnr = np.asarray(curve_psnr, dtype=float)
    if bpp.shape != psnr.shape or bpp.size < 2 or np.any(bpp <= 0):
        raise ValueError(f"reference curve: need >= 2 points with bpp > 0 and one PSNR each, "
                         f"got bpp={bpp.tolist()}, psnr={psnr.tolist()}; pass an RD curve "
                         "from nic_lib.rd.rd_table")
    order = np.argsort(bpp)
    return np.log(bpp[order]), psnr[order]


def psnr_at_bpp(curve_bpp, curve_psnr, bpp) -> np.ndarray:
    """PSNR of a reference RD curve at given rates, interpolated linearly in log bpp.

    Args:
        curve_bpp, curve_psnr: the reference curve's points (any order).
        bpp: rates to read it at (scalar or array).

    Returns:
        PSNR at each rate; NaN outside the curve's rate range (no extrapolation).

    Raises:
        ValueError: fewer than 2 points, mismatched lengths, or a rate <= 0.
    """
    log_bpp, psnr = _reference(curve_bpp, curve_psnr)
    x = np.log(np.asarray(bpp, dtype=float))
    # PSNR(r) = PSNR_i + (PSNR_{i+1} − PSNR_i) · (ln r − ln r_i) / (ln r_{i+1} − ln r_i)
    return np.interp(x, log_bpp, psnr, left=np.nan, right=np.nan)


def bpp_at_psnr(curve_bpp, curve_psnr, psnr) -> np.ndarray:
    """Rate of a reference RD curve at given PSNRs, interpolated linearly in log bpp.

    Args:
        curve_bpp, curve_psnr: the reference curve's points; PSNR must rise with rate.
        psnr: qualities to read it at (scalar or array).

    Returns:
        bpp at each PSNR; NaN outside the curve's PSNR range.

    Raises:
        ValueError: as :func:`psnr_at_bpp`, or PSNR not rising with rate.
    """
    log_bpp, ref_psnr = _reference(curve_bpp, curve_psnr)
    if np.any(np.diff(ref_psnr) <= 0):
        raise ValueError(f"reference curve: PSNR must rise with rate, got {ref_psnr.tolist()}; "
                         "drop the points that spend bits for no quality")
    # ln r(D) = ln r_i + (ln r_{i+1} − ln r_i) · (D − D_i) / (D_{i+1} − D_i)
    return np.exp(np.interp(np.asarray(psnr, dtype=float), ref_psnr, log_bpp,
                            left=np.nan, right=np.nan))


def monotone_curve(curve: pd.DataFrame) -> pd.DataFrame:
    """The points of an RD curve that are on it: each with more bits and more PSNR than
    every point of lower rate.

    A codec's rate control can floor on small images (two settings giving the same
    file) and a point can spend bits for no quality; interpolating through either would
    make PSNR(bpp) ill-defined.

    Args:
        curve: columns bpp and psnr_rgb (e.g. ``rd.rd_table`` of a sweep).

    Returns:
        The kept rows, sorted by bpp, index reset.
    """
    # by rate, the best PSNR first among equal rates: a point is kept when its PSNR beats
    # every point before it (so equal rates keep only their best)
    curve = curve.sort_values(["bpp", "psnr_rgb"], ascending=[True, False], kind="stable")
    best_before = curve["psnr_rgb"].cummax().shift(fill_value=-np.inf)
    return curve[curve["psnr_rgb"] > best_before].reset_index(drop=True)


def bd_rate_per_evaluation(evals: pd.DataFrame, curve_bpp, curve_psnr) -> pd.Series:
    """BD-rate against a reference curve of every evaluation with enough rate levels.

    Args:
        evals: one row per recipe x step x level with columns recipe, step, bpp, psnr.
        curve_bpp, curve_psnr: the reference (JPEG 2000) curve.

    Returns:
        Series aligned with ``evals``: the BD-rate (percent, ``nic_lib.rd.bd_rate``; < 0 =
        fewer bits than the reference) of the levels of the row's (recipe, step); NaN for
        evaluations with fewer than ``rd.MIN_POINTS`` levels (fixed-rate runs), and for
        curves BD-rate is undefined on (quality not rising with rate, no overlap).
    """
    out = pd.Series(np.nan, index=evals.index, dtype=float)
    for _, group in evals.groupby(["recipe", "step"], sort=False):
        if len(group) < rd.MIN_POINTS:
            continue
        try:
            value = rd.bd_rate(curve_bpp, curve_psnr, group["bpp"], group["psnr"])
        except ValueError:  # early in training a curve may not rise with rate yet
            continue
        out[group.index] = value
    return out


def add_jpeg2000_columns(evals: pd.DataFrame, curve: pd.DataFrame) -> pd.DataFrame:
    """The output table: evaluations with their distance to JPEG 2000.

    Args:
        evals: columns recipe, wall_h, step, quality, lmbda, images, bpp, psnr.
        curve: the JPEG 2000 RD curve, columns bpp and psnr_rgb (``rd.rd_table``); only
            its :func:`monotone_curve` points are used.

    Returns:
        ``evals`` with jpeg2000_psnr, gap_to_jpeg2000_db, rate_vs_jpeg2000_pct and
        bd_rate_vs_jpeg2000_pct (see the module docstring), columns :data:`COLUMNS`,
        sorted by recipe, time and λ.
    """
    table = evals.copy()
    curve = monotone_curve(curve)
    ref_bpp, ref_psnr = curve["bpp"].to_numpy(), curve["psnr_rgb"].to_numpy()
    table["jpeg2000_psnr"] = psnr_at_bpp(ref_bpp, ref_psnr, table["bpp"])
    # gap = PSNR − PSNR_J2K(bpp): dB ahead of JPEG 2000 at the same rate
    table["gap_to_jpeg2000_db"] = table["psnr"] - table["jpeg2000_psnr"]
    # rate change = bpp / bpp_J2K(PSNR) − 1: bits saved against JPEG 2000 at the same quality
    table["rate_vs_jpeg2000_pct"] = 100.0 * (
        table["bpp"] / bpp_at_psnr(ref_bpp, ref_psnr, table["psnr"]) - 1.0)
    table["bd_rate_vs_jpeg2000_pct"] = bd_rate_per_evaluation(table, ref_bpp, ref_psnr)
    table = table.sort_values(["recipe", "wall_h", "lmbda"], kind="stable")
    return table.reset_index(drop=True)[list(COLUMNS)]


def read_evaluations(run: str | Path) -> pd.DataFrame:
    """A training run's evaluations, from the ``eval.csv`` that ``python -m nic_lib.train`` writes.

    Args:
        run: a run folder, or an eval CSV itself (one shipped beside a checkpoint).

    Returns:
        Columns :data:`EVALUATION_COLUMNS`: ``weights`` is ``model``, or ``ema`` for the
        moving average a run trained with ``--ema`` also evaluates (files written before
        that have no such column: all ``model``); ``hours`` is the time of the
        evaluation's first row (a variable-rate evaluation writes one row per level,
        seconds apart), one time per step and weights. Empty without the file.
    """
    path = Path(run) if Path(run).suffix == ".csv" else Path(run) / "eval.csv"
    if not path.is_file():
        return pd.DataFrame(columns=list(EVALUATION_COLUMNS))
    ev = pd.read_csv(path)
    ev["weights"] = _weights(ev)
    # one time per evaluation: when it started (its first level's row)
    ev["hours"] = ev.groupby(["step", "weights"])["wall_s"].transform("min") / 3600.0
    return ev[list(EVALUATION_COLUMNS)]


def _weights(evals: pd.DataFrame) -> pd.Series:
    """Which weights each evaluation row is of: its ``weights`` column (``model`` or
    ``ema``), ``model`` where empty or where the file has no such column (runs without
    ``--ema``, files written before it existed)."""
    if "weights" not in evals:
        return pd.Series("model", index=evals.index)
    return evals["weights"].fillna("model")


def shipped_logs(checkpoint: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    """The training log and evaluations shipped beside a checkpoint.

    :func:`nic_lib.training.ship_run` copies a run's ``log.csv`` and ``eval.csv`` beside the
    checkpoint it ships, as ``<stem>.log.csv`` and ``<stem>.eval.csv``.

    Args:
        checkpoint: ``<folder>/<stem>.pt`` (the file itself need not exist: the shared
            training stages ship only their logs).

    Returns:
        ``(log, evaluations)`` read as tables, evaluations None without an eval file; None
        without a log.
    """
    path = Path(checkpoint)
    log, evals = path.with_name(f"{path.stem}.log.csv"), path.with_name(f"{path.stem}.eval.csv")
    if not log.is_file():
        return None
    return continuous_wall_time(pd.read_csv(log), pd.read_csv(evals) if evals.is_file() else None)


#: Columns of :func:`protocol_budgets`.
BUDGET_COLUMNS = ("model", "steps", "lr", "crops", "batch_size", "precision")


def protocol_budgets(checkpoints: dict[str, str | Path]) -> pd.DataFrame:
    """What each shipped ablation model was trained with: the budget an ordering rests on.

    ``python -m nic_lib.train_entropy`` records its flags in the run's ``config.json``, which
    :func:`nic_lib.training.ship_run` copies beside the checkpoint as ``<stem>.config.json``
    (its ``config`` entry: ``steps``, ``lr``, ``crops``, ``batch_size``, ``precision``).

    Args:
        checkpoints: ``{label: <folder>/<stem>.pt}``; a label whose config is not shipped
            is left out.

    Returns:
        One row per model (:data:`BUDGET_COLUMNS`), in the order given.
    """
    import json

    rows = []
    for label, checkpoint in checkpoints.items():
        path = Path(checkpoint)
        config = path.with_name(f"{path.stem}.config.json")
        if not config.is_file():
            continue
        flags = json.loads(config.read_text()).get("config", {})
        rows.append({"model": label, "steps": flags.get("steps", flags.get("max_steps")),
                     **{k: flags.get(k) for k in BUDGET_COLUMNS[2:]}})
    return pd.DataFrame(rows, columns=list(BUDGET_COLUMNS))


def budget_summary(budgets: pd.DataFrame) -> str:
    """One sentence on :func:`protocol_budgets`: the shared budget, or which models differ
    (an ordering between models of unequal budgets is partly the budget's)."""
    if budgets.empty:
        return "No protocol model is shipped yet."
    shared = [c for c in BUDGET_COLUMNS[1:] if budgets[c].nunique(dropna=False) == 1]
    differ = [c for c in BUDGET_COLUMNS[1:] if c not in shared]
    if not differ:
        b = budgets.iloc[0]
        return (f"All {len(budgets)} protocol models shipped so far were trained alike: "
                f"{int(b['steps']):,} steps at learning rate {b['lr']:g}, {int(b['crops']):,} "
                f"cached crops, batch {int(b['batch_size'])}, {b['precision']}.")
    groups = budgets.groupby("steps", sort=True)["model"].apply(lambda m: ", ".join(m))
    by_steps = "; ".join(f"{int(steps):,} steps: {models}" for steps, models in groups.items())
    return (f"The shipped protocol models differ in {', '.join(differ)} ({by_steps}): an "
            "ordering between models of different budgets is partly the budget's, until "
            "`python scripts/train_cpu_profile.py` has retrained them all at the protocol's.")


def continuous_wall_time(log: pd.DataFrame, evals: pd.DataFrame | None = None
                         ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Make ``wall_s`` count the whole training when a run was continued.

    A run continued from a shipped snapshot (``--init-from ... --start-step S``, on a
    machine without the run folder) starts its clock at 0 again, and the shipped log keeps
    the rows before ``S`` in front of the continuation's. Each such restart is a segment
    starting at the first row whose ``wall_s`` is below its predecessor's; its rows, and
    the evaluations at or after its first step, get the time of the segments before it
    added, t = wall_s + Σ_{segments k before} wall_s(last row of k). Rows of a run that
    never restarted are returned unchanged.

    Args:
        log: a run's log (``step``, ``wall_s``), in step order.
        evals: its evaluations (``step``, ``wall_s``), or None.

    Returns:
        ``(log, evals)``, copies with ``wall_s`` cumulative.
    """
    log = log.sort_values("step", kind="stable").reset_index(drop=True)
    wall = log["wall_s"].to_numpy(dtype=float)
    restarts = np.flatnonzero(wall[1:] < wall[:-1]) + 1
    if not len(restarts):
        return log, None if evals is None else evals.copy()
    starts = log["step"].to_numpy()[restarts]  # first step of each continuation
    offsets = np.cumsum(wall[restarts - 1])  # time of everything before it
    segment = np.searchsorted(restarts, np.arange(len(log)), side="right")  # 0 = first run
    log = log.copy()
    log["wall_s"] = wall + np.r_[0.0, offsets][segment]
    if evals is not None:
        evals = evals.copy()
        k = np.searchsorted(starts, evals["step"].to_numpy(), side="right")
        evals["wall_s"] = evals["wall_s"].to_numpy(dtype=float) + np.r_[0.0, offsets][k]
    return log, evals


def jpeg2000_curve(eval_images: int, eval_crop: int, cache_path: Path) -> pd.DataFrame:
    """JPEG 2000's RD curve on the evaluation images (per-image sweep cached).

    Args:
        eval_images, eval_crop: the evaluation set, as nic_lib.training builds it.
        cache_path: CSV of the per-image sweep (its key beside it).

    Returns:
        ``rd.rd_table`` of the sweep: one row per setting with bpp and psnr_rgb.
    """
    names = [p.stem for p in data.list_images(training.EVAL_DATASET, limit=eval_images)]
    cfg = training.TrainConfig(eval_images=eval_images, eval_crop=eval_crop)
    codec = codecs.get_codec(REFERENCE_CODEC)
    key = {"dataset": training.EVAL_DATASET, "images": names, "crop": eval_crop,
           "codec": codec.description, "settings": list(REFERENCE_BPPS)}

    images = list(zip(names, training.load_eval_images(cfg)))

    def sweep() -> pd.DataFrame:
        return codecs.rate_sweep(images, [codec], {codec.name: REFERENCE_BPPS}, progress=False)

    return rd.rd_table(cache.cached_table(cache_path, key, sweep, data=images, models=None))


def format_or_blank(value: float, spec: str, unit: str = "") -> str:
    """A number for the summary; blank when undefined (NaN: outside JPEG 2000's range)."""
    return "" if value is None or math.isnan(value) else f"{value:{spec}}{unit}"


#: The cpu profile's main line (``scripts/train_cpu_profile.py``), stage by stage in training
#: order, with the last step of each that lies on it (``n96`` forks ``m192-q8`` at step
#: 16,500; None: the whole stage) and where its records are shipped (under the checkpoint
#: folder, without ``.log.csv`` / ``.eval.csv``).
MAIN_LINE = (
    ("base", None, "stages/base"),
    ("mbt2018-vr", None, "stages/mbt2018-vr"),
    ("m96-extended", None, "stages/m96-extended"),
    ("m96-5h", None, "stages/m96-5h"),
    ("m192-vr", None, "stages/m192-vr"),
    ("m192-q8", 16500, "stages/m192-q8"),
    ("n96", None, "mbt2018/n96"),
)
#: Columns of :func:`main_line_records`' evaluations and logs.
MAIN_LINE_COLUMNS = ("stage", "step", "hours", "quality", "lmbda", "images", "bpp", "psnr", "weights")
MAIN_LINE_LOG_COLUMNS = ("stage", "step", "hours", "loss", "psnr", "bpp")


def main_line_records(checkpoint_dir: str | Path, stages: tuple = MAIN_LINE
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every log row and evaluation of the main line on one clock: hours since its first step.

    Each stage's shipped log and evaluations are read (:func:`shipped_logs`, its own clock
    made continuous), cut at the step where the next stage forked it, and put after the
    stages before it: ``hours`` = (time of the stages before + the stage's ``wall_s``) /
    3600. The stages ran on different machines and settings (one core each; float32, or
    bfloat16 where the CPU has it natively), so hours are CPU time as it was spent, not a
    controlled comparison. Where a stage evaluated both its weights and their moving
    average, the moving average (what is shipped) is kept.

    Args:
        checkpoint_dir: the folder of the shipped checkpoints (``hub.checkpoint_dir()``).
        stages: ``(stage, last step or None, record path)`` in order (:data:`MAIN_LINE`).

    Returns:
        ``(logs, evaluations, durations)``: one row per stage × logged step (columns
        :data:`MAIN_LINE_LOG_COLUMNS`: training loss, PSNR and bpp of that step's batch),
        one per stage × step × level evaluated (:data:`MAIN_LINE_COLUMNS`), and one per
        stage found (``stage``, ``steps``, ``hours``: its own, up to the fork). Stages
        without shipped records are left out of all three.
    """
    rows, log_rows, spans, offset = [], [], [], 0.0
    for stage, last, record in stages:
        shipped = shipped_logs(Path(checkpoint_dir) / f"{record}.pt")
        if shipped is None:
            continue
        log, evals = shipped
        if last is not None:
            log = log[log["step"] <= last]
            evals = None if evals is None else evals[evals["step"] <= last]
        if evals is not None and len(evals):
            evals = evals.assign(weights=_weights(evals))
            if (evals["weights"] == "ema").any():
                evals = evals[evals["weights"] == "ema"]
            for column, value in (("quality", 0), ("lmbda", np.nan)):
                if column not in evals:
                    evals[column] = value
            evals["hours"] = (offset + evals["wall_s"]) / 3600.0
            evals["stage"] = stage
            rows.append(evals[list(MAIN_LINE_COLUMNS)])
        log_rows.append(log.assign(stage=stage, hours=(offset + log["wall_s"]) / 3600.0)
                        .reindex(columns=list(MAIN_LINE_LOG_COLUMNS)))
        duration = float(log["wall_s"].iloc[-1]) if len(log) else 0.0
        spans.append({"stage": stage, "steps": int(log["step"].iloc[-1]) if len(log) else 0,
                      "hours": duration / 3600.0})
        offset += duration
    evaluations = (pd.concat(rows, ignore_index=True) if rows
                   else pd.DataFrame(columns=list(MAIN_LINE_COLUMNS)))
    logs = (pd.concat(log_rows, ignore_index=True) if log_rows
            else pd.DataFrame(columns=list(MAIN_LINE_LOG_COLUMNS)))
    return logs, evaluations, pd.DataFrame(spans, columns=["stage", "steps", "hours"])


#: Branches of the main line: ``(stage, the stage it forked, the step it forked at, where its
#: records are shipped)``. ``n96-top`` is ``n96`` at step 26,500 cut to q6-q8 and trained on
#: in parallel with it (``scripts/train_cpu_profile.py``); the cpu profile serves q6-q8 from it.
BRANCHES = (("n96-top", "n96", 26500, "mbt2018/n96-top"),)


def branch_records(checkpoint_dir: str | Path, main_logs: pd.DataFrame,
                   branches: tuple = BRANCHES) -> pd.DataFrame:
    """The evaluations of the main line's branches on the main line's clock.

    A branch starts from the main line's weights at its fork step, so its clock starts
    where the main line's stood then:
    ``hours = hours_main(fork stage, last logged step <= fork step) + wall_s / 3600``
    (its own time added on; the two ran side by side on two cores, so the main line's
    later hours are not the branch's).

    Args:
        checkpoint_dir: the folder of the shipped checkpoints.
        main_logs: :func:`main_line_records`' logs (the fork's hours come from them).
        branches: ``(stage, forked stage, fork step, record path)`` (:data:`BRANCHES`).

    Returns:
        One row per branch × step × level evaluated (:data:`MAIN_LINE_COLUMNS`, EMA weights
        where both were evaluated); empty without shipped records or without the forked
        stage in ``main_logs``.
    """
    rows = []
    for stage, forked, fork_step, record in branches:
        shipped = shipped_logs(Path(checkpoint_dir) / f"{record}.pt")
        before = main_logs[(main_logs["stage"] == forked) & (main_logs["step"] <= fork_step)]
        if shipped is None or shipped[1] is None or not len(before):
            continue
        evals = shipped[1].assign(weights=lambda e: _weights(e))
        if (evals["weights"] == "ema").any():
            evals = evals[evals["weights"] == "ema"]
        evals = evals.assign(stage=stage,
                             hours=float(before["hours"].iloc[-1]) + evals["wall_s"] / 3600.0)
        rows.append(evals[list(MAIN_LINE_COLUMNS)])
    return (pd.concat(rows, ignore_index=True) if rows
            else pd.DataFrame(columns=list(MAIN_LINE_COLUMNS)))


def gap_to_run(evals: pd.DataFrame, reference: pd.DataFrame, weights: str = "ema") -> pd.DataFrame:
    """Each evaluation of a run against another run's curve at the same step.

    For a run that trains some rate levels of a model apart from the run it forked from
    (``n96-top``: n96's q6–q8 with transforms of their own), the question is how far its
    points sit above the other run's curve at the same step:
    gap = PSNR − PSNR_ref(bpp), PSNR_ref interpolated linearly in log bpp over all the
    reference's levels at that step (:func:`nic_lib.rd.quality_gap_at_rate`: NaN beyond its
    rate range, where the nearest point's difference is reported instead, as
    ``beyond_db`` with ``beyond_bpp_ratio``).

    Args:
        evals, reference: two runs' evaluations (``eval.csv``: ``step``, ``quality``,
            ``bpp``, ``psnr``, optionally ``weights``).
        weights: which weights' rows to compare (``"ema"`` or ``"model"``; files without a
            ``weights`` column count as ``"model"``).

    Returns:
        One row per step both evaluated × level of ``evals``: ``step``, ``quality``,
        ``bpp``, ``psnr``, ``gap_db``, and for points beyond the reference's range the
        nearest reference level's ``beyond_db`` (PSNR difference) and
        ``beyond_bpp_ratio`` (bpp ratio).
    """
    evals, reference = evals[_weights(evals) == weights], reference[_weights(reference) == weights]
    rows = []
    for step, mine in evals.groupby("step", sort=True):
        ref = reference[reference["step"] == step].sort_values("bpp")
        if ref.empty:
            continue
        mine = mine.sort_values("quality")
        gap = rd.quality_gap_at_rate(ref["bpp"].to_numpy(), ref["psnr"].to_numpy(),
                                     mine["bpp"].to_numpy(), mine["psnr"].to_numpy())
        for (_, row), g in zip(mine.iterrows(), np.asarray(gap, dtype=float)):
            near = ref.iloc[int(np.argmin(np.abs(np.log(ref["bpp"].to_numpy() / row["bpp"]))))]
            beyond = not np.isfinite(g)
            rows.append({"step": int(step), "quality": int(row["quality"]), "bpp": row["bpp"],
                         "psnr": row["psnr"], "gap_db": g,
                         "beyond_db": row["psnr"] - near["psnr"] if beyond else np.nan,
                         "beyond_bpp_ratio": row["bpp"] / near["bpp"] if beyond else np.nan})
    return pd.DataFrame(rows, columns=["step", "quality", "bpp", "psnr", "gap_db", "beyond_db",
                                       "beyond_bpp_ratio"])
