"""Quality at equal rate, for curves too short or too far apart for a BD value (learning
curves, ablations): :func:`quality_gap_at_rate`, :func:`matched_rate_delta`,
:func:`learning_curve`. Part of :mod:`nic_lib.rd`; import from there.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


# --------------------------------------------------------------------------- quality at equal rate

#: Rates (log-spaced over the shared range) at which :func:`matched_rate_delta` compares two
#: curves: 32 points make the interpolated mean exact to ~0.01 dB.
MATCH_POINTS = 32


def _log_rate_curve(rate, quality) -> tuple[np.ndarray, np.ndarray]:
    """(log rate, quality) of a curve sorted by rate, non-finite points dropped."""
    rate = np.asarray(rate, dtype=np.float64).ravel()
    quality = np.asarray(quality, dtype=np.float64).ravel()
    keep = np.isfinite(rate) & np.isfinite(quality) & (rate > 0)
    order = np.argsort(rate[keep], kind="stable")
    return np.log(rate[keep][order]), quality[keep][order]


def quality_gap_at_rate(ref_rate, ref_quality, rate, quality) -> np.ndarray:
    """Quality of each point minus the reference curve's quality at the same rate.

    The reference is interpolated linearly in log-rate (PSNR grows about linearly with
    log-bpp, ~6 dB per doubling at high rate). Points outside the reference's rate range
    get NaN: extrapolating a codec's curve would invent its quality.

    Args:
        ref_rate, ref_quality: the reference curve's points (any order).
        rate, quality: the points compared with it (arrays of one shape).

    Returns:
        float array of ``quality - Q_ref(rate)`` (dB for PSNR); NaN outside the reference.
    """
    lx, ly = _log_rate_curve(ref_rate, ref_quality)
    rate = np.asarray(rate, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    if lx.size < 2:
        return np.full(np.broadcast(rate, quality).shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rate = np.log(rate)
    inside = np.isfinite(log_rate) & (log_rate >= lx[0]) & (log_rate <= lx[-1])
    # gap = Q(rate) - Q_ref(rate), Q_ref linear in log(rate) between its points
    gap = quality - np.interp(np.where(inside, log_rate, lx[0]), lx, ly)
    return np.where(inside, gap, np.nan)


def matched_rate_delta(ref_rate, ref_quality, rate, quality, points: int = MATCH_POINTS,
                       rate_range: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean quality difference of a curve against a reference over the rates both cover.

    A BD-PSNR that needs neither four points per curve nor monotone quality: both curves
    are interpolated linearly in log-rate at ``points`` log-spaced rates over the shared
    range and the differences are averaged. Written here because no library offers it.

    Args:
        ref_rate, ref_quality: the reference curve (at least 2 points).
        rate, quality: the compared curve (at least 2 points).
        points: number of matched rates.
        rate_range: ``(low, high)`` rates the mean is further limited to (e.g. a range
            every codec of a comparison covers, so that all means run over one range);
            None: the whole shared range.

    Returns:
        ``(delta, low, high)``: the mean of ``Q(r) - Q_ref(r)`` (positive = better than
        the reference) and the shared rate range; ``delta`` is NaN when the curves share
        no range (``low >= high``) or a curve has fewer than 2 points.
    """
    rx, ry = _log_rate_curve(ref_rate, ref_quality)
    cx, cy = _log_rate_curve(rate, quality)
    if rx.size < 2 or cx.size < 2:
        return float("nan"), float("nan"), float("nan")
    low, high = max(rx[0], cx[0]), min(rx[-1], cx[-1])
    if rate_range is not None:
        low, high = max(low, math.log(rate_range[0])), min(high, math.log(rate_range[1]))
    if not low < high:
        return float("nan"), float(np.exp(low)), float(np.exp(high))
    grid = np.linspace(low, high, points)
    # delta = mean over matched rates r of (Q(r) - Q_ref(r)), both linear in log(r)
    delta = float(np.mean(np.interp(grid, cx, cy) - np.interp(grid, rx, ry)))
    return delta, float(np.exp(low)), float(np.exp(high))


def learning_curve(evals: pd.DataFrame, ref_rate, ref_quality, quality: str = "psnr") -> pd.DataFrame:
    """One point per evaluation of a training run: its gap to a reference codec at equal bpp.

    A training log evaluates every rate level of a variable-rate model at one step, each
    level with its own clock time; grouping by (step, time) would make every level its
    own point. Here the levels of one step form one point: the mean over the levels of
    ``quality - Q_ref(bpp)`` (:func:`quality_gap_at_rate`). When a level falls outside the
    reference's rate range the step's mean is NaN: a mean over a different set of levels
    would not be comparable with its neighbours' (``levels_outside`` counts them).

    Args:
        evals: the evaluation log, columns ``step``, ``wall_s``, ``bpp`` and ``quality``
            (e.g. ``psnr``); one row per step and level.
        ref_rate, ref_quality: the reference curve on the same images (e.g. JPEG 2000).
        quality: the quality column of ``evals``.

    Returns:
        One row per step, sorted by step: ``step``, ``wall_s`` (the step's last
        evaluation), ``gap_db`` (mean over levels), ``gap_min``, ``gap_max`` (over levels),
        ``levels`` (evaluated at the step), ``levels_outside``.
    """
    missing = [c for c in ("step", "wall_s", "bpp", quality) if c not in evals.columns]
    if missing:
        raise ValueError(f"evaluation log lacks columns {missing} (it has {list(evals.columns)}); "
                         "pass a training run's eval.csv")
    gaps = evals.assign(gap=quality_gap_at_rate(ref_rate, ref_quality, evals["bpp"], evals[quality]))
    grouped = gaps.groupby("step", sort=True)
    out = grouped.agg(wall_s=("wall_s", "max"), gap_db=("gap", "mean"), gap_min=("gap", "min"),
                      gap_max=("gap", "max"), levels=("bpp", "size"),
                      levels_outside=("gap", lambda g: int(g.isna().sum())))
    out.loc[out["levels_outside"] > 0, ["gap_db", "gap_min", "gap_max"]] = np.nan
    return out.reset_index()
