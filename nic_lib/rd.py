"""Rate-distortion analysis: RD tables, BD-rate / BD-PSNR, RD plots and published Kodak anchors.

The path through this module::

    per-image table (image, codec, setting, bpp, psnr_rgb, ms_ssim)
        │ rd_table()             mean over images, one row per codec x setting
        ▼
    RD curves ──► bd_rate_table() BD-rate / BD-PSNR against a reference curve or anchor
        │
        ├──────► plot_rd()        seaborn RD plot, published anchors dashed in grey
        │
        └──────► matched_rate_delta() / quality_gap_at_rate(): quality at equal rate, for
                 curves too short or too far apart for a BD value (learning curves, ablations)

BD-rate and BD-PSNR are computed by the maintained ``bjontegaard`` package (FAU-LMS);
this module only validates the curves and names errors. Plot styles (one colour and
marker per codec, axis limits from the data) and saving are :mod:`nic_lib.plotting`'s job;
that is the only project module imported here.

Three files: this one (the RD plots), the BD metrics, RD tables and published anchors in
:mod:`nic_lib.rd_metrics`, quality at equal rate in :mod:`nic_lib.rd_matched`; their names are
re-exported here, so ``nic_lib.rd`` is the one import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from nic_lib import plotting
from nic_lib.rd_metrics import (  # noqa: F401  re-exported: import them from here
    ANCHOR_LINE_PREFIX,
    ANCHOR_METRIC,
    ANCHORS_RESOURCE,
    bd_against_baselines,
    BD_METHOD,
    bd_psnr,
    bd_rate,
    bd_rate_table,
    CurvesDoNotOverlapError,
    IMAGE_COLUMN,
    load_anchors,
    MIN_OVERLAP,
    MIN_POINTS,
    published_comparison,
    PUBLISHED_TWIN,
    RATE_COLUMN,
    RD_GROUP,
    RD_METRICS,
    rd_table,
    SETTING_COLUMN,
    SKIP_NAN,
)
from nic_lib.rd_matched import (  # noqa: F401  re-exported: import them from here
    learning_curve,
    MATCH_POINTS,
    matched_rate_delta,
    quality_gap_at_rate,
)


#: Axis labels for the columns rd_table writes.
AXIS_LABELS = {
    "bpp": "bits per pixel (bpp)",
    "psnr_rgb": "PSNR-RGB (dB)",
    "ms_ssim_db": "MS-SSIM (dB)",
    "ms_ssim": "MS-SSIM",
}
#: Published anchors: dashed, grey (so measured curves keep the colours), one marker each.
ANCHOR_LINESTYLE = "--"
ANCHOR_GREYS = (0.15, 0.6)  # darkest and lightest grey level, spread over the anchors drawn
ANCHOR_MARKERS = ("s", "^", "D", "v", "P", "X", "*", "<", ">", "h")
#: Marker for measured curves: every RD point is a real encode, so each one is shown.
MEASURED_MARKER = "o"
#: Figure size when plot_rd makes its own axes: one column of a two-column paper, enlarged.
FIGSIZE = (6.0, 4.5)


# --------------------------------------------------------------------------- RD plot


def plot_rd(
    curves: pd.DataFrame,
    x: str = "bpp",
    y: str = "psnr_rgb",
    hue: str | None = "codec",
    anchors: str | Iterable[str] | pd.DataFrame | None = None,
    ax: plt.Axes | None = None,
    **lineplot_kwargs,
) -> plt.Axes:
    """RD plot of measured curves, with published anchors dashed in grey for comparison.

    Measured curves are drawn by ``seaborn.lineplot`` (one line per ``hue`` value, points
    joined in ``x`` order, no aggregation); with ``hue="codec"`` each codec gets its colour
    and marker of :data:`nic_lib.plotting.CODEC_STYLES`, the same in every notebook.
    Anchors are labelled "NAME (published)". The axis limits are those of the measured
    curves (:func:`nic_lib.plotting.limit_axes`): an anchor reaching past them is clipped,
    it does not stretch the axes. Style (call :func:`nic_lib.plotting.set_style` first) and
    saving (:func:`nic_lib.plotting.save_figure`) are left to the caller.

    Args:
        curves: RD points, e.g. from :func:`rd_table`.
        x, y: columns for the axes (labelled "bits per pixel (bpp)", "PSNR-RGB (dB)",
            "MS-SSIM (dB)" for ``ms_ssim_db``; other columns by name).
        hue: column giving one colour per curve.
        anchors: published anchor name(s) for :func:`load_anchors`, or a DataFrame it
            returned; drawn only for ``x="bpp"`` and ``y="psnr_rgb"``.
        ax: axes to draw on; a new figure of size :data:`FIGSIZE` when None.
        **lineplot_kwargs: passed to ``seaborn.lineplot`` (e.g. ``style="condition"``).

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: if anchors are asked for on axes other than bpp / psnr_rgb, or an
            anchor name is unknown.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=FIGSIZE)
    lineplot_kwargs.setdefault("estimator", None)
    if hue == "codec" and "style" not in lineplot_kwargs and "marker" not in lineplot_kwargs:
        labels = list(dict.fromkeys(curves[hue]))
        lineplot_kwargs.setdefault("palette", plotting.codec_palette(labels))
        # style = hue: one legend entry per codec, with its colour and its marker
        lineplot_kwargs.update(style=hue, markers=plotting.codec_markers(labels), dashes=False)
    else:
        lineplot_kwargs.setdefault("marker", MEASURED_MARKER)
    sns.lineplot(data=curves, x=x, y=y, hue=hue, sort=True, ax=ax, **lineplot_kwargs)
    plotting.limit_axes(ax, x=curves[x], y=curves[y], x_floor=0.0 if x == RATE_COLUMN else None)
    if anchors is not None:
        if (x, y) != (RATE_COLUMN, ANCHOR_METRIC):
            raise ValueError(
                f"published anchors give {RATE_COLUMN} and {ANCHOR_METRIC} only, not ({x}, {y}); "
                f"plot x={RATE_COLUMN!r}, y={ANCHOR_METRIC!r} or pass anchors=None"
            )
        table = anchors if isinstance(anchors, pd.DataFrame) else load_anchors(anchors)
        names = list(dict.fromkeys(table["anchor"]))
        greys = np.linspace(*ANCHOR_GREYS, num=len(names))
        for i, name in enumerate(names):
            points = table[table["anchor"] == name].sort_values(RATE_COLUMN)
            ax.plot(
                points[RATE_COLUMN],
                points[ANCHOR_METRIC],
                linestyle=ANCHOR_LINESTYLE,
                color=str(greys[i]),
                marker=ANCHOR_MARKERS[i % len(ANCHOR_MARKERS)],
                label=f"{name} (published)",
            )
        ax.legend(title=hue)
        plotting.limit_axes(ax, x=curves[x], y=curves[y], x_floor=0.0 if x == RATE_COLUMN else None)
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    return ax


def plot_rd_panels(
    curves: pd.DataFrame,
    panels: Mapping[str, Sequence[str]],
    y: str = "psnr_rgb",
    anchors: Mapping[str, str | Iterable[str] | pd.DataFrame] | None = None,
    limits_from: Mapping[str, Sequence[str]] | None = None,
    panel_size: tuple[float, float] = (6.0, 4.8),
) -> plt.Figure:
    """RD curves split into panels: few curves per panel, each panel's axes set by its data.

    Fifteen curves on one axes cannot be told apart; the same codec keeps its colour and
    marker in every panel (:func:`plot_rd`), so a codec drawn in two panels (a reference)
    reads the same in both.

    Args:
        curves: RD points (:func:`rd_table`) of every codec drawn.
        panels: panel title -> codecs drawn in it (codecs absent from ``curves`` are
            skipped; an empty panel is left out).
        y: quality column.
        anchors: panel title -> published anchors for that panel (see :func:`plot_rd`).
        limits_from: panel title -> the codecs whose points set that panel's axis limits
            (default: all its codecs). A reference drawn for comparison (JPEG 2000 beside
            a learned family) is then clipped to the family's range like an anchor.
        panel_size: inches per panel.

    Returns:
        The figure; each panel has its own legend, below it.
    """
    present = set(curves["codec"])
    shown = {t: [c for c in codecs if c in present] for t, codecs in panels.items()}
    shown = {t: c for t, c in shown.items() if c}
    if not shown:
        raise ValueError(f"none of the panels' codecs {sorted({c for v in panels.values() for c in v})} "
                         f"is in the curves ({sorted(present)})")
    fig, axes = plt.subplots(1, len(shown), figsize=(panel_size[0] * len(shown), panel_size[1]), squeeze=False)
    for ax, (title, codecs) in zip(axes[0], shown.items()):
        plot_rd(curves[curves["codec"].isin(codecs)], y=y, anchors=(anchors or {}).get(title), ax=ax)
        ax.set_title(title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
        focus = curves[curves["codec"].isin((limits_from or {}).get(title, codecs))]
        if len(focus):
            plotting.limit_axes(ax, x=focus[RATE_COLUMN], y=focus[y], x_floor=0.0)
    return fig
