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
