"""Properties of the learning-curve benchmark's pure functions (benchmarks/learning_curves.py).

Small hand-made tables only: nothing here trains or encodes. The distance of an evaluation
to JPEG 2000 is nic_lib.training_curves' (tests/test_training_curves.py).
"""

import pandas as pd
import pytest

from benchmark_modules import load_benchmark
from nic_lib import training_curves

lc = load_benchmark("learning_curves")

#: A made-up JPEG 2000 curve: +3 dB per doubling of the rate, 0.125 .. 2 bpp.
J2K = pd.DataFrame({"bpp": [0.125, 0.25, 0.5, 1.0, 2.0],
                    "psnr_rgb": [26.0, 29.0, 32.0, 35.0, 38.0]})


def _evals(rows):
    """Evaluation rows (recipe, wall_h, step, quality, lmbda, bpp, psnr) -> evals table."""
    df = pd.DataFrame(rows, columns=["recipe", "wall_h", "step", "quality", "lmbda", "bpp", "psnr"])
    df["images"] = 24
    return df


def _curve(recipe, times, gaps, lmbda=lc.LMBDA):
    """An output-table fragment of a fixed-rate run with the given gaps at given times."""
    return pd.DataFrame({"recipe": recipe, "wall_h": times, "step": range(len(times)),
                         "lmbda": lmbda, "gap_to_jpeg2000_db": gaps})


def test_recipe_higher_at_every_time_is_ahead_even_when_evaluated_at_other_times():
    table = pd.concat([_curve("baseline", [0.2, 0.5, 1.0], [-6.0, -4.0, -3.0]),
                       _curve("project", [0.15, 0.45, 0.9, 1.1], [-5.0, -3.0, -2.0, -1.8])])
    cmp_ = lc.compare_at_equal_times(table, "project")
    # compared only inside both ranges: 0.2 .. 1.0 h, at either run's evaluation times
    assert cmp_["wall_h"].tolist() == pytest.approx([0.2, 0.45, 0.5, 0.9, 1.0])
    # the baseline at 0.45 h is interpolated in time between -6 dB (0.2 h) and -4 dB (0.5 h)
    assert cmp_.set_index("wall_h")["baseline_gap_db"].loc[0.45] == pytest.approx(-6.0 + 2.0 * 0.25 / 0.3)
    assert lc.ahead_at_every_time(cmp_)


def test_recipe_behind_at_one_time_is_not_ahead():
    table = pd.concat([_curve("baseline", [0.2, 0.5, 1.0], [-6.0, -4.0, -3.0]),
                       _curve("project", [0.2, 0.5, 1.0], [-5.0, -4.2, -2.0])])
    cmp_ = lc.compare_at_equal_times(table, "project")
    assert cmp_["ahead"].tolist() == [True, False, True]
    assert not lc.ahead_at_every_time(cmp_)


def test_variable_rate_run_is_compared_at_the_baselines_lambda_only():
    vr = pd.concat([_curve("project-vr", [0.5, 1.0], [9.0, 9.0], lmbda=0.0483),
                    _curve("project-vr", [0.5, 1.0], [-5.0, -5.0], lmbda=lc.LMBDA)])
    table = pd.concat([_curve("baseline", [0.5, 1.0], [-4.0, -4.0]), vr])
    cmp_ = lc.compare_at_equal_times(table, "project-vr")
    assert cmp_["recipe_gap_db"].tolist() == [-5.0, -5.0]
    assert not lc.ahead_at_every_time(cmp_)


def test_runs_without_a_common_time_are_not_called_ahead():
    table = pd.concat([_curve("baseline", [0.1, 0.2], [-6.0, -5.0]),
                       _curve("project", [0.5, 0.6], [0.0, 1.0])])
    cmp_ = lc.compare_at_equal_times(table, "project")
    assert cmp_.empty and not lc.ahead_at_every_time(cmp_)
    assert not lc.ahead_at_every_time(lc.compare_at_equal_times(table, "missing"))


def test_comparison_table_stacks_each_recipe_against_the_baseline():
    table = pd.concat([_curve("baseline", [0.5, 1.0], [-4.0, -3.0]),
                       _curve("project", [0.5, 1.0], [-3.0, -3.5]),
                       _curve("other", [0.5, 1.0], [-5.0, -5.0])])
    both = lc.comparison_table(table)
    assert list(both.columns) == ["recipe", "baseline", *lc.COMPARISON_COLUMNS]
    assert both["recipe"].tolist() == ["project", "project", "other", "other"]
    assert (both["baseline"] == "baseline").all()
    assert both["margin_db"].tolist() == pytest.approx([1.0, -0.5, -1.0, -2.0])
    # one recipe alone, or no baseline run: nothing to compare, an empty table
    assert lc.comparison_table(table[table["recipe"] == "baseline"]).empty
    assert lc.comparison_table(table[table["recipe"] != "baseline"]).empty


def test_eval_interval_covers_the_wanted_minutes_at_the_measured_throughput():
    # 56 img/s at batch 8 = 7 steps/s: 10 minutes = 4200 steps
    assert lc.eval_every_steps(56.0, 8, 10.0) == 4200
    assert lc.eval_every_steps(0.01, 8, 0.01) == 1
    with pytest.raises(ValueError, match="probe"):
        lc.eval_every_steps(0.0, 8, 10.0)


def test_read_run_times_each_evaluation_by_its_first_level(tmp_path):
    (tmp_path / "eval.csv").write_text(
        "step,wall_s,quality,lmbda,images,loss,mse,psnr,bpp\n"
        "100,360.0,1,0.0018,24,1,1,28.0,0.2\n"
        "100,363.6,2,0.0035,24,1,1,29.0,0.3\n"
        "200,720.0,1,0.0018,24,1,1,28.5,0.2\n")
    ev = lc.read_run(tmp_path, "project-vr")
    assert ev["wall_h"].tolist() == pytest.approx([0.1, 0.1, 0.2])
    assert set(ev["recipe"]) == {"project-vr"}
    assert lc.read_run(tmp_path / "missing", "x").empty


def test_every_recipe_is_valid_train_flags_with_the_same_model_and_its_widths():
    from nic_lib import train

    parser = train._parser()  # the flags of python -m nic_lib.train: a typo fails here
    for recipe in lc.RECIPES:
        args = vars(parser.parse_args(lc.train_flags(recipe, 60, 1000)))
        widths = lc.RECIPE_WIDTHS.get(recipe, (64, 96))
        assert (args["model"], args["N"], args["M"]) == ("mbt2018", *widths)
        assert args["max_minutes"] == 60 and args["eval_images"] == 24 and args["eval_crop"] == 0
        assert args.get("lmbda", lc.LMBDA) == lc.LMBDA
    assert vars(parser.parse_args(lc.train_flags("project", 60, 1)))["schedule_clock"] == "time"
    with pytest.raises(KeyError, match="project"):
        lc.train_flags("nope", 60, 1)


def test_docstring_table_lists_every_recipes_flags():
    # rows of the reST table: "name  ``flags``", continued on lines starting with spaces
    rows, name = {}, None
    table = lc.__doc__.split("recipe        flags")[1].split("(all)")[0]
    for line in table.splitlines():
        if not line.strip() or line.startswith("="):
            continue
        if not line.startswith(" "):
            name, line = line.split(maxsplit=1)
        rows[name] = rows.get(name, []) + line.replace("``", " ").split()
    assert rows == lc.RECIPES


def test_summary_says_whether_the_recipe_is_ahead():
    evals = _evals([("baseline", 0.5, 100, None, lc.LMBDA, 0.5, 29.0),
                    ("baseline", 1.0, 200, None, lc.LMBDA, 0.5, 30.0),
                    ("project", 0.5, 400, None, lc.LMBDA, 0.5, 30.0),
                    ("project", 1.0, 800, None, lc.LMBDA, 0.5, 31.0)])
    text = lc.summary_markdown(training_curves.add_jpeg2000_columns(evals, J2K))
    assert "project ahead of baseline at every equal time (2 times" in text
    assert ": yes;" in text and "+1.00 dB" in text


def test_read_run_gives_the_ema_evaluations_a_curve_of_their_own(tmp_path):
    (tmp_path / "eval.csv").write_text(
        "step,wall_s,quality,lmbda,images,loss,mse,psnr,bpp,weights\n"
        "100,360.0,1,0.0018,24,1,1,28.0,0.2,model\n"
        "100,363.6,2,0.0035,24,1,1,29.0,0.3,model\n"
        "100,367.2,1,0.0018,24,1,1,28.2,0.2,ema\n"
        "100,370.8,2,0.0035,24,1,1,29.2,0.3,ema\n")
    ev = lc.read_run(tmp_path, "project-vr")
    assert ev["recipe"].tolist() == ["project-vr"] * 2 + ["project-vr-ema"] * 2
    assert ev["wall_h"].tolist() == pytest.approx([0.1, 0.1, 0.102, 0.102])
