"""BD-rate / BD-PSNR (through the ``bjontegaard`` package), RD tables (mean over images, BD
against a reference curve or anchor) and the published Kodak anchors. Part of
:mod:`nic_lib.rd`, whose docstring draws the path; import from there.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from importlib import resources

import bjontegaard
import numpy as np
import pandas as pd


#: Interpolation used for every BD value. The bjontegaard docs (Herglotz et al., ICIP 2022,
#: "Beyond Bjontegaard") find Akima interpolation more accurate and stabler than the
#: original cubic polynomial fit of VCEG-M33 and than PCHIP (used by the JCT-VC/JVET common-test-condition sheets).
BD_METHOD = "akima"
#: Fewest RD points per curve: Bjontegaard's VCEG-M33 fits a cubic through 4 points, and
#: with fewer points any interpolant is close to a straight line between the ends.
MIN_POINTS = 4
#: Overlap (fraction of the union of both ranges) under which a BD value is flagged in
#: bd_rate_table's note: the bjontegaard package's own warning threshold.
MIN_OVERLAP = 0.75

#: Columns of the tidy per-image table that rd_table reads.
IMAGE_COLUMN = "image"
SETTING_COLUMN = "setting"
RATE_COLUMN = "bpp"
#: One RD point per codec x setting (add "condition" for corrupted inputs).
RD_GROUP = ("codec", "setting")
#: Metrics averaged over images: the rate and the two qualities the three papers report.
RD_METRICS = ("bpp", "psnr_rgb", "ms_ssim")
#: Average only over complete columns: a point averaged over fewer images than its
#: neighbours is not comparable, so a NaN in any image makes the point's mean NaN.
SKIP_NAN = False

#: Package data holding the published Kodak curves (see the file's header for its source).
ANCHORS_RESOURCE = "kodak_rd_anchors.csv"
#: Prefix of the per-anchor description lines in that file: "# anchor NAME: TEXT".
ANCHOR_LINE_PREFIX = "# anchor "
#: Distortion column of the anchors (they publish PSNR over RGB only).
ANCHOR_METRIC = "psnr_rgb"


# --------------------------------------------------------------------------- BD metrics


class CurvesDoNotOverlapError(ValueError):
    """The two RD curves share no interval to integrate over, so no BD value exists."""


def _checked_curve(rate, dist, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (rate, dist) of one RD curve as float arrays sorted by rate, or raise."""
    rate = np.asarray(rate, dtype=np.float64).ravel()
    dist = np.asarray(dist, dtype=np.float64).ravel()
    if rate.size != dist.size:
        raise ValueError(f"{name}: {rate.size} rates but {dist.size} distortions; pass one of each per RD point")
    if rate.size < MIN_POINTS:
        raise ValueError(
            f"{name}: {rate.size} RD points, BD metrics need at least {MIN_POINTS}; "
            "encode at more quality settings"
        )
    if not (np.all(np.isfinite(rate)) and np.all(np.isfinite(dist))):
        raise ValueError(
            f"{name}: rates and distortions must be finite, got rate={rate.tolist()}, dist={dist.tolist()}; "
            "drop lossless points (PSNR = inf) and points averaged over missing values (NaN)"
        )
    if np.any(rate <= 0):
        raise ValueError(f"{name}: rates must be > 0 (BD integrates log-rate), got {rate.tolist()}")
    order = np.argsort(rate, kind="stable")
    rate, dist = rate[order], dist[order]
    if np.any(np.diff(rate) <= 0):
        raise ValueError(
            f"{name}: repeated rate values {rate.tolist()}; average repeated settings into one point "
            "first (nic_lib.rd.rd_table does) or drop the duplicates"
        )
    if np.any(np.diff(dist) <= 0):
        raise ValueError(
            f"{name}: quality does not rise with rate (sorted by rate: rate={rate.tolist()}, "
            f"dist={dist.tolist()}); check that rates and distortions are aligned, and drop points "
            "that spend more bits for no better quality (they are off the RD curve)"
        )
    return rate, dist


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Return (low, high, fraction of the union of both ranges) of the shared range of a and b."""
    low, high = max(a.min(), b.min()), min(a.max(), b.max())
    union = max(a.max(), b.max()) - min(a.min(), b.min())
    return low, high, max(high - low, 0.0) / union


def _require_overlap(a: np.ndarray, b: np.ndarray, what: str) -> None:
    low, high, _ = _overlap(a, b)
    if high <= low:
        raise CurvesDoNotOverlapError(
            f"the curves do not overlap in {what}: reference covers [{a.min():.4g}, {a.max():.4g}], "
            f"test covers [{b.min():.4g}, {b.max():.4g}]; encode at settings that reach the other "
            "curve's range, or compare against a reference closer in quality and rate"
        )


def bd_rate(rate_anchor, dist_anchor, rate_test, dist_test) -> float:
    """Bjontegaard-delta rate: average bitrate change of the test curve at equal quality.

    Computed by ``bjontegaard.bd_rate`` with Akima interpolation (:data:`BD_METHOD`) of
    log10(rate) as a function of distortion, integrated over the distortion interval both
    curves cover. Points may come in any order; the curves need not have equally many.

    Args:
        rate_anchor, dist_anchor: the reference curve, e.g. bpp and PSNR (dB) per setting.
        rate_test, dist_test: the curve under test, same units.

    Returns:
        BD-rate in percent; negative when the test codec needs fewer bits for the same
        quality (-10.0 means 10 % smaller files on average).

    Raises:
        ValueError: if a curve has fewer than :data:`MIN_POINTS` points, non-finite values,
            rates <= 0, repeated rates, or quality that does not rise with rate.
        CurvesDoNotOverlapError: (a ValueError) if the distortion ranges do not overlap.
    """
    ra, da = _checked_curve(rate_anchor, dist_anchor, "reference curve")
    rt, dt = _checked_curve(rate_test, dist_test, "test curve")
    _require_overlap(da, dt, "distortion")
    # BD-rate = 10^( 1/(D_H - D_L) * ∫_{D_L}^{D_H} (log10 r_test(D) - log10 r_ref(D)) dD ) - 1,
    # with [D_L, D_H] the shared distortion range and log r(D) interpolated from the points;
    # bjontegaard returns it in percent. min_overlap=0: overlap is reported by bd_rate_table.
    return float(
        bjontegaard.bd_rate(ra, da, rt, dt, method=BD_METHOD, require_matching_points=False, min_overlap=0)
    )


def bd_psnr(rate_anchor, dist_anchor, rate_test, dist_test) -> float:
    """Bjontegaard-delta distortion: average quality change of the test curve at equal rate.

    Computed by ``bjontegaard.bd_psnr`` with Akima interpolation (:data:`BD_METHOD`) of
    distortion as a function of log10(rate), integrated over the log-rate interval both
    curves cover. Called BD-PSNR when the distortion is PSNR; works for any quality in
    dB (e.g. MS-SSIM in dB).

    Args:
        rate_anchor, dist_anchor: the reference curve, e.g. bpp and PSNR (dB) per setting.
        rate_test, dist_test: the curve under test, same units.

    Returns:
        Average quality difference test - reference in the distortion's unit (dB for
        PSNR); positive when the test codec is better.

    Raises:
        ValueError: if a curve has fewer than :data:`MIN_POINTS` points, non-finite values,
            rates <= 0, repeated rates, or quality that does not rise with rate.
        CurvesDoNotOverlapError: (a ValueError) if the rate ranges do not overlap.
    """
    ra, da = _checked_curve(rate_anchor, dist_anchor, "reference curve")
    rt, dt = _checked_curve(rate_test, dist_test, "test curve")
    _require_overlap(np.log10(ra), np.log10(rt), "rate")
    # BD-PSNR = 1/(R_H - R_L) * ∫_{R_L}^{R_H} (D_test(R) - D_ref(R)) dR, with R = log10(rate)
    # over the shared log-rate range and D(R) interpolated from the points.
    return float(
        bjontegaard.bd_psnr(ra, da, rt, dt, method=BD_METHOD, require_matching_points=False, min_overlap=0)
    )


# --------------------------------------------------------------------------- RD tables


def rd_table(
    df: pd.DataFrame,
    by: Sequence[str] = RD_GROUP,
    metrics: Sequence[str] = RD_METRICS,
    skipna: bool = SKIP_NAN,
) -> pd.DataFrame:
    """Dataset-level RD points from a tidy per-image table.

    Each point is the mean over images of per-image bpp and of per-image quality (PSNR
    is averaged in dB, not computed from the mean MSE): the convention of CompressAI's
    Kodak numbers and of :func:`load_anchors`. When ``ms_ssim`` is averaged, an
    ``ms_ssim_db`` column holds -10 log10(1 - mean MS-SSIM), as CompressAI plots it.

    Args:
        df: one row per image x codec x setting (x condition ...), with columns
            ``image``, the ``by`` columns and the ``metrics`` columns (NaN allowed).
        by: columns identifying one RD point, e.g. ``("codec", "setting", "condition")``.
        metrics: numeric columns to average; must include ``bpp``.
        skipna: average over the images that have a value; by default a NaN in any image
            makes the point's mean NaN, so gaps stay visible (see :data:`SKIP_NAN`).

    Returns:
        One row per ``by`` combination with the ``by`` columns, ``n_images``, the mean of
        each metric and ``ms_ssim_db`` when ``ms_ssim`` is present; sorted by the ``by``
        columns other than ``setting`` (one curve each) and then by bpp.

    Raises:
        ValueError: if columns are missing or an image appears twice for one RD point
            (the table holds several curves per ``by`` group: add the column that
            separates them, e.g. ``condition``, to ``by``).
    """
    by, metrics = list(by), list(metrics)
    missing = [c for c in (IMAGE_COLUMN, *by, *metrics) if c not in df.columns]
    if missing:
        raise ValueError(
            f"per-image table lacks columns {missing} (it has {list(df.columns)}); "
            "pass by=/metrics= naming existing columns, or add them where the table is built"
        )
    if RATE_COLUMN not in metrics:
        raise ValueError(f"metrics must include {RATE_COLUMN!r} (the rate axis), got {metrics}")
    dup = df.duplicated(subset=[*by, IMAGE_COLUMN], keep=False)
    if dup.any():
        example = df.loc[dup, [*by, IMAGE_COLUMN]].iloc[0].to_dict()
        raise ValueError(
            f"{int(dup.sum())} rows repeat an image within one RD point, e.g. {example}; add the column "
            f"that tells them apart (e.g. 'condition' or 'severity') to by={by}, or drop the repeats"
        )
    grouped = df.groupby(by, sort=False, dropna=False)
    table = grouped[metrics].agg(lambda s: s.mean(skipna=skipna))
    table.insert(0, "n_images", grouped[IMAGE_COLUMN].nunique())
    if "ms_ssim" in table.columns:
        # MS-SSIM (dB) = -10 log10(1 - MS-SSIM), of the dataset mean (CompressAI's plots).
        with np.errstate(divide="ignore"):
            table["ms_ssim_db"] = -10.0 * np.log10(1.0 - table["ms_ssim"].astype(float))
    curve_columns = [c for c in by if c != SETTING_COLUMN]
    return table.reset_index().sort_values([*curve_columns, RATE_COLUMN], kind="stable").reset_index(drop=True)


def load_anchors(names: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Published Kodak RD curves shipped with the package (``resources/kodak_rd_anchors.csv``).

    The numbers are CompressAI's ``results/image/kodak/*.json`` (commit 869a9f5): its
    GPU-trained models, the authors' published curves and classic codecs, each a mean
    over the 24 Kodak images of per-image bpp and PSNR-RGB.

    Args:
        names: one anchor name or several (e.g. ``"paper-mbt2018"``); all when None.

    Returns:
        Columns ``anchor``, ``bpp``, ``psnr_rgb`` and ``source`` (which file and codec
        the curve comes from), rows in file order; ``attrs["source"]`` holds the file's
        header text.

    Raises:
        ValueError: if a name is unknown (the message lists the available anchors).
    """
    text = (resources.files("nic_lib") / "resources" / ANCHORS_RESOURCE).read_text(encoding="utf-8")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    described = dict(
        line[len(ANCHOR_LINE_PREFIX) :].split(":", 1) for line in comments if line.startswith(ANCHOR_LINE_PREFIX)
    )
    header = "\n".join(line.lstrip("# ") for line in comments if not line.startswith(ANCHOR_LINE_PREFIX))
    anchors = pd.read_csv(io.StringIO(text), comment="#")
    anchors["source"] = anchors["anchor"].map(lambda a: described.get(a, header).strip())
    available = list(dict.fromkeys(anchors["anchor"]))
    if names is not None:
        wanted = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in wanted if n not in available]
        if unknown:
            raise ValueError(f"unknown anchor(s) {unknown}; available: {available}")
        anchors = anchors[anchors["anchor"].isin(wanted)].reset_index(drop=True)
    anchors.attrs["source"] = header
    return anchors


def _as_columns(group: str | Sequence[str]) -> list[str]:
    return [group] if isinstance(group, str) else list(group)


def _reference_curve(curves, reference, metric, group_cols) -> tuple[np.ndarray, np.ndarray, str]:
    """Rates and distortions of the reference: a measured curve first, else a published anchor."""
    key = (reference,) if not isinstance(reference, tuple) else reference
    if len(key) == len(group_cols):
        mask = np.logical_and.reduce([curves[c] == k for c, k in zip(group_cols, key)])
        if mask.any():
            ref = curves[mask]
            return ref[RATE_COLUMN].to_numpy(), ref[metric].to_numpy(), "/".join(map(str, key))
    anchors = load_anchors()
    anchor_names = list(dict.fromkeys(anchors["anchor"]))
    if isinstance(reference, str) and reference in anchor_names:
        if metric != ANCHOR_METRIC:
            raise ValueError(
                f"published anchors give {ANCHOR_METRIC} only, not {metric!r}; "
                f"use metric={ANCHOR_METRIC!r} or a measured curve as reference"
            )
        ref = anchors[anchors["anchor"] == reference]
        return ref[RATE_COLUMN].to_numpy(), ref[ANCHOR_METRIC].to_numpy(), f"{reference} (published)"
    measured = curves[group_cols].drop_duplicates().itertuples(index=False, name=None)
    raise ValueError(
        f"reference {reference!r} is neither a measured curve {[k if len(k) > 1 else k[0] for k in measured]} "
        f"(matched on {group_cols}) nor a published anchor {anchor_names}"
    )


def bd_rate_table(
    curves: pd.DataFrame,
    reference: str | tuple,
    metric: str = "psnr_rgb",
    group: str | Sequence[str] = "codec",
) -> pd.DataFrame:
    """BD-rate and BD-distortion of every RD curve against one reference curve.

    Args:
        curves: RD points, e.g. from :func:`rd_table`, with ``bpp``, ``metric`` and the
            ``group`` columns.
        reference: a measured curve (a value of ``group``; a tuple of values when
            ``group`` has several columns) or a published anchor name from
            :func:`load_anchors`. A measured curve wins when both match.
        metric: the quality column, in dB (``psnr_rgb`` or ``ms_ssim_db``).
        group: column(s) whose values identify one curve, e.g. ``("codec", "condition")``.

    Returns:
        One row per curve: the ``group`` columns, ``reference``, ``metric``,
        ``bd_rate_percent`` (negative = fewer bits than the reference), ``bd_distortion``
        (BD-PSNR in dB for ``psnr_rgb``; positive = better), ``overlap`` (shared fraction
        of the two distortion ranges) and ``note`` (why a value is NaN or less reliable;
        empty otherwise). A BD value is NaN when the curves do not overlap on its axis.

    Raises:
        ValueError: if columns are missing, the reference is unknown, or a curve is
            invalid for BD metrics (too few points, not monotone: see :func:`bd_rate`).
    """
    group_cols = _as_columns(group)
    missing = [c for c in (*group_cols, RATE_COLUMN, metric) if c not in curves.columns]
    if missing:
        raise ValueError(f"RD table lacks columns {missing} (it has {list(curves.columns)}); build it with rd_table")
    ref_rate, ref_dist, ref_label = _reference_curve(curves, reference, metric, group_cols)
    rows = []
    for key, curve in curves.groupby(group_cols, sort=False, dropna=False):
        rate, dist = curve[RATE_COLUMN].to_numpy(), curve[metric].to_numpy()
        row = {**dict(zip(group_cols, key)), "reference": ref_label, "metric": metric}
        notes = []
        try:
            for column, bd in (("bd_rate_percent", bd_rate), ("bd_distortion", bd_psnr)):
                try:
                    row[column] = bd(ref_rate, ref_dist, rate, dist)
                except CurvesDoNotOverlapError as err:
                    row[column] = float("nan")
                    notes.append(str(err).split(";")[0])
        except ValueError as err:
            raise ValueError(
                f"curve {dict(zip(group_cols, key))}: {err}. If the table holds several curves per "
                f"{group_cols} (e.g. one per condition), pass group= with the column that separates them"
            ) from err
        row["overlap"] = _overlap(np.asarray(ref_dist, float), np.asarray(dist, float))[2]
        if not notes and row["overlap"] < MIN_OVERLAP:
            share = f"{row['overlap']:.0%}"
            notes.append(f"curves share only {share} of their {metric} range; the BD value describes that part only")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)


def bd_against_baselines(curves: pd.DataFrame, test: str, baselines: dict[str, str],
                         metric: str = "psnr_rgb", test_command: str = "") -> pd.DataFrame:
    """BD-rate of one curve against each baseline, or why it cannot be measured yet.

    A BD-rate exists only where both curves have :data:`MIN_POINTS` points and share a
    range of rates and of quality; a comparison that lacks one says so instead of
    inventing a number (a baseline not yet trained is named with the command that trains
    it). BD-rate itself is :func:`bd_rate` over the full curves (it integrates over the
    quality range both cover).

    Args:
        curves: RD points (:func:`rd_table`), one curve per ``codec``.
        test: the ``codec`` under test (e.g. PQ-MIM's curve).
        baselines: ``{codec: command that makes it}``; a codec absent from ``curves`` is
            reported as missing with its command.
        metric: quality column in dB.
        test_command: what adds rate points to the test curve (named when it has too few).

    Returns:
        One row per baseline: ``baseline``, ``test``, ``test_bpp`` and ``baseline_bpp``
        (``"lo–hi"`` or empty), ``shared_bpp`` (the common rate interval, empty when none),
        ``bd_rate_percent`` (NaN unless measured), ``status`` (``"measured"`` or
        ``"not measured: <reason>"``) and ``command`` (what would fill the gap; empty when
        measured).
    """
    def span(c):
        return (float(c[RATE_COLUMN].min()), float(c[RATE_COLUMN].max())) if len(c) else None

    t = curves[curves["codec"] == test].sort_values(RATE_COLUMN)
    rows = []
    for label, command in baselines.items():
        b = curves[curves["codec"] == label].sort_values(RATE_COLUMN)
        ts, bs = span(t), span(b)
        shared = (max(ts[0], bs[0]), min(ts[1], bs[1])) if ts and bs else None
        shared = shared if shared and shared[0] < shared[1] else None
        bd, reason, fix = float("nan"), "", command
        if not len(b):
            reason = f"{label} not trained yet"
        elif len(t) < MIN_POINTS or len(b) < MIN_POINTS:
            short = test if len(t) < MIN_POINTS else label
            fix = test_command if short == test else command
            reason = f"{short} has {min(len(t), len(b))} rate points; BD-rate needs {MIN_POINTS}"
        elif shared is None:
            reason = f"rates do not overlap ({test} {ts[0]:.3f}–{ts[1]:.3f} bpp, {label} {bs[0]:.3f}–{bs[1]:.3f})"
        else:
            try:
                bd = bd_rate(b[RATE_COLUMN], b[metric], t[RATE_COLUMN], t[metric])
            except CurvesDoNotOverlapError:
                reason = f"{metric} ranges do not overlap"
        rows.append({"baseline": label, "test": test,
                     "test_bpp": f"{ts[0]:.3f}–{ts[1]:.3f}" if ts else "",
                     "baseline_bpp": f"{bs[0]:.3f}–{bs[1]:.3f}" if bs else "",
                     "shared_bpp": f"{shared[0]:.3f}–{shared[1]:.3f}" if shared else "",
                     "bd_rate_percent": bd, "status": "not measured: " + reason if reason else "measured",
                     "command": fix if reason else ""})
    return pd.DataFrame(rows)


#: The published curve of the same codec, for checking that a measured classic codec is
#: configured at least as well as the published run (codec name -> anchor name).
PUBLISHED_TWIN = {
    "jpeg": "jpeg-pillow",
    "webp": "webp-pillow",
    "jpeg2000": "jpeg2000-ffmpeg",
    "bpg": "bpg444-x265",
    "vtm": "vtm",
}


def published_comparison(curves: pd.DataFrame, twins: dict[str, str] = PUBLISHED_TWIN) -> pd.DataFrame:
    """BD-rate / BD-PSNR of each measured codec against the published curve of the same codec.

    Args:
        curves: RD curves with columns codec, bpp, psnr_rgb (e.g. from :func:`rd_table`).
        twins: codec name -> anchor name; codecs absent from ``curves`` are skipped.

    Returns:
        One row per codec: codec, published, bd_rate_% (negative = ours needs fewer bits),
        bd_psnr_dB, ours_bpp and published_bpp (the ranges), note (non-overlap or partial
        overlap, as in :func:`bd_rate_table`).
    """
    anchors = load_anchors([a for c, a in twins.items() if (curves["codec"] == c).any()] or None)
    rows = []
    for codec_name, anchor_name in twins.items():
        ours = curves[curves["codec"] == codec_name]
        if ours.empty:
            continue
        anchor = anchors[anchors["anchor"] == anchor_name]
        bd = bd_rate_table(ours, reference=anchor_name).iloc[0]
        rows.append(
            {
                "codec": codec_name,
                "published": anchor_name,
                "bd_rate_%": bd["bd_rate_percent"],
                "bd_psnr_dB": bd["bd_distortion"],
                "ours_bpp": f"{ours['bpp'].min():.3f}-{ours['bpp'].max():.3f}",
                "published_bpp": f"{anchor['bpp'].min():.3f}-{anchor['bpp'].max():.3f}",
                "note": bd["note"],
            }
        )
    return pd.DataFrame(rows, columns=["codec", "published", "bd_rate_%", "bd_psnr_dB", "ours_bpp", "published_bpp", "note"])
