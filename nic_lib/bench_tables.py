"""Comparing codecs under shift, from a grid table (:data:`nic_lib.bench.COLUMNS`):
dataset-level RD points (:func:`rd_points`), quality deltas at matched bpp
(:func:`matched_bpp_delta`) and at one setting (:func:`delta_at_setting`). Part of
:mod:`nic_lib.bench`; import from there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from nic_lib import rd


# ---------------------------------------------------------------------------------------
# Comparing codecs under shift

#: Rates (log-spaced over the shared range) at which two RD curves are compared by
#: :func:`matched_bpp_delta` (:data:`nic_lib.rd.MATCH_POINTS`).
MATCH_POINTS = rd.MATCH_POINTS


def rd_points(table: pd.DataFrame, by: Sequence[str] = ("corruption", "severity"),
              metrics_: Sequence[str] = ("bpp", "psnr_vs_input", "psnr_vs_clean", "ms_ssim")) -> pd.DataFrame:
    """Dataset-level RD points: the mean over images (and over any rows ``by`` leaves out).

    Args:
        table: a grid table (:data:`nic_lib.bench.COLUMNS`), possibly with extra columns such as a group.
        by: columns kept apart besides ``codec`` and ``setting`` (e.g. ``("group",)`` to
            average the corruptions and severities of a frequency group).
        metrics_: numeric columns to average (PSNR averaged in dB, as the papers do).

    Returns:
        One row per ``by`` x codec x setting with ``n_rows`` and the means.
    """
    keys = [*by, "codec", "setting"]
    grouped = table.groupby(keys, sort=False)
    points = grouped[list(metrics_)].mean()
    points.insert(0, "n_rows", grouped.size())
    return points.reset_index()


def matched_bpp_delta(table: pd.DataFrame, reference: str, metric: str = "psnr_vs_input",
                      by: Sequence[str] = ("corruption", "severity"), points: int = MATCH_POINTS) -> pd.DataFrame:
    """Mean quality difference of every codec against ``reference`` at matched bpp, per condition.

    A BD-PSNR that needs no monotone curve: quality against the *clean* image can fall as
    rate rises (more bits reproduce more of the noise), which BD metrics' fits refuse. Each
    codec's dataset-level curve (mean bpp, mean ``metric`` per setting) is linearly
    interpolated in log-bpp at ``points`` log-spaced rates over the range both curves cover;
    the differences are averaged. Written here because no library offers this variant.

    Args:
        table: a grid table (:data:`nic_lib.bench.COLUMNS`).
        reference: the codec compared against (e.g. ``"jpeg2000"``).
        metric: quality column (dB): ``psnr_vs_input`` or ``psnr_vs_clean``.
        by: columns defining one condition.
        points: number of matched rates.

    Returns:
        One row per condition x codec (the reference included, at 0): the ``by`` columns,
        ``codec``, ``reference``, ``metric``, ``delta_db`` (positive = better than the
        reference; NaN when the curves share no rate range), ``bpp_low``, ``bpp_high``.

    Raises:
        ValueError: the reference codec is not in the table.
    """
    if reference not in set(table["codec"]):
        raise ValueError(f"reference codec {reference!r} is not in the table (codecs: {sorted(set(table['codec']))}); "
                         "add it to the grid or choose another reference")
    curves = rd_points(table, by, ("bpp", metric))
    rows = []
    for key, cond in curves.groupby(list(by), sort=False):
        ref = cond[cond["codec"] == reference]
        for codec, cur in cond.groupby("codec", sort=False):
            # delta = mean over matched rates r of (Q_codec(r) - Q_reference(r)), Q linear in log(bpp)
            delta, low, high = rd.matched_rate_delta(ref["bpp"], ref[metric], cur["bpp"], cur[metric], points)
            rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "codec": codec,
                         "reference": reference, "metric": metric, "delta_db": delta,
                         "bpp_low": low, "bpp_high": high})
    return pd.DataFrame(rows)


def delta_at_setting(table: pd.DataFrame, codec: str, setting, reference: str, metric: str = "psnr_vs_input",
                     by: Sequence[str] = ("corruption", "severity")) -> pd.DataFrame:
    """Quality of one codec setting against ``reference`` at the rate that setting spends, per condition.

    One definition for every condition: the codec is run at one fixed setting (e.g. a NIC
    quality level), as a user runs it, and each condition's dataset-mean point
    (bpp, quality) is compared with the reference's curve of that condition, interpolated
    in log-bpp at the same bpp (:func:`nic_lib.rd.quality_gap_at_rate`). Unlike
    :func:`matched_bpp_delta`, whose mean runs over whatever rate range two curves happen
    to share in a condition (a different one in every condition), every cell answers the
    same question. A fixed bpp for all conditions cannot be reached by every codec (a
    low-contrast image costs a NIC a tenth of a noisy one); where the reference does not
    reach the codec's rate the cell cannot exist, and ``reason`` says why.

    Args:
        table: a grid table (:data:`nic_lib.bench.COLUMNS`).
        codec: the codec compared (e.g. ``"mbt2018"``).
        setting: its setting (a value of the ``setting`` column, e.g. quality 3).
        reference: the codec compared against (e.g. ``"jpeg2000"``).
        metric: quality column (dB): ``psnr_vs_input`` or ``psnr_vs_clean``.
        by: columns defining one condition.

    Returns:
        One row per condition: the ``by`` columns, ``codec``, ``setting``, ``reference``,
        ``metric``, ``bpp`` (the codec's mean bpp there), ``delta_db`` (positive = better
        than the reference; NaN when it cannot exist), ``reference_bpp_low``,
        ``reference_bpp_high`` and ``reason`` (empty when ``delta_db`` exists).

    Raises:
        ValueError: the codec, its setting or the reference is not in the table.
    """
    for name in (codec, reference):
        if name not in set(table["codec"]):
            raise ValueError(f"codec {name!r} is not in the table (codecs: {sorted(set(table['codec']))}); "
                             "add it to the grid or choose another")
    mine = table[table["codec"] == codec]
    settings = pd.to_numeric(mine["setting"], errors="coerce")
    if not np.isclose(settings, float(setting)).any():
        raise ValueError(f"{codec} has no setting {setting!r} in the table (settings: {sorted(set(settings))})")
    curves = rd_points(table[table["codec"].isin([codec, reference])], by, ("bpp", metric))
    rows = []
    for key, cond in curves.groupby(list(by), sort=False):
        ref = cond[cond["codec"] == reference]
        point = cond[(cond["codec"] == codec) & np.isclose(pd.to_numeric(cond["setting"]), float(setting))]
        row = {**dict(zip(by, key if isinstance(key, tuple) else (key,))), "codec": codec, "setting": setting,
               "reference": reference, "metric": metric, "bpp": float("nan"), "delta_db": float("nan"),
               "reference_bpp_low": float(ref["bpp"].min()) if len(ref) else float("nan"),
               "reference_bpp_high": float(ref["bpp"].max()) if len(ref) else float("nan"), "reason": ""}
        if point.empty or len(ref) < 2:
            row["reason"] = f"no {codec if point.empty else reference} rows in this condition"
        else:
            row["bpp"] = float(point["bpp"].iloc[0])
            # delta = Q_codec(setting) - Q_reference(bpp of that setting), Q_reference linear in log(bpp)
            row["delta_db"] = float(rd.quality_gap_at_rate(ref["bpp"], ref[metric], row["bpp"], point[metric].iloc[0]))
            if not np.isfinite(row["delta_db"]):
                side = "lowest" if row["bpp"] < row["reference_bpp_low"] else "highest"
                edge = row["reference_bpp_low"] if side == "lowest" else row["reference_bpp_high"]
                row["reason"] = (f"{codec} spends {row['bpp']:.3g} bpp here, {reference}'s {side} rate is "
                                 f"{edge:.3g} bpp")
        rows.append(row)
    return pd.DataFrame(rows)
