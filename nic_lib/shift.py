"""Shift effects: what a corruption does to a codec, measured against the codec's own clean curve.

Comparing a codec with JPEG 2000 under a corruption mixes two things: how far behind (or
ahead) the codec already is on clean images, and what the shift changes. This module
separates them. For every codec ``k`` and condition (corruption ``c``, severity ``s``) the
codec's corrupted RD curve is compared with **its own clean curve** at matched bpp, once
for each of the OOD-NIC paper's two measures (Lieberman et al. 2023)::

    generalization  G:  ΔG_k(c, s) = mean_r [ PSNR(x̂(c(x)), c(x))(r) − PSNR_clean,k(r) ]
    robustness      R:  ΔR_k(c, s) = mean_r [ PSNR(x̂(c(x)), x)(r)    − PSNR_clean,k(r) ]

where ``PSNR_clean,k(r)`` is the codec's clean curve (on clean images input and clean image
are one, so both measures share it), every curve is the dataset mean per setting,
interpolated linearly in log-bpp (:func:`nic_lib.rd.matched_rate_delta`), and the mean
runs over :data:`nic_lib.rd.MATCH_POINTS` log-spaced rates of the bpp range that the
corrupted and the clean curve share. A BD-PSNR in spirit; BD's polynomial fits need a
monotone curve, and PSNR against the clean image may fall as rate rises (more bits
reproduce more of the noise). ΔG > 0: the corrupted images are easier for the codec than
clean ones at the same rate (a blurred image has less to code); ΔR says what the viewer of
the decoded image loses to the shift, corruption included.

The shift effect has no reference codec in it; the absolute numbers (the codec's gap to a
reference in the same condition, and on clean images) come beside it in the same table
(:func:`shift_effects` with ``reference=``). Per frequency group, :func:`mean_ranks` ranks
the codecs in each condition by their shift effect and averages the ranks.

Written here because no library computes these; :mod:`nic_lib.rd` does the interpolation.
This module imports :mod:`nic_lib.rd` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from nic_lib import rd

#: Generalization: quality against the codec's input (the corrupted image).
GENERALIZATION = "G"
#: Robustness: quality against the clean image.
ROBUSTNESS = "R"
#: measure -> the grid's quality column it reads (nic_lib.bench.COLUMNS).
MEASURES: dict[str, str] = {GENERALIZATION: "psnr_vs_input", ROBUSTNESS: "psnr_vs_clean"}
#: The clean condition's name in the grid (nic_lib.bench.CLEAN).
CLEAN = "clean"
#: Columns of :func:`shift_effects` after the condition columns.
EFFECT_COLUMNS = ("codec", "measure", "metric", "shift_db", "bpp_low", "bpp_high", "reason")
#: Columns added by ``reference=``: the absolute numbers, codec minus reference at matched bpp.
ABSOLUTE_COLUMNS = ("reference", "gap_db", "clean_gap_db", "gap_change_db")


def _curve(points: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    return points["bpp"].to_numpy(np.float64), points[metric].to_numpy(np.float64)


def _no_overlap_reason(shifted: pd.DataFrame, clean: pd.DataFrame, bpp_range) -> str:
    if len(clean) < 2 or len(shifted) < 2:
        return f"{'clean' if len(clean) < 2 else 'corrupted'} curve has fewer than 2 points"
    window = "" if bpp_range is None else f" within {bpp_range[0]:.3g}-{bpp_range[1]:.3g} bpp"
    return (f"corrupted curve spans {shifted['bpp'].min():.3g}-{shifted['bpp'].max():.3g} bpp, "
            f"clean curve {clean['bpp'].min():.3g}-{clean['bpp'].max():.3g} bpp: no shared rate{window}")


def common_bpp_range(points: pd.DataFrame, by: str = "corruption", clean: str = CLEAN) -> tuple[float, float]:
    """The bpp range every codec's clean curve covers: (max of the lowest rates, min of the highest).

    Raises:
        ValueError: there are no clean rows, or the codecs' clean curves share no range.
    """
    spans = points[points[by] == clean].groupby("codec")["bpp"].agg(["min", "max"])
    if spans.empty:
        raise ValueError(f"no clean rows ({by} == {clean!r}) in the RD points")
    low, high = float(spans["min"].max()), float(spans["max"].min())
    if not low < high:
        raise ValueError(f"the codecs' clean curves share no bpp range ({spans.round(3).to_dict('index')}); "
                         "pass bpp_range=None to compare each codec over its own range")
    return low, high


def resolve_bpp_range(points: pd.DataFrame, setting, by: str = "corruption",
                      clean: str = CLEAN) -> tuple[tuple[float, float] | None, str]:
    """The ``bpp_range`` a notebook's setting asks for, and a line saying what was used.

    ``setting``: ``"common"`` (:func:`common_bpp_range`), None (each codec over its own
    range) or ``(low, high)``. When ``"common"`` finds no range every codec's clean curve
    covers (codecs whose rates do not overlap, e.g. untrained stand-ins at smoke size),
    the result is None, each codec over its own range, and the line says so.
    """
    if setting != "common":
        rng = None if setting is None else (float(setting[0]), float(setting[1]))
        return rng, ("each codec over its own rates" if rng is None
                     else f"{rng[0]:.3g}-{rng[1]:.3g} bpp (set)")
    try:
        rng = common_bpp_range(points, by=by, clean=clean)
    except ValueError as err:
        return None, f"each codec over its own rates: no common range ({err})"
    return rng, f"{rng[0]:.3g}-{rng[1]:.3g} bpp, the range every codec's clean curve covers"


def shift_effects(points: pd.DataFrame, reference: str | None = None, by: Sequence[str] = ("corruption", "severity"),
                  clean: str = CLEAN, measures: Mapping[str, str] = MEASURES,
                  match_points: int = rd.MATCH_POINTS, bpp_range: tuple[float, float] | None = None
                  ) -> pd.DataFrame:
    """Each codec's change from its own clean curve to its corrupted curve, for G and R.

    For codec k, condition (c, s) and measure m in {G, R} with quality column Q_m::

        shift_db = (1/N) Σ_{i=1..N} [ Q_m^{c,s,k}(r_i) − Q^{clean,k}(r_i) ]

    with r_i log-spaced over the bpp range both curves cover, within ``bpp_range`` when
    given (N = ``match_points``), and each curve linear in log(bpp) between its points
    (:func:`nic_lib.rd.matched_rate_delta`). A codec whose corrupted curve is its clean
    curve lowered by 1 dB gets exactly −1.

    The shift effect depends on the rate (a corruption costs a codec more where its own
    error is small), so codecs compared over different ranges are not compared alike:
    :func:`common_bpp_range` gives the range every codec's clean curve covers.

    With ``reference`` the absolute numbers join each row, at matched bpp as well::

        gap_db        = mean_r [ Q_m^{c,s,k}(r) − Q_m^{c,s,ref}(r) ]   (this condition)
        clean_gap_db  = mean_r [ Q^{clean,k}(r) − Q^{clean,ref}(r) ]   (clean images)
        gap_change_db = gap_db − clean_gap_db

    Args:
        points: dataset-level RD points, one row per condition x codec x setting, with the
            ``by`` columns, ``codec``, ``bpp`` and the quality columns of ``measures``
            (:func:`nic_lib.bench.rd_points`; the committed ``rd_points.csv``). The clean
            condition's rows have ``by[0] == clean``.
        reference: a codec name (e.g. ``"jpeg2000"``) for the absolute columns, or None.
        by: the columns naming a condition.
        clean: the value of ``by[0]`` on clean rows.
        measures: measure -> quality column (dB).
        match_points: N, the number of matched rates.
        bpp_range: ``(low, high)``: every mean is limited to these rates (the absolute
            columns too); None: each pair of curves over all the rates it shares.

    Returns:
        One row per corrupted condition x codec x measure: the ``by`` columns, then
        :data:`EFFECT_COLUMNS` (``shift_db`` NaN, with the ``reason``, where the two
        curves share no rate), then :data:`ABSOLUTE_COLUMNS` when ``reference`` is given.

    Raises:
        ValueError: a needed column is missing, there are no clean rows, or the reference
            is not in ``points``.
    """
    by = list(by)
    missing = [c for c in [*by, "codec", "bpp", *measures.values()] if c not in points.columns]
    if missing:
        raise ValueError(f"RD points lack columns {missing} (they have {list(points.columns)}); "
                         "pass nic_lib.bench.rd_points(table) or the committed rd_points.csv")
    is_clean = points[by[0]] == clean
    if not is_clean.any():
        raise ValueError(f"no clean rows ({by[0]} == {clean!r}) in the RD points: the grid must include the clean "
                         "images (nic_lib.bench.Grid always does)")
    if reference is not None and reference not in set(points["codec"]):
        raise ValueError(f"reference codec {reference!r} is not in the RD points (codecs: {sorted(set(points['codec']))})")
    clean_curves = {k: c for k, c in points[is_clean].groupby("codec", sort=False)}
    rows = []
    for key, cond in points[~is_clean].groupby(by, sort=False):
        key = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        ref_cond = cond[cond["codec"] == reference] if reference is not None else None
        for codec, cur in cond.groupby("codec", sort=False):
            base = clean_curves.get(codec, cur.iloc[:0])
            for measure, metric in measures.items():
                # shift_db = mean over r of Q_m^{c,s,k}(r) − Q^{clean,k}(r), both linear in log r
                delta, low, high = rd.matched_rate_delta(*_curve(base, metric), *_curve(cur, metric), match_points,
                                                         bpp_range)
                row = {**key, "codec": codec, "measure": measure, "metric": metric, "shift_db": delta,
                       "bpp_low": low, "bpp_high": high,
                       "reason": "" if np.isfinite(delta) else _no_overlap_reason(cur, base, bpp_range)}
                if reference is not None:
                    ref_clean = clean_curves[reference]
                    # gap = mean over r of Q^{k} − Q^{ref}, in this condition and on clean images
                    gap = rd.matched_rate_delta(*_curve(ref_cond, metric), *_curve(cur, metric), match_points,
                                                bpp_range)[0]
                    clean_gap = rd.matched_rate_delta(*_curve(ref_clean, metric), *_curve(base, metric),
                                                      match_points, bpp_range)[0]
                    row.update(reference=reference, gap_db=gap, clean_gap_db=clean_gap, gap_change_db=gap - clean_gap)
                rows.append(row)
    columns = [*by, *EFFECT_COLUMNS] + (list(ABSOLUTE_COLUMNS) if reference is not None else [])
    return pd.DataFrame(rows, columns=columns)


def mean_ranks(effects: pd.DataFrame, group_of: Mapping[str, str], value: str = "shift_db",
               condition: Sequence[str] = ("corruption", "severity"), complete: bool = True) -> pd.DataFrame:
    """Mean rank of each codec per frequency group and measure, by its shift effect.

    In each condition (c, s) and measure m the codecs are ranked by ``value`` (rank 1 =
    the largest, i.e. the smallest loss; ties share the mean of their ranks), then::

        mean_rank_k(group, m) = (1/|C_g|) Σ_{(c,s) ∈ C_g} rank_k(c, s, m)

    over the group's conditions C_g. With ``complete`` (default) a condition counts only
    when every codec has a value there, so each mean runs over ranks among the same codecs;
    ``n_dropped`` counts the conditions left out.

    Args:
        effects: :func:`shift_effects` output (``measure``, ``codec``, ``value``, the
            ``condition`` columns).
        group_of: corruption -> frequency group (:data:`nic_lib.corruptions.FREQUENCY_GROUP`).
        value: the column ranked (higher is better), e.g. ``shift_db`` or ``gap_db``.
        condition: the columns naming one condition; the first is the corruption.
        complete: keep only conditions where every codec has a finite value.

    Returns:
        One row per measure x group x codec: ``measure``, ``group``, ``codec``,
        ``mean_rank``, ``n_conditions`` (ranks averaged), ``n_dropped``; sorted by measure,
        group (in ``group_of``'s order) and mean rank.

    Raises:
        ValueError: a corruption has no group in ``group_of``.
    """
    condition = list(condition)
    unknown = sorted(set(effects[condition[0]]) - set(group_of))
    if unknown:
        raise ValueError(f"corruptions {unknown} have no frequency group; pass nic_lib.corruptions.FREQUENCY_GROUP")
    d = effects.assign(group=effects[condition[0]].map(group_of))
    keys = ["measure", *condition]
    kept = (d[_complete(d, value, keys)] if complete else d).dropna(subset=[value])
    kept = kept.assign(rank=kept.groupby(keys)[value].rank(ascending=False, method="average"))
    out = kept.groupby(["measure", "group", "codec"], sort=False).agg(mean_rank=("rank", "mean"),
                                                                      n_conditions=("rank", "size")).reset_index()
    all_conditions = d.drop_duplicates(keys).groupby(["measure", "group"]).size()
    used = kept.drop_duplicates(keys).groupby(["measure", "group"]).size()
    dropped = all_conditions.sub(used, fill_value=0).astype(int).rename("n_dropped")
    out = out.merge(dropped.reset_index(), on=["measure", "group"], how="left")
    group_order = {g: i for i, g in enumerate(dict.fromkeys(group_of.values()))}
    out = out.sort_values(["measure", "group", "mean_rank"], key=lambda s: s.map(group_order) if s.name == "group" else s)
    return out.reset_index(drop=True)


def _complete(effects: pd.DataFrame, value: str, keys: Sequence[str]) -> pd.Series:
    """True on rows of conditions where every codec of ``effects`` has a finite ``value``."""
    finite = effects[value].notna().groupby([effects[k] for k in keys]).transform("sum")
    return finite == effects["codec"].nunique()


def group_means(effects: pd.DataFrame, group_of: Mapping[str, str], value: str = "shift_db",
                condition: Sequence[str] = ("corruption", "severity"), complete: bool = True) -> pd.DataFrame:
    """Mean shift effect per measure x frequency group x severity x codec (for a figure).

    mean_{c ∈ group} value_k(c, s, m), over the group's corruptions at severity s; with
    ``complete`` (default) only over conditions where every codec has a value, so that all
    codecs' means run over the same corruptions (as in :func:`mean_ranks`).

    Returns:
        Columns ``measure``, ``group``, ``severity``, ``codec``, ``value`` (the mean) and
        ``n_corruptions`` (how many it averages; rows with none are left out).
    """
    condition = list(condition)
    d = effects.assign(group=effects[condition[0]].map(group_of))
    if complete:
        d = d[_complete(d, value, ["measure", *condition])]
    d = d.dropna(subset=[value])
    return (d.groupby(["measure", "group", *condition[1:], "codec"], sort=False)
            .agg(**{value: (value, "mean"), "n_corruptions": (value, "size")}).reset_index())


def rank_table(ranks: pd.DataFrame, measure: str) -> pd.DataFrame:
    """One measure of :func:`mean_ranks` as a codec x group table of mean ranks (for display)."""
    sub = ranks[ranks["measure"] == measure]
    groups = list(dict.fromkeys(sub["group"]))
    return sub.pivot(index="codec", columns="group", values="mean_rank")[groups]
