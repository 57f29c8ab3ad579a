"""The vocabulary and the rules of a claims table: verdicts, :class:`Claim`, rows, the
markdown table, and the generic rules (:func:`fewer_bits`, :func:`on_par_or_better`,
:func:`all_positive`, shift effects). Part of :mod:`nic_lib.claims`, whose docstring says what
a rule compares; import from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nic_lib import rd


HOLDS = "holds"
CONTRADICTS = "contradicts"
NOT_MEASURED = "not measured"
#: The three verdicts a claim can get.
VERDICTS = (HOLDS, CONTRADICTS, NOT_MEASURED)
#: Columns of a claims table, in order.
COLUMNS = ("claim", "paper", "measured here", "verdict", "rule", "likely cause")

#: "On par" in PSNR at equal rate: 0.5 dB is about 10% of the bits at ~6 dB per doubling
#: of the rate, the size of gap RD papers call comparable.
ON_PAR_DB = 0.5
#: A shift changes a codec's standing when its quality gap to the reference moves by more
#: than this from the clean images' gap (dB): well above the ~0.05 dB noise of a 24-image mean.
SHIFT_EFFECT_DB = 0.25


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, in words, with what the paper reports and why it may not hold here.

    Attributes:
        text: the claim, as the paper states it.
        paper: the paper's number or wording (for scale; the verdict compares directions).
        cause: likely cause when this project's numbers contradict it.
    """

    text: str
    paper: str
    cause: str = ""


def row(claim: Claim, measured: str, verdict: str, rule: str) -> dict:
    """One row of a claims table; the cause is kept only where the claim does not hold."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    cause = claim.cause if verdict == CONTRADICTS else ""
    return dict(zip(COLUMNS, (claim.text, claim.paper, measured, verdict, rule, cause)))


def table(rows: Sequence[dict]) -> pd.DataFrame:
    """The claims table (:data:`COLUMNS`) of some rows."""
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def to_markdown(claims: pd.DataFrame) -> str:
    """A Markdown table of a claims table (the verdict in bold), for ``IPython.display.Markdown``."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for _, r in claims.iterrows():
        values = [cell(r[c]) for c in COLUMNS]
        values[COLUMNS.index("verdict")] = f"**{values[COLUMNS.index('verdict')]}**"
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- rules


def fewer_bits(claim: Claim, curves: pd.DataFrame, test: str, reference: str, metric: str = "psnr_rgb") -> dict:
    """Rule: ``test`` needs fewer bits than ``reference`` for the same quality (BD-rate < 0).

    Args:
        claim: the claim.
        curves: RD points with columns ``codec``, ``bpp`` and ``metric`` (e.g. from
            :func:`nic_lib.rd.rd_table`); a published anchor name may be the reference.
        test, reference: codec names (values of ``codec``).
        metric: the quality axis (dB).

    Returns:
        A row: holds if BD-rate < 0, contradicts if > 0, not measured when a curve is
        missing, too short, or the curves share no quality range.
    """
    rule = f"BD-rate of {test} against {reference} ({metric}): holds if < 0"
    present = set(curves["codec"]) if len(curves) else set()
    missing = [c for c in (test, reference) if c not in present]
    if reference in missing and reference in set(rd.load_anchors()["anchor"]):
        missing.remove(reference)  # a published curve
    if missing:
        return row(claim, f"no curve for {', '.join(missing)} in this run", NOT_MEASURED, rule)
    try:
        bd = rd.bd_rate_table(curves[curves["codec"].isin([test, reference])], reference=reference, metric=metric)
    except ValueError as err:
        return row(claim, f"no BD-rate: {str(err).split(';')[0]}", NOT_MEASURED, rule)
    hit = bd[bd["codec"] == test].iloc[0]
    value = hit["bd_rate_percent"]
    if not np.isfinite(value):
        return row(claim, f"no BD-rate ({hit['note']})", NOT_MEASURED, rule)
    words = "fewer" if value < 0 else "more"
    measured = f"{test}: {abs(value):.1f}% {words} bits than {reference}"
    if hit["overlap"] < rd.MIN_OVERLAP:
        measured += f" (curves share {hit['overlap']:.0%} of their range)"
    return row(claim, measured, HOLDS if value < 0 else CONTRADICTS, rule)


def on_par_or_better(claim: Claim, ref_rate, ref_quality, rate, quality, test: str, reference: str,
                     tolerance_db: float = ON_PAR_DB) -> dict:
    """Rule: at equal rate, ``test`` is within ``tolerance_db`` of ``reference`` or better.

    Uses :func:`nic_lib.rd.matched_rate_delta` (the mean PSNR difference over the shared
    rate range), which needs only two points per curve.

    Returns:
        A row: holds if the mean difference >= −``tolerance_db``, contradicts below it,
        not measured when the curves share no rate range.
    """
    rule = f"mean PSNR difference at equal bpp over the shared range: holds if >= −{tolerance_db:g} dB"
    delta, low, high = rd.matched_rate_delta(ref_rate, ref_quality, rate, quality)
    if not np.isfinite(delta):
        cover = (f"{test} covers {np.nanmin(rate):.3g}–{np.nanmax(rate):.3g} bpp, {reference} "
                 f"{np.nanmin(ref_rate):.3g}–{np.nanmax(ref_rate):.3g}" if len(rate) and len(ref_rate)
                 else f"a curve is missing")
        return row(claim, f"curves share no rate range ({cover})", NOT_MEASURED, rule)
    measured = f"{test} {delta:+.2f} dB vs {reference} over {low:.3g}–{high:.3g} bpp"
    return row(claim, measured, HOLDS if delta >= -tolerance_db else CONTRADICTS, rule)


def all_positive(claim: Claim, values: Mapping[str, float], what: str, rule: str, fmt: str = "{:+.1%}") -> dict:
    """Rule: every value is > 0 (e.g. the bits an entropy model saves at each rate point).

    Args:
        claim: the claim.
        values: label -> value (NaN = not measured for that label).
        what: what the values are, for the ``measured here`` text.
        rule: the rule in words (shown in the table).
        fmt: format of one value.

    Returns:
        A row: holds if every value > 0, contradicts if any is <= 0, not measured when
        there are no finite values.
    """
    finite = {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}
    if not finite:
        return row(claim, f"no {what} measured", NOT_MEASURED, rule)
    measured = f"{what}: " + ", ".join(f"{k} {fmt.format(v)}" for k, v in finite.items())
    return row(claim, measured, HOLDS if all(v > 0 for v in finite.values()) else CONTRADICTS, rule)


def not_measured(claim: Claim, why: str, rule: str = "—") -> dict:
    """A claim this project has no measurement for (``why`` names what is missing)."""
    return row(claim, why, NOT_MEASURED, rule)


def shift_effects(deltas: pd.DataFrame, group: str = "group", clean: str = "clean") -> pd.Series:
    """Mean change of a codec's quality gap to the reference under shift, per frequency group.

    Args:
        deltas: one row per condition with ``group`` (``clean`` for the clean images) and
            ``delta_db`` (codec minus reference, e.g. :func:`nic_lib.bench.delta_at_setting`).

    Returns:
        group -> mean over its conditions of ``delta_db − delta_db(clean)`` (dB): > 0 where
        the shift helps the codec against the reference. NaN cells are left out; an empty
        Series when the clean gap is unknown.
    """
    clean_rows = deltas.loc[deltas[group] == clean, "delta_db"].dropna()
    if clean_rows.empty:
        return pd.Series(dtype=float)
    shifted = deltas[(deltas[group] != clean) & deltas["delta_db"].notna()]
    return (shifted.groupby(group, sort=False)["delta_db"].mean() - float(clean_rows.mean())).rename("shift_effect_db")


def more_robust_under(claim: Claim, effects: pd.Series, target: str, codec: str, reference: str,
                      tolerance_db: float = SHIFT_EFFECT_DB) -> dict:
    """Rule: under ``target``-frequency shift the codec gains on the reference, relative to clean.

    Returns:
        A row: holds if the mean effect of :func:`shift_effects` for ``target`` >
        ``tolerance_db``, contradicts if below it, not measured without that group.
    """
    rule = (f"{codec}'s PSNR gap to {reference} under {target}-frequency shift minus its clean gap: "
            f"holds if > {tolerance_db:g} dB")
    if target not in effects.index or not np.isfinite(effects[target]):
        return row(claim, f"no {target}-frequency condition with both codecs in this run", NOT_MEASURED, rule)
    value = float(effects[target])
    return row(claim, f"{value:+.2f} dB relative to clean ({codec} vs {reference})",
               HOLDS if value > tolerance_db else CONTRADICTS, rule)


def depends_on_shift(claim: Claim, effects: pd.Series, codec: str, reference: str,
                     tolerance_db: float = SHIFT_EFFECT_DB) -> dict:
    """Rule: the shift's effect on the codec's standing differs between frequency groups.

    Returns:
        A row: holds if the group effects of :func:`shift_effects` span more than
        ``2 × tolerance_db`` (one group helps, another hurts, or both by clearly different
        amounts), contradicts otherwise, not measured with fewer than two groups.
    """
    rule = (f"{codec} vs {reference}: the gap's change under shift, per frequency group; holds if the "
            f"groups span more than {2 * tolerance_db:g} dB")
    finite = effects.dropna()
    if len(finite) < 2:
        return row(claim, "fewer than two frequency groups measured", NOT_MEASURED, rule)
    measured = ", ".join(f"{g} {v:+.2f} dB" for g, v in finite.items()) + " relative to clean"
    spread = float(finite.max() - finite.min())
    return row(claim, measured, HOLDS if spread > 2 * tolerance_db else CONTRADICTS, rule)


def not_uniformly_better(claim: Claim, deltas: pd.DataFrame, codec: str, reference: str,
                         tolerance_db: float = SHIFT_EFFECT_DB, group: str = "group", clean: str = "clean") -> dict:
    """Rule: some shifted condition takes the codec's standing against the reference below its clean one.

    Judged per condition and relative to the clean gap, so that a codec already behind on
    clean images does not satisfy the claim by that alone.

    Args:
        deltas: as in :func:`shift_effects`; a ``condition`` column (e.g. "defocus_blur 5")
            names the worst condition in the text when present.
    """
    rule = (f"{codec} vs {reference}: holds if some shifted condition lowers the gap by more than "
            f"{tolerance_db:g} dB from its clean value")
    clean_rows = deltas.loc[deltas[group] == clean, "delta_db"].dropna()
    shifted = deltas[(deltas[group] != clean) & deltas["delta_db"].notna()]
    if clean_rows.empty or shifted.empty:
        return row(claim, "no shifted condition with both codecs in this run", NOT_MEASURED, rule)
    change = shifted["delta_db"] - float(clean_rows.mean())
    worst = change.idxmin()
    name = shifted.loc[worst, "condition"] if "condition" in shifted else shifted.loc[worst, group]
    lower = int((change < -tolerance_db).sum())
    measured = (f"{lower} of {len(change)} conditions lower it by more than {tolerance_db:g} dB; worst: {name} "
                f"{change[worst]:+.2f} dB relative to clean")
    return row(claim, measured, HOLDS if change[worst] < -tolerance_db else CONTRADICTS, rule)
