import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from nic_lib import plotting  # noqa: E402


def test_only_the_cpu_profile_writes_committed_figures(tmp_path):
    assert plotting.figure_dir("00_x", "cpu") == plotting.PAPER_FIGURES / "00_x"
    for profile in ("smoke", "full"):
        assert plotting.PAPER_FIGURES not in plotting.figure_dir("00_x", profile).parents
    assert plotting.figure_dir("00_x", "cpu", override=tmp_path) == tmp_path


def test_save_figure_writes_each_format_and_no_temp_files(tmp_path):
    plotting.use_figure_dir(tmp_path / "figs")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = plotting.save_figure(fig, "fig1_line")
    plt.close(fig)
    assert [p.name for p in paths] == ["fig1_line.png", "fig1_line.pdf"]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["fig1_line.pdf", "fig1_line.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pdf_is_byte_identical_when_regenerated(tmp_path):
    plotting.use_figure_dir(tmp_path)
    blobs = []
    for _ in range(2):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [2, 0, 1])
        (pdf,) = plotting.save_figure(fig, "same", formats=("pdf",))
        plt.close(fig)
        blobs.append(pdf.read_bytes())
    assert blobs[0] == blobs[1]


def test_unsafe_figure_name_is_rejected(tmp_path):
    plotting.use_figure_dir(tmp_path)
    fig = plt.figure()
    with pytest.raises(ValueError, match="letters, digits"):
        plotting.save_figure(fig, "../escape")
    plt.close(fig)


# --------------------------------------------------------------------------- one palette, data limits

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nic_lib import rd  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.py"))


def test_every_codec_has_its_own_colour():
    colours = [c for c, _ in plotting.CODEC_STYLES.values()]
    assert len(set(colours)) == len(colours)
    assert not set(colours) & set(plotting.RESERVE_COLOURS)


def test_a_codec_keeps_its_style_whatever_the_notebook_calls_it():
    for label in ("mbt2018-q3", "mbt2018 (cpu)", "mbt2018 q2", "mbt2018"):
        assert plotting.codec_style(label) == plotting.codec_style("mbt2018")
    assert plotting.codec_style("bmshj2018-hyperprior-q3") == plotting.codec_style("bmshj2018-hyperprior")
    assert plotting.codec_key("pq-mim M4 K256 (smoke)") == "pq-mim M4"
    assert plotting.codec_key("pq-mim (S=10)") == "pq-mim"
    # a new label is not drawn as an old one, and keeps its colour from call to call
    assert plotting.codec_style("mbt2018-M192")["color"] != plotting.codec_style("mbt2018")["color"]
    assert plotting.codec_style("mbt2018-M192") == plotting.codec_style("mbt2018-M192")


def test_two_new_labels_in_one_figure_get_different_colours():
    labels = [f"model-{i}" for i in range(len(plotting.RESERVE_COLOURS))]
    palette = plotting.codec_palette(labels)
    assert len(set(palette.values())) == len(labels)


def _codec_hue_calls(tree):
    """Calls with hue="codec" (or a codec-like hue) that are not rd.plot_rd (which styles itself)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        hue = {k.arg: k.value for k in node.keywords}.get("hue")
        if hue is not None and isinstance(hue, ast.Constant) and hue.value in ("codec", "model") \
                and not func.endswith("plot_rd"):
            yield func, node


def test_every_codec_coloured_plot_in_the_notebooks_uses_the_one_palette():
    offenders = []
    for source in NOTEBOOKS:
        tree = ast.parse(source.read_text())
        # names bound to a codec palette (palette = plotting.codec_palette(...)) count as it
        bound = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and "codec_palette" in ast.unparse(node.value)
                 for t in node.targets if isinstance(t, ast.Name)}
        for func, node in _codec_hue_calls(tree):
            palette = {k.arg: k.value for k in node.keywords}.get("palette")
            if palette is None or not ("codec_palette" in ast.unparse(palette) or ast.unparse(palette) in bound):
                offenders.append(f"{source.name}: {func}(hue=...) line {node.lineno}")
    assert not offenders, "codec colours must come from nic_lib.plotting.codec_palette: " + "; ".join(offenders)


def test_data_limits_hold_the_data_plus_a_margin():
    low, high = plotting.data_limits([1.0, 2.0, np.nan, 3.0])
    assert low == pytest.approx(0.9) and high == pytest.approx(3.1)
    low, high = plotting.data_limits([0.1, 10.0], log=True)
    assert low == pytest.approx(10 ** -1.1) and high == pytest.approx(10 ** 1.1)
    assert plotting.data_limits([0.01, 1.0], floor=0.0)[0] == 0.0
    with pytest.raises(ValueError, match="no finite values"):
        plotting.data_limits([np.nan])


def test_rd_axes_follow_the_measured_curves_not_the_published_anchors():
    # measured points at 0.2-0.8 bpp and 28-33 dB; the anchor reaches 1.6 bpp and 40 dB
    curves = pd.DataFrame({"codec": "ours", "setting": [1, 2, 3, 4], "bpp": [0.2, 0.4, 0.6, 0.8],
                           "psnr_rgb": [28.0, 30.0, 32.0, 33.0]})
    ax = rd.plot_rd(curves, anchors=["compressai-mbt2018"])
    assert ax.get_ylim()[1] <= 33.0 + 0.05 * 5 + 1e-9
    assert ax.get_xlim()[1] <= 0.8 + 0.05 * 0.6 + 1e-9
    # and the codec is drawn in its own colour and marker
    line = next(line for line in ax.get_lines() if line.get_label() == "ours" or line.get_linestyle() != "--")
    assert line.get_marker() == plotting.codec_style("ours")["marker"]
    plt.close(ax.figure)


def test_signed_labels_never_read_minus_zero():
    assert plotting.signed_label(-0.04) == "0.0"
    assert plotting.signed_label(0.26) == "+0.3"
    assert plotting.signed_label(-1.26) == "-1.3"
    assert plotting.signed_label(float("nan")) == "n/a"


def test_spectrum_grid_shares_one_unsaturated_scale_and_switches_off_empty_cells():
    low, high = np.full((8, 8), 1e-2), np.full((8, 8), 1e3)
    limits = plotting.log_spectrum_limits([low, None, high])
    assert limits == pytest.approx((-2.0, 3.0), abs=1e-3)  # every value inside: nothing saturates
    fig = plt.figure()
    axes = plotting.spectrum_grid(fig, [[low, high], [None]], limits, "log10 power", col_titles=["a", "b"],
                                  row_labels=["r1", "r2"])
    assert axes.shape == (2, 2)
    assert not axes[1, 0].axison and not axes[1, 1].axison  # None and the missing cell
    images = [ax.images[0] for ax in axes[0]]
    assert all(im.get_clim() == pytest.approx(limits) for im in images)
    assert axes[0, 0].get_title() == "a" and axes[0, 0].get_ylabel() == "r1"
    assert len(fig.axes) == 5  # 4 panels and one colourbar
    plt.close(fig)
