"""The distance of a training run's evaluations to JPEG 2000 (nic_lib/training_curves.py).

Small hand-made tables only: nothing here trains or encodes.
"""

import math

import numpy as np
import pandas as pd
import pytest

from nic_lib import training_curves as tc

#: A made-up JPEG 2000 curve: +3 dB per doubling of the rate, 0.125 .. 2 bpp.
J2K = pd.DataFrame({"bpp": [0.125, 0.25, 0.5, 1.0, 2.0],
                    "psnr_rgb": [26.0, 29.0, 32.0, 35.0, 38.0]})
#: The rate level of the fixed-rate evaluations below (quality 4 of the MSE table).
LMBDA = 0.013


def _evals(rows):
    """Evaluation rows (recipe, wall_h, step, quality, lmbda, bpp, psnr) -> evals table."""
    df = pd.DataFrame(rows, columns=["recipe", "wall_h", "step", "quality", "lmbda", "bpp", "psnr"])
    df["images"] = 24
    return df


def test_gap_is_zero_on_the_reference_curve_and_the_psnr_difference_off_it():
    bpp = np.array([0.25, 0.5, 1.0])
    on = tc.psnr_at_bpp(J2K["bpp"], J2K["psnr_rgb"], bpp)
    np.testing.assert_allclose(on, [29.0, 32.0, 35.0])
    table = tc.add_jpeg2000_columns(
        _evals([("a", 0.1, 10, None, LMBDA, 0.5, 32.0), ("b", 0.1, 10, None, LMBDA, 0.5, 30.5)]),
        J2K)
    assert table.set_index("recipe")["gap_to_jpeg2000_db"].to_dict() == pytest.approx({"a": 0.0, "b": -1.5})


def test_reference_psnr_is_interpolated_linearly_in_log_bpp():
    # the geometric mean of two rates sits half-way between their PSNRs
    mid = math.sqrt(0.5 * 1.0)
    assert tc.psnr_at_bpp(J2K["bpp"], J2K["psnr_rgb"], mid) == pytest.approx(33.5)
    # and not at the arithmetic mean of the rates
    assert tc.psnr_at_bpp(J2K["bpp"], J2K["psnr_rgb"], 0.75) > 33.5


def test_reference_keeps_only_points_that_add_rate_and_quality():
    # a rate-control floor (two settings, one file) and a point that buys no quality
    floored = pd.DataFrame({"bpp": [0.09, 0.09, 0.1, 0.2, 0.3, 0.4, 0.4],
                            "psnr_rgb": [17.0, 17.0, 19.0, 21.0, 20.5, 22.0, 23.0]})
    kept = tc.monotone_curve(floored)
    assert kept["bpp"].tolist() == [0.09, 0.1, 0.2, 0.4]
    assert kept["psnr_rgb"].iloc[-1] == 23.0  # of two points at one rate, the better one
    assert (np.diff(kept["psnr_rgb"]) > 0).all()
    # the table is then defined wherever the kept points are
    table = tc.add_jpeg2000_columns(_evals([("a", 0.1, 10, None, LMBDA, 0.2, 21.0)]), floored)
    assert table["gap_to_jpeg2000_db"].iloc[0] == pytest.approx(0.0)
    assert table["rate_vs_jpeg2000_pct"].iloc[0] == pytest.approx(0.0, abs=1e-9)


def test_reference_is_not_extrapolated_outside_its_rates():
    out = tc.psnr_at_bpp(J2K["bpp"], J2K["psnr_rgb"], [0.05, 3.0])
    assert np.isnan(out).all()
    assert np.isnan(tc.bpp_at_psnr(J2K["bpp"], J2K["psnr_rgb"], [20.0, 45.0])).all()


def test_rate_change_is_zero_on_the_curve_and_minus_half_at_half_the_bits():
    table = tc.add_jpeg2000_columns(
        _evals([("on", 0.1, 10, None, LMBDA, 0.5, 32.0), ("half", 0.1, 10, None, LMBDA, 0.25, 32.0)]),
        J2K)
    change = table.set_index("recipe")["rate_vs_jpeg2000_pct"]
    assert change["on"] == pytest.approx(0.0, abs=1e-9)
    assert change["half"] == pytest.approx(-50.0)


def test_bd_rate_is_zero_for_the_reference_itself_and_negative_for_fewer_bits():
    lm = [0.0018, 0.0035, 0.0067, 0.013]
    same = [("same", 0.5, 100, q + 1, lm[q], b, p)
            for q, (b, p) in enumerate(zip(J2K["bpp"][:4], J2K["psnr_rgb"][:4]))]
    # same qualities at 80 % of the bits: BD-rate -20 %
    cheaper = [("cheaper", 0.5, 100, q + 1, lm[q], 0.8 * b, p)
               for q, (b, p) in enumerate(zip(J2K["bpp"][1:5], J2K["psnr_rgb"][1:5]))]
    table = tc.add_jpeg2000_columns(_evals(same + cheaper), J2K)
    bd = table.groupby("recipe")["bd_rate_vs_jpeg2000_pct"]
    assert bd.nunique().eq(1).all()  # one value per evaluation, repeated on every level
    assert bd.first()["same"] == pytest.approx(0.0, abs=1e-6)
    assert bd.first()["cheaper"] == pytest.approx(-20.0, abs=0.5)


def test_bd_rate_is_undefined_for_fixed_rate_evaluations_and_for_non_monotone_curves():
    fixed = [("fixed", 0.5, 100, None, LMBDA, 0.5, 31.0)]
    # early training: quality does not rise with rate yet
    messy = [("messy", 0.5, 100, q, 0.001 * q, b, p)
             for q, (b, p) in enumerate([(0.2, 28.0), (0.3, 27.0), (0.5, 30.0), (0.9, 29.0)], 1)]
    table = tc.add_jpeg2000_columns(_evals(fixed + messy), J2K)
    assert table["bd_rate_vs_jpeg2000_pct"].isna().all()


def test_table_has_the_documented_columns_and_blanks_undefined_numbers():
    table = tc.add_jpeg2000_columns(_evals([("a", 0.1, 10, None, LMBDA, 0.5, 32.0)]), J2K)
    assert list(table.columns) == list(tc.COLUMNS)
    assert tc.format_or_blank(float("nan"), "+.1f") == ""
    assert tc.format_or_blank(-1.26, "+.1f", " %") == "-1.3 %"


def test_evaluations_are_timed_by_their_first_level_per_weights(tmp_path):
    (tmp_path / "eval.csv").write_text(
        "step,wall_s,quality,lmbda,images,loss,mse,psnr,bpp,weights\n"
        "100,360.0,1,0.0018,24,1,1,28.0,0.2,model\n"
        "100,363.6,2,0.0035,24,1,1,29.0,0.3,model\n"
        "100,367.2,1,0.0018,24,1,1,28.2,0.2,ema\n"
        "200,720.0,1,0.0018,24,1,1,28.5,0.2,model\n")
    ev = tc.read_evaluations(tmp_path)
    assert list(ev.columns) == list(tc.EVALUATION_COLUMNS)
    assert ev["hours"].tolist() == pytest.approx([0.1, 0.1, 0.102, 0.2])
    # the CSV itself reads the same; a file without the weights column is all "model"
    assert tc.read_evaluations(tmp_path / "eval.csv").equals(ev)
    (tmp_path / "old.csv").write_text("step,wall_s,quality,lmbda,images,psnr,bpp\n10,36.0,1,0.0018,24,28.0,0.2\n")
    assert tc.read_evaluations(tmp_path / "old.csv")["weights"].tolist() == ["model"]
    assert tc.read_evaluations(tmp_path / "missing").empty


def test_shipped_logs_are_read_from_beside_the_checkpoint(tmp_path):
    (tmp_path / "vr.log.csv").write_text("step,wall_s,loss\n10,1.0,2.0\n")
    assert tc.shipped_logs(tmp_path / "vr.pt")[1] is None  # no evaluations shipped
    (tmp_path / "vr.eval.csv").write_text("step,wall_s,psnr,bpp\n10,1.5,30.0,0.5\n")
    log, evals = tc.shipped_logs(tmp_path / "vr.pt")
    assert log["loss"].tolist() == [2.0] and evals["psnr"].tolist() == [30.0]
    assert tc.shipped_logs(tmp_path / "other.pt") is None
    # the repository's shared stages ship logs without a checkpoint file
    from nic_lib.models import hub

    assert tc.shipped_logs(hub.checkpoint_dir() / "stages" / "base.pt") is not None


def test_a_continued_run_gets_one_clock_over_all_its_segments():
    # continued twice from a snapshot: its clock restarted at steps 30 and 50
    log = pd.DataFrame({"step": [10, 20, 30, 40, 50, 60],
                        "wall_s": [5.0, 10.0, 2.0, 4.0, 1.0, 3.0]})
    evals = pd.DataFrame({"step": [20, 40, 60], "wall_s": [10.5, 4.5, 3.5]})
    out, ev = tc.continuous_wall_time(log, evals)
    assert out["wall_s"].tolist() == [5.0, 10.0, 12.0, 14.0, 15.0, 17.0]
    assert ev["wall_s"].tolist() == [10.5, 14.5, 17.5]
    assert out["wall_s"].is_monotonic_increasing
    assert log["wall_s"].tolist()[2] == 2.0  # the input is not changed
    # a run that never restarted is left as it is
    same, none = tc.continuous_wall_time(log.iloc[:2])
    assert same["wall_s"].tolist() == [5.0, 10.0] and none is None


def test_the_shipped_main_line_log_has_one_increasing_clock():
    from nic_lib.models import hub

    shipped = tc.shipped_logs(hub.checkpoint_dir() / "mbt2018" / "n96.pt")
    if shipped is None:
        pytest.skip("no shipped n96 log")
    log, evals = shipped
    assert log["wall_s"].is_monotonic_increasing
    assert evals.groupby("step")["wall_s"].min().is_monotonic_increasing


def _records(folder, stem, log_rows, eval_rows=None):
    (folder / stem).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(log_rows, columns=["step", "wall_s"]).to_csv(folder / f"{stem}.log.csv", index=False)
    if eval_rows is not None:
        pd.DataFrame(eval_rows, columns=["step", "wall_s", "quality", "lmbda", "images", "psnr", "bpp", "weights"]
                     ).to_csv(folder / f"{stem}.eval.csv", index=False)


def test_the_main_line_is_one_clock_cut_where_the_next_stage_forked(tmp_path):
    _records(tmp_path, "stages/a", [(10, 100.0), (20, 200.0)], [(20, 200.0, 0, 0.01, 4, 30.0, 0.5, "model")])
    # b continued once (clock restarted at step 30) and was forked at step 30
    _records(tmp_path, "stages/b", [(10, 50.0), (20, 100.0), (30, 10.0), (40, 20.0)],
             [(20, 100.0, 1, 0.01, 4, 31.0, 0.5, "model"), (20, 100.0, 1, 0.01, 4, 31.5, 0.5, "ema"),
              (40, 20.0, 1, 0.01, 4, 32.0, 0.5, "ema")])
    _records(tmp_path, "c", [(10, 36.0)], [(10, 36.0, 1, 0.01, 4, 33.0, 0.4, "ema")])
    stages = (("a", None, "stages/a"), ("missing", None, "stages/missing"), ("b", 30, "stages/b"), ("c", None, "c"))
    logs, ev, spans = tc.main_line_records(tmp_path, stages)
    assert spans["stage"].tolist() == ["a", "b", "c"]
    assert spans["hours"].tolist() == pytest.approx([200 / 3600, 110 / 3600, 36 / 3600])
    assert ev["stage"].tolist() == ["a", "b", "c"]  # b's step 40 is after the fork, its model row not shipped
    assert ev["psnr"].tolist() == [30.0, 31.5, 33.0]  # b's moving average, not its raw weights
    assert ev["hours"].tolist() == pytest.approx([200 / 3600, 300 / 3600, 346 / 3600])
    assert ev["hours"].is_monotonic_increasing
    assert logs["stage"].tolist() == ["a", "a", "b", "b", "b", "c"]  # b cut after its step 30
    assert logs["hours"].tolist() == pytest.approx(np.array([100, 200, 250, 300, 310, 346]) / 3600)


def test_a_branch_starts_its_clock_where_the_main_line_stood_at_the_fork(tmp_path):
    _records(tmp_path, "stages/a", [(10, 100.0), (20, 200.0), (30, 300.0)])
    # the branch forked a at step 25: its clock starts at a's last logged step <= 25 (step 20, 200 s)
    _records(tmp_path, "top", [(30, 40.0), (40, 80.0)],
             [(30, 40.0, 6, 0.05, 4, 35.0, 1.0, "model"), (30, 40.0, 6, 0.05, 4, 35.2, 1.0, "ema"),
              (40, 80.0, 6, 0.05, 4, 35.4, 1.0, "ema")])
    logs, _, _ = tc.main_line_records(tmp_path, (("a", None, "stages/a"),))
    branch = tc.branch_records(tmp_path, logs, (("top", "a", 25, "top"),))
    assert branch["stage"].tolist() == ["top", "top"]
    assert branch["psnr"].tolist() == [35.2, 35.4]  # the moving average, as for the main line
    assert branch["hours"].tolist() == pytest.approx([240 / 3600, 280 / 3600])
    assert list(branch.columns) == list(tc.MAIN_LINE_COLUMNS)
    # no records, or a fork stage the main line lacks: nothing, with the columns
    assert tc.branch_records(tmp_path, logs, (("top", "missing", 25, "top"), ("x", "a", 25, "none"))).empty


def test_a_run_of_some_levels_is_measured_against_the_other_runs_curve_at_the_same_step():
    # the reference: PSNR = 30 + 10 log10(bpp / 0.1) at two steps; model rows are ignored
    ref = pd.DataFrame([{"step": s, "quality": q, "bpp": b, "psnr": 30 + 10 * np.log10(b / 0.1), "weights": w}
                        for s in (10, 20) for q, b in ((1, 0.1), (2, 0.4), (3, 1.0)) for w in ("ema", "model")])
    ref.loc[ref["weights"] == "model", "psnr"] -= 5
    top = pd.DataFrame([{"step": 20, "quality": 2, "bpp": 0.2, "psnr": 33.5, "weights": "ema"},
                        {"step": 20, "quality": 3, "bpp": 2.0, "psnr": 41.0, "weights": "ema"},
                        {"step": 30, "quality": 2, "bpp": 0.2, "psnr": 33.0, "weights": "ema"}])
    t = tc.gap_to_run(top, ref)
    assert t["step"].tolist() == [20, 20]  # step 30: the reference did not evaluate there
    # at 0.2 bpp the reference, linear in log bpp between 0.1 and 0.4, reads 33.0103 dB
    midway = 30 + 0.5 * 10 * np.log10(4)  # 0.2 bpp is halfway from 0.1 to 0.4 in log bpp
    assert t.loc[0, "gap_db"] == pytest.approx(33.5 - midway)
    assert np.isnan(t.loc[0, "beyond_db"])
    # beyond the reference's top rate: the nearest level's difference and the bpp ratio
    assert np.isnan(t.loc[1, "gap_db"])
    assert t.loc[1, "beyond_db"] == pytest.approx(1.0) and t.loc[1, "beyond_bpp_ratio"] == pytest.approx(2.0)


def _shipped_config(folder, stem, **flags):
    import json

    base = {"steps": 30000, "lr": 0.001, "crops": 16384, "batch_size": 8, "precision": "fp32"}
    (folder / f"{stem}.config.json").write_text(json.dumps({"config": {**base, **flags}}))
    return folder / f"{stem}.pt"


def test_protocol_budgets_read_each_shipped_models_own_record(tmp_path):
    files = {"joint": _shipped_config(tmp_path, "joint"), "mean": _shipped_config(tmp_path, "mean"),
             "absent": tmp_path / "absent.pt"}
    budgets = tc.protocol_budgets(files)
    assert list(budgets["model"]) == ["joint", "mean"]  # a model without a record is left out
    assert list(budgets.columns) == list(tc.BUDGET_COLUMNS)
    assert "All 2 protocol models" in tc.budget_summary(budgets) and "30,000 steps" in tc.budget_summary(budgets)


def test_a_budget_summary_names_the_models_trained_otherwise(tmp_path):
    files = {"joint": _shipped_config(tmp_path, "joint", steps=10000),
             "mean": _shipped_config(tmp_path, "mean"), "gmm": _shipped_config(tmp_path, "gmm", steps=10000)}
    text = tc.budget_summary(tc.protocol_budgets(files))
    assert "differ in steps" in text
    assert "10,000 steps: joint, gmm" in text and "30,000 steps: mean" in text
    assert tc.budget_summary(tc.protocol_budgets({})) == "No protocol model is shipped yet."
