"""nic_lib.shift on synthetic RD curves whose shift effects and ranks are known."""

import numpy as np
import pandas as pd
import pytest

from nic_lib import bench, shift

#: A clean curve: +3 dB per doubling of the rate (linear in log bpp, so interpolation is exact).
RATES = np.array([0.125, 0.25, 0.5, 1.0, 2.0])
PSNR = np.array([26.0, 29.0, 32.0, 35.0, 38.0])
GROUPS = {"fog": "low", "pixelate": "mid", "gaussian_noise": "high"}


def _points(spec, rates=RATES):
    """RD points: spec = {codec: (clean offset, {corruption: (G offset, R offset)})}, severity 1 only.

    Each codec's clean curve is PSNR + clean offset; under a corruption its curve against
    the input is the clean curve + G offset and against the clean image + R offset, at the
    same rates.
    """
    rows = []
    for codec, (base, shifts) in spec.items():
        clean = PSNR + base
        rows += [{"corruption": "clean", "severity": 0, "codec": codec, "setting": i, "bpp": r,
                  "psnr_vs_input": q, "psnr_vs_clean": q} for i, (r, q) in enumerate(zip(rates, clean))]
        for corruption, (g, r_off) in shifts.items():
            rows += [{"corruption": corruption, "severity": 1, "codec": codec, "setting": i, "bpp": r,
                      "psnr_vs_input": q + g, "psnr_vs_clean": q + r_off} for i, (r, q) in enumerate(zip(rates, clean))]
    return pd.DataFrame(rows)


def test_a_curve_lowered_by_one_db_has_a_shift_effect_of_minus_one_db():
    effects = shift.shift_effects(_points({"a": (0.0, {"fog": (-1.0, -4.0)})}))
    by_measure = effects.set_index("measure")
    assert by_measure.loc["G", "shift_db"] == pytest.approx(-1.0)
    assert by_measure.loc["R", "shift_db"] == pytest.approx(-4.0)
    assert by_measure.loc["G", "metric"] == "psnr_vs_input" and by_measure.loc["R", "metric"] == "psnr_vs_clean"
    assert by_measure["bpp_low"].tolist() == pytest.approx([0.125] * 2)
    assert by_measure["bpp_high"].tolist() == pytest.approx([2.0] * 2)
    assert list(effects.columns) == ["corruption", "severity", *shift.EFFECT_COLUMNS]


def test_the_shift_effect_ignores_the_clean_gap_the_absolute_columns_keep_it():
    # b is 2 dB behind the reference on clean images and loses 1 dB to fog; the reference loses 3 dB
    effects = shift.shift_effects(_points({"ref": (0.0, {"fog": (-3.0, -3.0)}), "b": (-2.0, {"fog": (-1.0, -1.0)})}),
                                  reference="ref")
    b = effects[(effects["codec"] == "b") & (effects["measure"] == "G")].iloc[0]
    assert b["shift_db"] == pytest.approx(-1.0)  # its own clean curve: the 2 dB gap is not in it
    assert b["clean_gap_db"] == pytest.approx(-2.0)
    assert b["gap_db"] == pytest.approx(0.0)  # -2 - 1 against -3
    assert b["gap_change_db"] == pytest.approx(2.0)
    ref = effects[(effects["codec"] == "ref") & (effects["measure"] == "G")].iloc[0]
    assert ref["gap_db"] == pytest.approx(0.0) and ref["shift_db"] == pytest.approx(-3.0)


def test_absolute_gaps_agree_with_the_grids_matched_bpp_delta():
    points = _points({"ref": (0.0, {"fog": (-3.0, -5.0)}), "b": (-0.5, {"fog": (-1.0, -2.0)})})
    effects = shift.shift_effects(points, reference="ref").set_index(["codec", "measure"])
    table = points.assign(image="x")  # one image: the grid's dataset means are these points
    for measure, metric in shift.MEASURES.items():
        d = bench.matched_bpp_delta(table, "ref", metric=metric).set_index(["corruption", "codec"])
        assert effects.loc[("b", measure), "gap_db"] == pytest.approx(d.loc[("fog", "b"), "delta_db"])


def test_curves_without_a_shared_rate_give_nan_with_a_reason():
    points = _points({"a": (0.0, {"fog": (-1.0, -1.0)})})
    shifted = points["corruption"] == "fog"
    points.loc[shifted, "bpp"] = points.loc[shifted, "bpp"] * 100  # noise: far more bits than any clean point
    effects = shift.shift_effects(points)
    assert effects["shift_db"].isna().all()
    assert all("no shared rate" in r for r in effects["reason"])


def test_a_bpp_range_limits_every_mean_to_it():
    points = _points({"a": (0.0, {"fog": (-1.0, -1.0)})})
    # at the two highest rates the fog curve is 3 dB lower instead of 1
    high = (points["corruption"] == "fog") & (points["bpp"] >= 1.0)
    points.loc[high, ["psnr_vs_input", "psnr_vs_clean"]] -= 2.0
    low_only = shift.shift_effects(points, bpp_range=(0.125, 0.5))
    assert low_only["shift_db"].to_numpy() == pytest.approx([-1.0, -1.0])
    assert low_only["bpp_high"].to_numpy() == pytest.approx([0.5, 0.5])
    top = shift.shift_effects(points, bpp_range=(1.0, 2.0))
    assert top["shift_db"].to_numpy() == pytest.approx([-3.0, -3.0])


def test_common_bpp_range_is_where_every_clean_curve_lies():
    points = pd.concat([_points({"a": (0.0, {})}), _points({"b": (0.0, {})}, rates=RATES * 2)])
    assert shift.common_bpp_range(points) == pytest.approx((0.25, 2.0))
    apart = pd.concat([_points({"a": (0.0, {})}), _points({"b": (0.0, {})}, rates=RATES * 100)])
    with pytest.raises(ValueError, match="share no bpp range"):
        shift.common_bpp_range(apart)


def test_a_notebook_setting_falls_back_to_each_codecs_own_rates_when_none_are_common():
    points = pd.concat([_points({"a": (0.0, {})}), _points({"b": (0.0, {})}, rates=RATES * 2)])
    assert shift.resolve_bpp_range(points, "common")[0] == pytest.approx((0.25, 2.0))
    apart = pd.concat([_points({"a": (0.0, {})}), _points({"b": (0.0, {})}, rates=RATES * 100)])
    rng, note = shift.resolve_bpp_range(apart, "common")
    assert rng is None and "own rates" in note and "share no bpp range" in note
    assert shift.resolve_bpp_range(apart, None) == (None, "each codec over its own rates")
    assert shift.resolve_bpp_range(apart, [0.1, 0.5])[0] == (0.1, 0.5)


def test_mean_ranks_of_a_known_ordering():
    # in every condition a loses least, then b, then c, for G; for R the order is reversed
    spec = {"a": (0.0, {c: (-1.0, -9.0) for c in GROUPS}),
            "b": (0.0, {c: (-2.0, -5.0) for c in GROUPS}),
            "c": (0.0, {c: (-3.0, -1.0) for c in GROUPS})}
    ranks = shift.mean_ranks(shift.shift_effects(_points(spec)), GROUPS)
    g = shift.rank_table(ranks, "G")
    r = shift.rank_table(ranks, "R")
    assert list(g.columns) == ["low", "mid", "high"]
    assert g.loc[["a", "b", "c"], "low"].tolist() == [1.0, 2.0, 3.0]
    assert r.loc[["a", "b", "c"], "high"].tolist() == [3.0, 2.0, 1.0]
    assert (ranks["n_conditions"] == 1).all() and (ranks["n_dropped"] == 0).all()


def test_mean_ranks_average_over_a_group_and_share_ties():
    # two low-frequency conditions: a wins one, b the other -> both 1.5; a tie -> both 1.5
    spec = {"a": (0.0, {"fog": (-1.0, -1.0), "snow": (-3.0, -2.0)}),
            "b": (0.0, {"fog": (-2.0, -1.0), "snow": (-1.0, -2.0)})}
    ranks = shift.mean_ranks(shift.shift_effects(_points(spec)), {"fog": "low", "snow": "low"})
    assert ranks["mean_rank"].to_numpy() == pytest.approx([1.5] * 4)
    assert (ranks["n_conditions"] == 2).all()


def test_mean_ranks_drop_conditions_some_codec_lacks():
    spec = {"a": (0.0, {"fog": (-1.0, -1.0), "pixelate": (-1.0, -1.0)}),
            "b": (0.0, {"fog": (-2.0, -2.0), "pixelate": (-2.0, -2.0)})}
    points = _points(spec)
    gone = (points["codec"] == "b") & (points["corruption"] == "pixelate")
    points.loc[gone, "bpp"] *= 100  # b's pixelate curve shares no rate with its clean curve
    effects = shift.shift_effects(points)
    ranks = shift.mean_ranks(effects, GROUPS)
    assert set(ranks["group"]) == {"low"}  # the only complete condition
    loose = shift.mean_ranks(effects, GROUPS, complete=False)
    assert loose.query("group == 'mid'")["codec"].tolist() == ["a", "a"]  # one row per measure (G, R)
    with pytest.raises(ValueError, match="no frequency group"):
        shift.mean_ranks(effects, {"fog": "low"})


def test_missing_clean_rows_or_columns_are_refused_with_the_fix():
    points = _points({"a": (0.0, {"fog": (-1.0, -1.0)})})
    with pytest.raises(ValueError, match="no clean rows"):
        shift.shift_effects(points[points["corruption"] != "clean"])
    with pytest.raises(ValueError, match="rd_points"):
        shift.shift_effects(points.drop(columns="psnr_vs_clean"))
    with pytest.raises(ValueError, match="reference codec"):
        shift.shift_effects(points, reference="jpeg2000")


def test_group_means_average_a_groups_corruptions_where_every_codec_has_a_value():
    spec = {"a": (0.0, {"fog": (-1.0, -2.0), "snow": (-3.0, -4.0), "pixelate": (-1.0, -1.0)}),
            "b": (0.0, {"fog": (-2.0, -2.0), "snow": (-2.0, -2.0), "pixelate": (-5.0, -5.0)})}
    points = _points(spec)
    gone = (points["codec"] == "b") & (points["corruption"] == "pixelate")
    points.loc[gone, "bpp"] *= 100
    groups = {"fog": "low", "snow": "low", "pixelate": "mid"}
    means = shift.group_means(shift.shift_effects(points), groups).set_index(["measure", "group", "codec"])
    assert means.loc[("G", "low", "a"), "shift_db"] == pytest.approx(-2.0)  # (-1 - 3) / 2
    assert means.loc[("R", "low", "a"), "shift_db"] == pytest.approx(-3.0)
    assert means.loc[("G", "low", "b"), "n_corruptions"] == 2
    assert "mid" not in means.index.get_level_values("group")  # b has no pixelate value
    loose = shift.group_means(shift.shift_effects(points), groups, complete=False)
    assert loose.query("group == 'mid'")["codec"].unique().tolist() == ["a"]
