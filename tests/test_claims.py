"""The verdict rules of nic_lib.claims on small synthetic curves and gap tables."""

import numpy as np
import pandas as pd
import pytest

from nic_lib import claims

CLAIM = claims.Claim("test claim", "paper number", "a likely cause")
#: A reference curve: +3 dB per doubling of the rate.
RATES = np.array([0.125, 0.25, 0.5, 1.0, 2.0])
PSNR = np.array([26.0, 29.0, 32.0, 35.0, 38.0])


def _curves(**shifts_db):
    """RD curves: 'ref' and one curve per keyword, shifted up by that many dB."""
    parts = [pd.DataFrame({"codec": "ref", "bpp": RATES, "psnr_rgb": PSNR})]
    parts += [pd.DataFrame({"codec": name, "bpp": RATES, "psnr_rgb": PSNR + dB}) for name, dB in shifts_db.items()]
    return pd.concat(parts, ignore_index=True)


def test_fewer_bits_holds_for_a_better_curve_and_contradicts_for_a_worse_one():
    curves = _curves(better=1.0, worse=-1.0)
    good = claims.fewer_bits(CLAIM, curves, "better", "ref")
    bad = claims.fewer_bits(CLAIM, curves, "worse", "ref")
    assert good["verdict"] == claims.HOLDS and "fewer bits" in good["measured here"]
    assert bad["verdict"] == claims.CONTRADICTS and "more bits" in bad["measured here"]
    # the likely cause is given only where the claim does not hold
    assert good["likely cause"] == "" and bad["likely cause"] == "a likely cause"
    assert "BD-rate of better against ref" in good["rule"]


def test_fewer_bits_is_not_measured_without_a_curve_or_an_overlap():
    curves = _curves(far=30.0)
    missing = claims.fewer_bits(CLAIM, curves, "bpg", "ref")
    assert missing["verdict"] == claims.NOT_MEASURED and "bpg" in missing["measured here"]
    apart = claims.fewer_bits(CLAIM, curves, "far", "ref")
    assert apart["verdict"] == claims.NOT_MEASURED
    short = pd.concat([_curves(), pd.DataFrame({"codec": "two", "bpp": [0.2, 0.4], "psnr_rgb": [30.0, 33.0]})])
    assert claims.fewer_bits(CLAIM, short, "two", "ref")["verdict"] == claims.NOT_MEASURED


def test_fewer_bits_accepts_a_published_anchor_as_reference():
    anchor = claims.rd.load_anchors("compressai-mbt2018")
    curves = pd.DataFrame({"codec": "ours", "bpp": anchor["bpp"], "psnr_rgb": anchor["psnr_rgb"] - 1.0})
    r = claims.fewer_bits(CLAIM, curves, "ours", "compressai-mbt2018")
    assert r["verdict"] == claims.CONTRADICTS


def test_on_par_uses_the_tolerance_and_needs_only_two_points():
    ref_rate, ref_q = RATES, PSNR
    close = claims.on_par_or_better(CLAIM, ref_rate, ref_q, [0.2, 0.4], np.interp(np.log([0.2, 0.4]), np.log(RATES), PSNR) - 0.3, "t", "r")
    far = claims.on_par_or_better(CLAIM, ref_rate, ref_q, [0.2, 0.4], np.interp(np.log([0.2, 0.4]), np.log(RATES), PSNR) - 2.0, "t", "r")
    assert close["verdict"] == claims.HOLDS and "-0.30 dB" in close["measured here"]
    assert far["verdict"] == claims.CONTRADICTS
    apart = claims.on_par_or_better(CLAIM, ref_rate, ref_q, [0.01, 0.02], [20.0, 21.0], "t", "r")
    assert apart["verdict"] == claims.NOT_MEASURED and "no rate range" in apart["measured here"]


def test_all_positive_needs_every_value_positive():
    rule = "r"
    assert claims.all_positive(CLAIM, {"a": 0.3, "b": 0.1}, "saving", rule)["verdict"] == claims.HOLDS
    assert claims.all_positive(CLAIM, {"a": 0.3, "b": -0.01}, "saving", rule)["verdict"] == claims.CONTRADICTS
    assert claims.all_positive(CLAIM, {"a": float("nan")}, "saving", rule)["verdict"] == claims.NOT_MEASURED


def _gaps(clean, low, mid, high):
    """Per-condition gaps: two conditions per group around the given group mean."""
    rows = [{"group": "clean", "delta_db": clean}]
    for group, mean in (("low", low), ("mid", mid), ("high", high)):
        rows += [{"group": group, "delta_db": mean - 0.1}, {"group": group, "delta_db": mean + 0.1}]
    return pd.DataFrame(rows)


def test_shift_effects_are_relative_to_the_clean_gap():
    effects = claims.shift_effects(_gaps(clean=-1.5, low=-1.5, mid=-2.0, high=2.5))
    assert effects.to_dict() == pytest.approx({"low": 0.0, "mid": -0.5, "high": 4.0})


def test_ood_claims_on_a_codec_that_gains_under_noise_and_loses_under_blur():
    t = claims.ood_claims(_gaps(clean=-1.5, low=-1.5, mid=-2.0, high=2.5), "nic", "j2k").set_index("claim")
    verdicts = t["verdict"].tolist()
    assert verdicts == [claims.HOLDS, claims.HOLDS, claims.HOLDS]


def test_ood_claims_on_a_codec_the_shift_does_not_move():
    t = claims.ood_claims(_gaps(clean=-1.0, low=-1.0, mid=-1.05, high=-0.95), "nic", "j2k", against="vs clean")
    assert t["verdict"].tolist() == [claims.CONTRADICTS, claims.CONTRADICTS, claims.CONTRADICTS]
    # a codec behind on clean images does not satisfy "not uniformly better" by that alone
    assert "relative to clean" in t.loc[0, "measured here"]
    assert t["claim"].str.endswith("(vs clean)").all()


def test_one_bad_condition_is_enough_for_not_uniformly_better():
    gaps = _gaps(clean=-1.0, low=-1.0, mid=-1.0, high=-1.0)
    gaps = pd.concat([gaps, pd.DataFrame([{"group": "mid", "delta_db": -3.0, "condition": "defocus_blur 5"}])],
                     ignore_index=True)
    r = claims.not_uniformly_better(CLAIM, gaps, "nic", "j2k")
    assert r["verdict"] == claims.HOLDS and "defocus_blur 5 -2.00 dB" in r["measured here"]


def test_ood_claims_without_a_clean_gap_are_not_measured():
    gaps = _gaps(clean=float("nan"), low=0.0, mid=0.0, high=1.0)
    t = claims.ood_claims(gaps, "nic", "j2k")
    assert (t["verdict"] == claims.NOT_MEASURED).all()


def test_mbt2018_claims_table_has_one_row_per_claim_and_known_verdicts():
    curves = _curves(**{"mbt2018": 2.0, "mbt2018-mean": 1.0, "mbt2018-context": 1.5,
                        "bmshj2018-hyperprior": 1.2, "mbt2018-gmm": 1.8})
    curves["codec"] = curves["codec"].replace({"ref": "jpeg2000"})
    t = claims.mbt2018_claims(curves)
    assert list(t.columns) == list(claims.COLUMNS)
    v = dict(zip(t["claim"], t["verdict"]))
    assert v[claims.MBT2018["vs_mean"].text] == claims.HOLDS
    assert v[claims.MBT2018["mean_vs_scale"].text] == claims.CONTRADICTS  # 1.0 dB below the scale-only 1.2
    assert v[claims.MBT2018["gmm"].text] == claims.CONTRADICTS
    assert v[claims.MBT2018["vs_jpeg2000"].text] == claims.HOLDS
    assert v[claims.MBT2018["vs_webp"].text] == claims.NOT_MEASURED  # no webp curve
    assert v[claims.MBT2018["vs_bpg"].text] == claims.NOT_MEASURED
    assert set(t["verdict"]) <= set(claims.VERDICTS)


def test_pqmim_claims_read_each_table():
    rate_points = pd.DataFrame({"distinct_rates": [16, 60]}, index=["VQ", "PQ"])
    perceptual = pd.DataFrame({"pair": ["M4", "M4"], "codec": ["base", "perceptual"], "swd": [0.02, 0.01],
                               "fd": [np.nan, np.nan]})
    hp = pd.DataFrame({"bpp": RATES, "psnr_rgb": PSNR})
    pq = pd.DataFrame({"bpp": [0.1, 0.2], "psnr_rgb": [23.0, 25.0]})
    hybrid = pd.DataFrame({"transmit_steps": [10, 3, 1], "bytes": [900, 187, 40], "psnr_rgb": [24.0, 15.0, 11.0]})
    t = claims.pqmim_claims(rate_points, {"M2": 0.3, "M4": 0.25}, pq, hp, perceptual, hybrid, 200)
    assert t["verdict"].tolist() == [claims.HOLDS, claims.HOLDS, claims.CONTRADICTS, claims.HOLDS, claims.HOLDS,
                                     claims.NOT_MEASURED]
    assert "187 bytes, 15.00 dB" in t.loc[4, "measured here"]  # the best setting within the budget, not the smallest
    md = claims.to_markdown(t)
    assert md.count("\n") == len(t) + 1 and "**holds**" in md


def _effects(rows):
    """Shift effects: rows of (corruption, codec, measure, shift_db), severity 1."""
    return pd.DataFrame([{"corruption": c, "severity": 1, "codec": k, "measure": m, "shift_db": v}
                         for c, k, m, v in rows])


def _ranks(rows):
    return pd.DataFrame([{"measure": m, "group": g, "codec": k, "mean_rank": r} for m, g, k, r in rows])


GROUP_OF = {"fog": "low", "pixelate": "mid", "gaussian_noise": "high", "shot_noise": "high"}


def test_smaller_shift_loss_reads_each_codec_against_its_own_clean_curve():
    effects = _effects([("gaussian_noise", "nic", "R", -8.0), ("gaussian_noise", "j2k", "R", -11.0),
                        ("shot_noise", "nic", "R", -8.0), ("shot_noise", "j2k", "R", -9.0),
                        ("fog", "nic", "R", -20.0), ("fog", "j2k", "R", -10.0)])
    r = claims.smaller_shift_loss(CLAIM, effects, "nic", "j2k", "high", "R", GROUP_OF)
    assert r["verdict"] == claims.HOLDS and "+2.00 dB" in r["measured here"]  # mean of +3 and +1; fog not in it
    assert claims.smaller_shift_loss(CLAIM, effects, "j2k", "nic", "high", "R", GROUP_OF)["verdict"] == claims.CONTRADICTS
    assert claims.smaller_shift_loss(CLAIM, effects, "nic", "j2k", "high", "G", GROUP_OF)["verdict"] == claims.NOT_MEASURED


def test_rank_claims_on_known_mean_ranks():
    ranks = _ranks([("G", "low", "nic", 1.0), ("G", "low", "j2k", 2.0), ("G", "high", "nic", 2.5), ("G", "high", "j2k", 1.5),
                    ("R", "low", "nic", 1.0), ("R", "low", "j2k", 2.0), ("R", "high", "nic", 1.0), ("R", "high", "j2k", 2.0)])
    assert claims.rank_depends_on_group(CLAIM, ranks, "nic", "G")["verdict"] == claims.HOLDS  # 1.0 -> 2.5
    assert claims.rank_depends_on_group(CLAIM, ranks, "nic", "R")["verdict"] == claims.CONTRADICTS
    assert claims.not_best_in_every_group(CLAIM, ranks, "nic", "G")["verdict"] == claims.HOLDS
    assert claims.not_best_in_every_group(CLAIM, ranks, "nic", "R")["verdict"] == claims.CONTRADICTS
    assert claims.not_best_in_every_group(CLAIM, ranks, "avif", "R")["verdict"] == claims.NOT_MEASURED
    table = claims.ood_shift_claims(_effects([("gaussian_noise", "nic", "G", -1.0), ("gaussian_noise", "j2k", "G", -2.0)]),
                                    ranks, "nic", "j2k", GROUP_OF)
    assert len(table) == 6 and list(table.columns) == list(claims.COLUMNS)
    assert table["claim"].str.contains("generalization G").sum() == 3


def test_second_dataset_claims_name_the_dataset_and_follow_the_same_rules():
    ranks = _ranks([("G", "low", "nic", 1.0), ("G", "high", "nic", 2.5), ("R", "low", "nic", 1.0), ("R", "high", "nic", 1.0)])
    effects = _effects([("gaussian_noise", "nic", "G", -1.0), ("gaussian_noise", "j2k", "G", -2.0)])
    gaps = _gaps(clean=-1.5, low=-1.5, mid=-2.0, high=2.5)
    t = claims.ood_dataset_claims(gaps, effects, ranks, "nic", "j2k", GROUP_OF, "photos-hr-C")
    assert len(t) == 9 and t["claim"].str.contains("photos-hr-C").all()
    assert t["paper"].str.contains("CLIC-C").all()
    # the verdicts are the single-dataset rules' verdicts
    expected = pd.concat([claims.ood_claims(gaps, "nic", "j2k"), claims.ood_shift_claims(effects, ranks, "nic", "j2k", GROUP_OF)])
    assert t["verdict"].tolist() == expected["verdict"].tolist()


def test_grouped_by_spectrum_needs_the_groups_in_frequency_order():
    ordered = {"fog": 0.05, "pixelate": 0.3, "gaussian_noise": 0.77, "shot_noise": 0.75}
    r = claims.grouped_by_spectrum(CLAIM, ordered, GROUP_OF)
    assert r["verdict"] == claims.HOLDS and "each corruption nearest its own group" in r["measured here"]
    assert claims.grouped_by_spectrum(CLAIM, dict(ordered, pixelate=0.9), GROUP_OF)["verdict"] == claims.CONTRADICTS
    two_mid = {**GROUP_OF, "zoom_blur": "mid"}  # pixelate alone near the noises: order kept, one astray
    r = claims.grouped_by_spectrum(CLAIM, dict(ordered, pixelate=0.8, zoom_blur=0.2), two_mid)
    assert r["verdict"] == claims.HOLDS and "pixelate (mid, 0.80)" in r["measured here"]
    assert claims.grouped_by_spectrum(CLAIM, {"fog": 0.1}, GROUP_OF)["verdict"] == claims.NOT_MEASURED


def test_pqmim_baseline_claims_give_numbers_only_for_measured_comparisons():
    bd = pd.DataFrame([
        {"baseline": "hp", "status": "measured", "bd_rate_percent": 7.5, "shared_bpp": "0.04–0.19", "command": ""},
        {"baseline": "j2k", "status": "measured", "bd_rate_percent": 12.0, "shared_bpp": "0.05–0.19", "command": ""},
        {"baseline": "mbt", "status": "not measured: mbt not trained yet", "bd_rate_percent": np.nan,
         "shared_bpp": "", "command": "python train.py"}])
    vq = pd.DataFrame([{"kind": "VQ", "bits_per_token": 8, "bpp": 0.02, "psnr_rgb": 21.0},
                       {"kind": "PQ", "bits_per_token": 8, "bpp": 0.019, "psnr_rgb": 21.5}])
    t = claims.pqmim_baseline_claims(bd, {"hyperprior": "hp", "mbt2018": "mbt", "jpeg2000": "j2k"}, vq)
    verdicts = list(t["verdict"])
    assert verdicts == [claims.HOLDS, claims.NOT_MEASURED, claims.CONTRADICTS, claims.HOLDS]
    assert "python train.py" in t.iloc[1]["measured here"] and "+7.5%" in t.iloc[0]["measured here"]
    none = claims.pqmim_baseline_claims(bd.iloc[:0], {}, vq.iloc[:0])
    assert (none["verdict"] == claims.NOT_MEASURED).all() and "M1-K256" in none.iloc[-1]["measured here"]


def test_mbt2018_entropy_model_claims_compare_the_ablations_with_the_protocols_joint_model():
    # the main line beats everything; the protocol's joint model is below mean-scale
    curves = _curves(**{"mbt2018": 3.0, "protocol": 0.5, "mbt2018-mean": 1.0, "mbt2018-context": 0.2,
                        "bmshj2018-hyperprior": 0.8, "mbt2018-gmm": 0.6})
    curves["codec"] = curves["codec"].replace({"ref": "jpeg2000"})
    v = dict(zip(*claims.mbt2018_claims(curves, ablation_joint="protocol")[["claim", "verdict"]].T.values))
    assert v[claims.MBT2018["vs_mean"].text] == claims.CONTRADICTS  # protocol 0.5 < mean 1.0
    assert v[claims.MBT2018["vs_context"].text] == claims.HOLDS
    assert v[claims.MBT2018["vs_hyperprior"].text] == claims.CONTRADICTS
    assert v[claims.MBT2018["gmm"].text] == claims.HOLDS  # 0.6 above the protocol's 0.5
    assert v[claims.MBT2018["vs_jpeg2000"].text] == claims.HOLDS  # the main line, 3.0 dB above
    # without it, the one joint model is used for all claims
    v = dict(zip(*claims.mbt2018_claims(curves)[["claim", "verdict"]].T.values))
    assert v[claims.MBT2018["vs_mean"].text] == claims.HOLDS
