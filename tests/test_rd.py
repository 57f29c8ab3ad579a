from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nic_lib import rd  # noqa: E402

#: The shared reference copy the packaged CSV was transcribed from (../shared next to the repository).
SHARED_ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "kodak_rd_anchors.csv"

# A smooth, concave RD curve like a real codec's: PSNR rises ~6 dB per doubling of rate at low rate.
RATE = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
PSNR = np.array([27.0, 29.8, 32.5, 35.1, 37.6])


def test_bd_rate_of_a_curve_against_itself_is_zero():
    assert rd.bd_rate(RATE, PSNR, RATE, PSNR) == pytest.approx(0.0, abs=1e-9)
    assert rd.bd_psnr(RATE, PSNR, RATE, PSNR) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("k", [0.8, 1.25, 2.0])
def test_k_times_the_rate_everywhere_gives_bd_rate_k_minus_one(k):
    # log10(k r) - log10(r) = log10 k at every distortion, so BD = 10^(log10 k) - 1 = k - 1.
    assert rd.bd_rate(RATE, PSNR, k * RATE, PSNR) == pytest.approx((k - 1) * 100, abs=1e-6)


@pytest.mark.parametrize("shift_db", [-0.7, 0.3, 1.5])
def test_constant_psnr_shift_gives_that_bd_psnr(shift_db):
    assert rd.bd_psnr(RATE, PSNR, RATE, PSNR + shift_db) == pytest.approx(shift_db, abs=1e-9)


def test_a_better_codec_has_negative_bd_rate_and_positive_bd_psnr():
    # Test codec: same quality for 10% fewer bits, i.e. better.
    assert rd.bd_rate(RATE, PSNR, 0.9 * RATE, PSNR) < 0
    assert rd.bd_psnr(RATE, PSNR, 0.9 * RATE, PSNR) > 0
    # Swapping reference and test flips both signs.
    assert rd.bd_rate(0.9 * RATE, PSNR, RATE, PSNR) > 0
    assert rd.bd_psnr(0.9 * RATE, PSNR, RATE, PSNR) < 0


def test_point_order_and_count_do_not_matter():
    shuffled = [3, 0, 4, 1, 2]
    fine_rate = np.geomspace(0.1, 1.6, 9)
    fine_psnr = np.interp(np.log(fine_rate), np.log(RATE), PSNR)
    assert rd.bd_rate(RATE[shuffled], PSNR[shuffled], 2 * RATE, PSNR) == pytest.approx(100.0, abs=1e-6)
    assert abs(rd.bd_rate(RATE, PSNR, fine_rate, fine_psnr)) < 1.0


def test_published_mbt2018_beats_bpg_by_about_ten_percent():
    # Minnen et al. 2018 report 8.4% over BPG on Kodak; the anchors' own curves give about -10%.
    bpg, mbt = rd.load_anchors("bpg444-x265"), rd.load_anchors("paper-mbt2018")
    value = rd.bd_rate(bpg.bpp, bpg.psnr_rgb, mbt.bpp, mbt.psnr_rgb)
    assert -15 < value < -5


@pytest.mark.parametrize(
    ("rate", "psnr", "message"),
    [
        (RATE[:3], PSNR[:3], "at least 4"),
        (RATE, np.r_[PSNR[:4], np.nan], "finite"),
        (np.r_[0.0, RATE[1:]], PSNR, "> 0"),
        (np.r_[RATE[:4], RATE[3]], PSNR, "repeated rate"),
        (RATE, np.r_[PSNR[:4], PSNR[2]], "does not rise"),
        (RATE, PSNR[:4], "4 distortions"),
    ],
)
def test_invalid_curves_are_rejected_with_the_fix(rate, psnr, message):
    with pytest.raises(ValueError, match=message):
        rd.bd_rate(RATE, PSNR, rate, psnr)
    with pytest.raises(ValueError, match=message):
        rd.bd_psnr(rate, psnr, RATE, PSNR)


def test_curves_without_overlap_raise():
    with pytest.raises(rd.CurvesDoNotOverlapError, match="do not overlap in distortion"):
        rd.bd_rate(RATE, PSNR, RATE, PSNR + 20)
    with pytest.raises(rd.CurvesDoNotOverlapError, match="do not overlap in rate"):
        rd.bd_psnr(RATE, PSNR, 100 * RATE, PSNR)


def _per_image_table():
    rows = [
        # image, codec, setting, bpp, psnr_rgb, ms_ssim
        ("a", "jpeg", 50, 1.0, 30.0, 0.95),
        ("b", "jpeg", 50, 3.0, 34.0, 0.97),
        ("a", "jpeg", 10, 0.2, 24.0, 0.80),
        ("b", "jpeg", 10, 0.4, 26.0, np.nan),
        ("a", "webp", 80, 0.5, 31.0, 0.96),
        ("b", "webp", 80, 0.7, 33.0, 0.98),
    ]
    return pd.DataFrame(rows, columns=["image", "codec", "setting", "bpp", "psnr_rgb", "ms_ssim"])


def test_rd_table_averages_per_image_values_and_sorts_by_bpp():
    table = rd.rd_table(_per_image_table())
    assert list(zip(table.codec, table.setting)) == [("jpeg", 10), ("jpeg", 50), ("webp", 80)]
    assert table.bpp.tolist() == pytest.approx([0.3, 2.0, 0.6])
    assert table.psnr_rgb.tolist() == pytest.approx([25.0, 32.0, 32.0])  # mean of dB, not dB of mean MSE
    assert table.n_images.tolist() == [2, 2, 2]
    # A missing MS-SSIM in one image leaves the point's mean missing, not averaged over fewer images.
    assert np.isnan(table.ms_ssim[0])
    assert table.ms_ssim[1] == pytest.approx(0.96)
    assert table.ms_ssim_db[1] == pytest.approx(-10 * np.log10(0.04))
    assert rd.rd_table(_per_image_table(), skipna=True).ms_ssim[0] == pytest.approx(0.80)


def test_rd_table_rejects_an_image_counted_twice_in_one_point():
    doubled = pd.concat([_per_image_table(), _per_image_table()])
    with pytest.raises(ValueError, match="condition"):
        rd.rd_table(doubled)
    with pytest.raises(ValueError, match="lacks columns"):
        rd.rd_table(_per_image_table().drop(columns="ms_ssim"))


@pytest.mark.skipif(not SHARED_ANCHORS.exists(), reason=f"shared reference {SHARED_ANCHORS} not present")
def test_load_anchors_has_every_shared_anchor_with_the_same_numbers():
    shared = pd.read_csv(SHARED_ANCHORS, comment="#")
    packaged = rd.load_anchors()
    pd.testing.assert_frame_equal(packaged[["anchor", "bpp", "psnr_rgb"]], shared)
    assert packaged.source.str.len().min() > 0
    assert "869a9f5" in packaged.attrs["source"]
    assert rd.load_anchors(["vtm", "jpeg-pillow"]).anchor.unique().tolist() == ["vtm", "jpeg-pillow"]


def test_unknown_anchor_lists_the_available_ones():
    with pytest.raises(ValueError, match="available:.*paper-mbt2018"):
        rd.load_anchors("paper-mbt2019")


def test_bd_rate_table_against_measured_and_published_references():
    curves = pd.DataFrame(
        {
            "codec": ["ref"] * 5 + ["half"] * 5 + ["far"] * 5 + ["shifted"] * 5,
            "bpp": np.r_[RATE, 0.5 * RATE, RATE, RATE],
            "psnr_rgb": np.r_[PSNR, PSNR, PSNR + 30, PSNR + 6],
        }
    )
    table = rd.bd_rate_table(curves, "ref").set_index("codec")
    assert table.loc["ref", "bd_rate_percent"] == pytest.approx(0.0, abs=1e-9)
    assert table.loc["half", "bd_rate_percent"] == pytest.approx(-50.0, abs=1e-6)
    assert np.isnan(table.loc["far", "bd_rate_percent"])
    assert "do not overlap" in table.loc["far", "note"]
    assert table.loc["half", "note"] == ""
    # 6 dB up shares (37.6 - 33) / (43.6 - 27) = 28% of the PSNR range: valid but flagged.
    assert table.loc["shifted", "overlap"] == pytest.approx(4.6 / 16.6)
    assert "share only 28%" in table.loc["shifted", "note"]
    published = rd.bd_rate_table(curves, "paper-mbt2018")
    assert (published.reference == "paper-mbt2018 (published)").all()
    with pytest.raises(ValueError, match="neither a measured curve"):
        rd.bd_rate_table(curves, "nonexistent")


def test_plot_rd_draws_measured_curves_and_labelled_anchors():
    curves = rd.rd_table(_per_image_table().assign(ms_ssim=0.9))
    ax = rd.plot_rd(curves, anchors=["paper-mbt2018", "vtm"])
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["jpeg", "webp", "paper-mbt2018 (published)", "vtm (published)"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2 and dashed[0].get_marker() != dashed[1].get_marker()
    assert ax.get_xlabel() == "bits per pixel (bpp)" and ax.get_ylabel() == "PSNR-RGB (dB)"
    plt.close(ax.figure)
    ax = rd.plot_rd(curves, y="ms_ssim_db")
    assert ax.get_ylabel() == "MS-SSIM (dB)"
    with pytest.raises(ValueError, match="anchors"):
        rd.plot_rd(curves, y="ms_ssim_db", anchors="vtm", ax=ax)
    plt.close(ax.figure)


def test_published_comparison_of_the_published_curve_itself_is_zero_and_skips_absent_codecs():
    anchor = rd.load_anchors("webp-pillow")
    curves = anchor.assign(codec="webp")[["codec", "bpp", "psnr_rgb"]]
    table = rd.published_comparison(curves)
    assert table["codec"].tolist() == ["webp"]  # jpeg, jpeg2000, bpg, vtm absent: skipped
    assert table.loc[0, "published"] == "webp-pillow"
    assert abs(table.loc[0, "bd_rate_%"]) < 1e-6


def test_learning_curve_has_one_point_per_step_averaged_over_its_levels():
    # the notebook-01 bug: six levels evaluated at one step, each with its own clock time,
    # were six points (levels == 1 each) and the curve a sawtooth over the levels
    ref_bpp, ref_psnr = np.array([0.1, 0.2, 0.4, 0.8, 1.6]), np.array([26.0, 29.0, 32.0, 35.0, 38.0])
    rows = []
    for step, offset in ((100, -2.0), (200, -1.0)):
        for level, bpp in enumerate([0.2, 0.4, 0.8], start=1):
            psnr = np.interp(np.log(bpp), np.log(ref_bpp), ref_psnr) + offset + 0.1 * level
            rows.append({"step": step, "wall_s": step + 0.1 * level, "quality": level, "bpp": bpp, "psnr": psnr})
    curve = rd.learning_curve(pd.DataFrame(rows), ref_bpp, ref_psnr)
    assert curve["step"].tolist() == [100, 200]
    assert curve["levels"].tolist() == [3, 3]
    assert curve["gap_db"].tolist() == pytest.approx([-2.0 + 0.2, -1.0 + 0.2])
    assert curve["gap_min"].tolist() == pytest.approx([-1.9, -0.9])
    assert curve["wall_s"].tolist() == pytest.approx([100.3, 200.3])


def test_learning_curve_step_with_a_level_outside_the_reference_is_not_averaged():
    ref_bpp, ref_psnr = np.array([0.1, 1.0]), np.array([25.0, 35.0])
    evals = pd.DataFrame({"step": [1, 1, 2, 2], "wall_s": [1, 2, 3, 4], "bpp": [0.2, 2.0, 0.2, 0.5],
                          "psnr": [30.0, 40.0, 30.0, 32.0]})
    curve = rd.learning_curve(evals, ref_bpp, ref_psnr).set_index("step")
    assert np.isnan(curve.loc[1, "gap_db"]) and curve.loc[1, "levels_outside"] == 1
    assert np.isfinite(curve.loc[2, "gap_db"])


def test_quality_gap_is_zero_on_the_reference_and_nan_outside_it():
    ref_bpp, ref_psnr = [0.25, 0.5, 1.0], [29.0, 32.0, 35.0]
    gap = rd.quality_gap_at_rate(ref_bpp, ref_psnr, [0.25, np.sqrt(0.125), 0.5, 2.0], [29.0, 30.0, 33.0, 40.0])
    assert gap[:3] == pytest.approx([0.0, -0.5, 1.0])  # log-linear: half-way at the geometric mean
    assert np.isnan(gap[3])


def test_matched_rate_delta_of_a_shifted_curve_is_the_shift_over_the_shared_range():
    delta, low, high = rd.matched_rate_delta([0.1, 0.4, 1.6], [26.0, 32.0, 38.0], [0.2, 0.8, 3.2], [30.0, 36.0, 42.0])
    assert delta == pytest.approx(1.0) and (low, high) == pytest.approx((0.2, 1.6))
    assert np.isnan(rd.matched_rate_delta([0.1, 0.2], [20, 21], [1.0, 2.0], [30, 31])[0])


def test_matched_rate_delta_limited_to_a_rate_range_averages_only_there():
    # reference flat at 30 dB; the test curve is +2 dB below 0.5 bpp and +4 dB above 1 bpp
    ref = ([0.1, 0.5, 1.0, 4.0], [30.0, 30.0, 30.0, 30.0])
    test = ([0.1, 0.5, 1.0, 4.0], [32.0, 32.0, 34.0, 34.0])
    delta, low, high = rd.matched_rate_delta(*ref, *test, rate_range=(0.1, 0.5))
    assert delta == pytest.approx(2.0) and (low, high) == pytest.approx((0.1, 0.5))
    assert rd.matched_rate_delta(*ref, *test, rate_range=(1.0, 8.0))[:2] == pytest.approx((4.0, 1.0))
    assert np.isnan(rd.matched_rate_delta(*ref, *test, rate_range=(5.0, 8.0))[0])  # outside both curves


def _curve(codec, bpps, psnr_at_1=30.0):
    bpps = np.asarray(bpps, float)
    return pd.DataFrame({"codec": codec, "bpp": bpps, "psnr_rgb": psnr_at_1 + 6.02 * np.log2(bpps)})


def test_bd_against_baselines_measures_only_where_curves_overlap_and_names_the_fix_otherwise():
    test = _curve("pq", [0.04, 0.08, 0.12, 0.19])
    same = _curve("same", [0.035, 0.07, 0.14, 0.26])  # the same RD law: BD-rate 0
    high = _curve("high", [0.22, 0.3, 0.5, 0.8])  # starts above the test's top rate
    short = _curve("short", [0.05, 0.1, 0.2])
    curves = pd.concat([test, same, high, short], ignore_index=True)
    bd = rd.bd_against_baselines(curves, "pq", {"same": "a", "high": "b", "short": "c", "absent": "train it"},
                                 test_command="more pq").set_index("baseline")
    assert bd.loc["same", "status"] == "measured" and abs(bd.loc["same", "bd_rate_percent"]) < 1.0
    assert bd.loc["same", "command"] == "" and bd.loc["same", "shared_bpp"] == "0.040–0.190"
    for label, reason in [("high", "do not overlap"), ("short", "needs 4"), ("absent", "not trained")]:
        assert np.isnan(bd.loc[label, "bd_rate_percent"]) and reason in bd.loc[label, "status"]
        assert bd.loc[label, "status"].startswith("not measured") and bd.loc[label, "command"]
    few = rd.bd_against_baselines(curves[curves["bpp"] != 0.19], "pq", {"same": "a"}, test_command="more pq")
    assert few.iloc[0]["command"] == "more pq"  # the test curve is the short one: its fix is named
