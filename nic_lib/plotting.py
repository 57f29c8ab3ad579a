"""Figure style and the one way figures leave a notebook: :func:`save_figure`.

A notebook chooses its output folder once (``nic_lib.notebook_setup.setup``, in the cell
after its parameters, calls :func:`use_figure_dir` with the folder its profile implies, see
:func:`figure_dir`) and then saves every figure
by name. Only the ``cpu`` profile writes into the committed ``paper_figures/<notebook>/``;
``smoke`` and ``full`` runs write under ``build/`` so a CI run never touches committed
figures.

Two rules every figure follows, kept here so that no notebook has to remember them:

- **One colour and one marker per codec, in every notebook** (:data:`CODEC_STYLES`,
  :func:`codec_style`, :func:`codec_palette`, :func:`codec_markers`): JPEG 2000 is the same
  green triangle in notebook 00's RD plot, notebook 02's heat-map legend and notebook 05's
  RD plot, and ``mbt2018-q3`` or ``mbt2018 (cpu)`` is drawn as ``mbt2018``.
- **Axis limits come from the data a figure is about** (:func:`data_limits`,
  :func:`limit_axes`): a published anchor at 3 bpp or a reference line far away does not
  stretch an axis past the measured points.

This module imports nothing else from the project but the leaf ``nic_lib.fileio``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import seaborn as sns

from nic_lib import fileio

#: Repository root (this file lives in <root>/nic_lib/).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Committed figures, one folder per notebook.
PAPER_FIGURES = REPO_ROOT / "paper_figures"
#: Everything generated that is not committed: smoke runs, executed notebooks, caches.
BUILD_DIR = REPO_ROOT / "build"
#: The profile whose figures are committed (see README: profiles).
COMMITTED_PROFILE = "cpu"
#: PNG resolution: sharp on a laptop screen, small enough to commit (~100-300 kB a figure).
PNG_DPI = 150
#: Formats written by save_figure: PNG for the README/notebooks, PDF for papers and slides.
DEFAULT_FORMATS = ("png", "pdf")

_figure_dir: Path | None = None


def set_style() -> None:
    """Apply the project's plot style (seaborn ``whitegrid``, paper context, colour-blind palette)."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def figure_dir(notebook: str, profile: str, override: str | os.PathLike | None = None) -> Path:
    """Where a notebook's figures go for a profile.

    Args:
        notebook: notebook stem, e.g. ``"00_classic_codecs"``.
        profile: ``"smoke"``, ``"cpu"`` or ``"full"``.
        override: an explicit folder (the notebook's ``FIGURE_DIR`` parameter) wins.

    Returns:
        ``paper_figures/<notebook>`` for the ``cpu`` profile, else
        ``build/figures/<profile>/<notebook>``.
    """
    if override:
        return Path(override)
    if profile == COMMITTED_PROFILE:
        return PAPER_FIGURES / notebook
    return BUILD_DIR / "figures" / profile / notebook


def use_figure_dir(path: str | os.PathLike) -> Path:
    """Make ``path`` the folder :func:`save_figure` writes into (created if missing)."""
    global _figure_dir
    _figure_dir = Path(path)
    _figure_dir.mkdir(parents=True, exist_ok=True)
    return _figure_dir


def save_figure(fig: matplotlib.figure.Figure, name: str, formats: tuple[str, ...] = DEFAULT_FORMATS) -> list[Path]:
    """Write ``fig`` as ``<figure dir>/<name>.<fmt>`` for each format, atomically.

    Files are written to a temporary name in the same folder and renamed, so an
    interrupted run never leaves a half-written figure. PDF metadata carries no creation
    date, so regenerating an unchanged figure gives an unchanged file.

    Args:
        fig: the matplotlib figure.
        name: file stem, e.g. ``"fig1_rd_psnr"`` (letters, digits, ``-``, ``_``).
        formats: file formats understood by ``fig.savefig``.

    Returns:
        The written paths.

    Raises:
        RuntimeError: if no figure folder was chosen (call :func:`use_figure_dir` first;
            every notebook's ``notebook_setup.setup`` does).
        ValueError: if ``name`` contains a path separator or other unsafe characters.
    """
    if _figure_dir is None:
        raise RuntimeError(
            "no figure folder chosen: call nic_lib.notebook_setup.setup(notebook, PROFILE, ...) first (a "
            "notebook's cell after its parameters does), or nic_lib.plotting.use_figure_dir(folder)"
        )
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"figure name {name!r} must be non-empty and use only letters, digits, '-' and '_'")
    written = []
    for fmt in formats:
        target = _figure_dir / f"{name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with fileio.atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI, metadata=metadata, bbox_inches="tight")
        written.append(target)
    return written


# --------------------------------------------------------------------------- codec styles

#: One (colour, marker) per codec, used by every notebook (``rd.plot_rd`` applies it by
#: default). Families share a hue so that a figure reads at a glance: the classic codecs
#: earthy/green/purple with angular markers; the joint (context + hyperprior) models reds,
#: the hyperprior-only models blues, the context-only model gold, the parallel contexts
#: orange/pink; PQ-MIM teals. Grey is left to published anchors (dashed, ``rd.plot_rd``).
#: Every colour here is distinct (tests/test_plotting.py checks it).
CODEC_STYLES: dict[str, tuple[str, str]] = {
    # classic codecs (notebook 00)
    "jpeg": ("#8c564b", "s"),
    "webp": ("#bcbd22", "D"),
    "jpeg2000": ("#2ca02c", "^"),
    "avif": ("#9467bd", "v"),
    "bpg": ("#17becf", "P"),
    "vtm": ("#393b79", "X"),
    # mbt2018 family (notebook 01): joint models in reds
    "mbt2018": ("#d62728", "o"),
    "mbt2018-ctx3": ("#fb6a4a", "<"),
    "mbt2018-ctx7": ("#a50f15", ">"),
    "mbt2018-extended": ("#f4a582", "o"),
    "mbt2018-5h": ("#67000d", "o"),
    "mbt2018-protocol": ("#7f2704", "s"),
    "mbt2018-gmm": ("#e377c2", "*"),
    "mbt2018-checkerboard": ("#ff7f0e", "h"),
    "mbt2018-context": ("#b8860b", "p"),
    # hyperprior-only and factorized models in blues
    "mbt2018-mean": ("#1f77b4", "o"),
    "bmshj2018-hyperprior": ("#6baed6", "d"),
    "bmshj2018-factorized": ("#08306b", "8"),
    # PQ-MIM (notebook 05): one curve, its rate points, its perceptual decoder
    "pq-mim": ("#01665e", "H"),
    "pq-mim M2": ("#80cdc1", "H"),
    "pq-mim M4": ("#35978f", "H"),
    "pq-mim M8": ("#003c30", "H"),
    "pq-mim perceptual": ("#c51b7d", "H"),
}
#: Colours for labels not in :data:`CODEC_STYLES` (a new model, another width): picked by
#: a stable hash of the label, so a label keeps its colour from figure to figure.
RESERVE_COLOURS = ("#e7298a", "#66a61e", "#7570b3", "#d95f02", "#1b9e77", "#a6761d",
                   "#e6ab02", "#666666", "#4d004b", "#00441b")
#: Marker of a label not in :data:`CODEC_STYLES`.
RESERVE_MARKER = "o"
#: Suffixes that name a setting or a run of a codec, not another codec: "mbt2018-q3",
#: "mbt2018 q3", "mbt2018 (cpu)", "pq-mim (S=10)", "jpeg2000 (published)".
_SETTING_SUFFIXES = (re.compile(r"\s*\([^()]*\)$"), re.compile(r"[-\s]q\d+$"))
#: "pq-mim M4 K256" and "pq-mim M4 K256 (smoke)" are the M4 rate point of PQ-MIM.
_PQMIM_POINT = re.compile(r"^pq-mim m(\d+)\b.*?(perceptual)?$", re.IGNORECASE)


def codec_key(label: str) -> str:
    """The :data:`CODEC_STYLES` key of a label, or the cleaned label when it has none.

    Strips what names a setting of a codec rather than another codec: a quality suffix
    (``-q3``, `` q3``) and parenthesised notes (``(cpu)``, ``(S=10)``); a PQ-MIM rate point
    ``pq-mim M4 K256`` maps to ``pq-mim M4``.

    Args:
        label: a codec name as it appears in a table's ``codec`` column.

    Returns:
        A key of :data:`CODEC_STYLES` when one matches, else the cleaned label.
    """
    key = str(label).strip()
    if key in CODEC_STYLES:
        return key
    changed = True
    while changed:
        changed = False
        for pattern in _SETTING_SUFFIXES:
            stripped = pattern.sub("", key)
            if stripped != key and stripped:
                key, changed = stripped, True
    if key in CODEC_STYLES:
        return key
    point = _PQMIM_POINT.match(key)
    if point:
        return "pq-mim perceptual" if point.group(2) else f"pq-mim M{point.group(1)}"
    return key


def codec_style(label: str) -> dict[str, str]:
    """``{"color", "marker"}`` of a codec label: its :data:`CODEC_STYLES` entry, else a
    reserve colour chosen by a stable hash of the label (see :func:`codec_key`)."""
    key = codec_key(label)
    if key in CODEC_STYLES:
        colour, marker = CODEC_STYLES[key]
    else:
        digest = int(hashlib.sha256(key.encode()).hexdigest(), 16)
        colour, marker = RESERVE_COLOURS[digest % len(RESERVE_COLOURS)], RESERVE_MARKER
    return {"color": colour, "marker": marker}


def codec_palette(labels: Iterable[str]) -> dict[str, str]:
    """label -> colour for seaborn's ``palette=``; two labels of one figure never share one.

    A label without its own entry whose hashed reserve colour is already taken in this
    figure gets the next free reserve colour (two new labels are still told apart).
    """
    palette, used = {}, set()
    for label in dict.fromkeys(labels):
        colour = codec_style(label)["color"]
        if colour in used and codec_key(label) not in CODEC_STYLES:
            free = [c for c in RESERVE_COLOURS if c not in used]
            colour = free[0] if free else colour
        palette[label] = colour
        used.add(colour)
    return palette


def codec_markers(labels: Iterable[str]) -> dict[str, str]:
    """label -> marker for seaborn's ``markers=`` (with ``style=`` the same column)."""
    return {label: codec_style(label)["marker"] for label in dict.fromkeys(labels)}


# --------------------------------------------------------------------------- axis limits

#: Share of the data range added on each side of an axis (matplotlib's default margin).
AXIS_MARGIN = 0.05


def data_limits(values, margin: float = AXIS_MARGIN, log: bool = False,
                floor: float | None = None) -> tuple[float, float]:
    """Axis limits that hold every finite value, plus a margin: the limits *of the data*.

    Args:
        values: numbers (any nesting numpy flattens); NaN and inf are ignored.
        margin: share of the range added on each side (of the log range when ``log``).
        log: the axis is logarithmic (values <= 0 are ignored, the margin is a factor).
        floor: the lower limit is never below this (e.g. 0 for a rate axis).

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: no finite (positive, when ``log``) value to set limits from.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & ((v > 0) if log else True)]
    if v.size == 0:
        raise ValueError("no finite values to set axis limits from; pass the plotted data")
    low, high = (np.log10(v.min()), np.log10(v.max())) if log else (v.min(), v.max())
    pad = margin * (high - low) if high > low else (0.5 if log else max(abs(high) * 0.05, 0.5))
    low, high = low - pad, high + pad
    if log:
        low, high = 10.0**low, 10.0**high
    if floor is not None:
        low = max(low, floor)
    return float(low), float(high)


def limit_axes(ax: plt.Axes, x=None, y=None, margin: float = AXIS_MARGIN, x_floor: float | None = None,
               y_floor: float | None = None) -> plt.Axes:
    """Set an axis's limits from the data it is about (:func:`data_limits`).

    Lines drawn for comparison (published anchors, reference lines) are then clipped to
    the measured data's range instead of stretching the axes. The scale (linear or log)
    of each axis is read from ``ax``.

    Args:
        ax: the axes.
        x, y: the values the x / y axis must show; None leaves that axis alone.
        margin: as in :func:`data_limits`.
        x_floor, y_floor: lowest allowed limit (e.g. 0 for bpp).

    Returns:
        ``ax``.
    """
    if x is not None:
        ax.set_xlim(*data_limits(x, margin, ax.get_xscale() == "log", x_floor))
    if y is not None:
        ax.set_ylim(*data_limits(y, margin, ax.get_yscale() == "log", y_floor))
    return ax


def signed_label(value: float, digits: int = 1, na: str = "n/a") -> str:
    """A number for a cell annotation: sign shown, no "-0.0", ``na`` for NaN.

    ``signed_label(-0.04) == "0.0"``, ``signed_label(1.26) == "+1.3"``.
    """
    if value is None or not np.isfinite(value):
        return na
    rounded = round(float(value), digits)
    if rounded == 0:
        return f"{0:.{digits}f}"
    return f"{rounded:+.{digits}f}"


# --------------------------------------------------------------------------- grids of spectra

#: Added to a power spectrum before its log10 (grey levels² per bin): keeps an exactly-zero
#: bin (a lossless channel, a DC term a windowed difference lacks) on the scale.
SPECTRUM_FLOOR = 1e-6


def log_spectrum_limits(maps: Iterable[np.ndarray | None], floor: float = SPECTRUM_FLOOR) -> tuple[float, float]:
    """Colour limits holding every value of log10(map + floor) of all maps: one scale, nothing saturated."""
    return data_limits([np.log10(np.asarray(m, dtype=np.float64) + floor).ravel() for m in maps if m is not None],
                       margin=0)


def spectrum_grid(fig, maps: Sequence[Sequence[np.ndarray | None]], limits: tuple[float, float], label: str,
                  col_titles: Sequence[str] = (), row_labels: Sequence[str] = (), cmap: str = "magma",
                  floor: float = SPECTRUM_FLOOR, colorbar: str = "bottom"):
    """Draw rows x columns of centred power spectra as log10 on one colour scale, with its colourbar.

    Each panel shows log10(P + ``floor``) over frequencies −1..1 (Nyquist units, zero at
    the centre); every panel shares ``limits`` (e.g. :func:`log_spectrum_limits` over every
    map the figure, or several figures, compare). A None cell is switched off.

    Args:
        fig: a figure or subfigure (``fig.subfigures``) to draw the grid in.
        maps: rows of (H, W) spectra (or None).
        limits: (vmin, vmax) of log10 power.
        label: the colourbar's label.
        col_titles, row_labels: titles above the first row's panels, labels left of each row.
        cmap: colour map. floor: added before the log.
        colorbar: where the colourbar goes ("bottom", "right", ...).

    Returns:
        The (rows, columns) array of axes.
    """
    n_cols = max(len(r) for r in maps)
    axes = fig.subplots(len(maps), n_cols, squeeze=False)
    image = None
    for i, row in enumerate(maps):
        for j in range(n_cols):
            ax = axes[i, j]
            spec = row[j] if j < len(row) else None
            if spec is None:
                ax.axis("off")
                continue
            image = ax.imshow(np.log10(np.asarray(spec, dtype=np.float64) + floor), cmap=cmap, vmin=limits[0],
                              vmax=limits[1], extent=(-1, 1, -1, 1), interpolation="antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)  # grid lines would be drawn over the spectrum
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=9)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), location=colorbar, label=label, shrink=0.8, aspect=30)
    return axes


#: The two error spectra of a codec under a corruption c (Lieberman et al.), drawn side by
#: side: G, against the codec's input, and R, against the clean image (keys of
#: nic_lib.spectral.condition_spectra's maps).
G_R_KINDS = {"vs_corrupted": "G: x̂(c(x)) − c(x)", "vs_clean": "R: x̂(c(x)) − x"}


def g_r_spectra(fig, columns: Sequence[Mapping[str, Mapping[str, np.ndarray]]], rows: Sequence[str],
                limits: Mapping[str, tuple[float, float]], col_titles: Sequence[str] = (),
                row_labels: Sequence[str] = ()):
    """G error spectra in the left half of a figure, R in the right: one row per condition, one column per map set.

    Args:
        fig: a figure (``layout="constrained"``) split into two subfigures here.
        columns: one map set per column, ``{condition: {"vs_corrupted": G, "vs_clean": R}}``
            (:func:`nic_lib.spectral.condition_spectra`'s maps).
        rows: the conditions to draw, top to bottom.
        limits: ``{"vs_corrupted": (vmin, vmax), "vs_clean": ...}`` of log10 power (one
            scale per half, e.g. :func:`log_spectrum_limits` over every map it compares).
        col_titles: above each half's columns. row_labels: left of the G half's rows.

    Returns:
        The two subfigures (G, R).
    """
    halves = fig.subfigures(1, 2, wspace=0.02)
    for half, (kind, word) in zip(halves, G_R_KINDS.items()):
        grid_maps = [[col[cond][kind] for col in columns] for cond in rows]
        spectrum_grid(half, grid_maps, limits[kind], f"log10 error power, {word[:1]} (grey levels²)",
                      col_titles=col_titles, row_labels=row_labels if half is halves[0] else ())
        half.suptitle(word, fontsize=11)
    return halves


def heatmap_rows(fig, maps: Mapping[str, Mapping[str, np.ndarray]], extent: tuple[float, float, float, float],
                 labels: Mapping[str, str], titles: Mapping[str, str] | None = None, cmap: str = "viridis",
                 colorbar_label: str = "ΔMSE / wave energy"):
    """Rows of Fourier heat maps (one row per measure, one column per codec), one colour scale and colourbar per row.

    Each row's scale covers every value of that row's maps (nothing saturated, codecs
    comparable within a measure); the colourbar sits at the row's right.

    Args:
        fig: a matplotlib figure (``layout="constrained"`` recommended).
        maps: measure -> codec -> (grid, grid) map (:func:`nic_lib.heatmaps.heatmap_array`).
        extent: :func:`nic_lib.heatmaps.heatmap_extent` (cycles per pixel).
        labels: measure -> its name, put in each panel's title.
        titles: codec -> the rest of the panel title (default: the codec).
        cmap: colour map. colorbar_label: the unit of every row's colourbar.

    Returns:
        The (measures, codecs) array of axes.
    """
    codec_names = list(next(iter(maps.values())))
    axes = fig.subplots(len(maps), len(codec_names), squeeze=False, sharex=True, sharey=True)
    for r, (row, (measure, by_codec)) in enumerate(zip(axes, maps.items())):
        lo, hi = data_limits(np.concatenate([np.asarray(m).ravel() for m in by_codec.values()]), margin=0)
        image = None
        for ax, codec in zip(row, codec_names):
            image = ax.imshow(by_codec[codec], cmap=cmap, vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
            ax.grid(False)
            ax.set_title(f"{labels[measure]}\n{(titles or {}).get(codec, codec)}", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.yaxis.set_major_locator(MaxNLocator(4))
            if r == len(axes) - 1:
                ax.set_xlabel("fx (cycles/pixel)")
        row[0].set_ylabel("fy (cycles/pixel)")
        fig.colorbar(image, ax=row.tolist(), label=colorbar_label, shrink=0.9)
    return axes
