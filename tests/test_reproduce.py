"""Properties of nic_lib.reproduce: drift beyond a declared tolerance is reported, drift within is not,
provenance tells code from environment, and `verify` never writes into the committed tables.

Every table here is a small synthetic pair written into a temporary folder, never paper_figures/.
"""

import io
import json

import numpy as np
import pandas as pd
import pytest

from nic_lib import notebooks, reproduce
from nic_lib.reproduce import EXACT, IGNORE, close


def committed_and_regenerated(tmp_path, table: pd.DataFrame, **tolerances):
    """Write ``table`` as the committed and the regenerated version (identical), with its tolerances."""
    folders = tmp_path / "committed" / "07_toy", tmp_path / "regenerated" / "07_toy"
    for folder in folders:
        reproduce.save_table(table, folder / "toy.csv", **tolerances)
    return folders


def edit_csv(path, row, column, value):
    """Change one cell of a written CSV, as someone editing a committed number would."""
    df = pd.read_csv(path)
    df.loc[row, column] = value
    df.to_csv(path, index=False)


@pytest.fixture()
def table():
    return pd.DataFrame({
        "codec": ["linear", "linear", "MLP"],
        "input": ["clean", "noise", "clean"],
        "bytes": [1200, 1350, 990],  # a count: exact
        "theta_eff": [0.1898, 0.1898, 0.5249],  # a float metric: rtol 1e-6
        "seconds": [1.25, 1.5, 3.0],  # wall clock: ignored
    })


def test_identical_tables_are_reported_identical(tmp_path, table):
    committed, regenerated = committed_and_regenerated(tmp_path, table, floats=close(rtol=1e-6),
                                                       columns={"seconds": IGNORE})
    result = reproduce.compare_folders(committed, regenerated)
    assert not result.drifted
    assert [(t.name, t.status) for t in result.tables] == [("toy.csv", "identical")]


def test_a_deliberately_changed_committed_number_is_drift_naming_file_column_and_row(tmp_path, table):
    committed, regenerated = committed_and_regenerated(tmp_path, table, floats=close(rtol=1e-6),
                                                       columns={"seconds": IGNORE})
    edit_csv(committed / "toy.csv", 1, "theta_eff", 0.1911)  # +0.7%, the size of issue 33's drift
    result = reproduce.compare_folders(committed, regenerated)
    assert result.drifted
    [toy] = result.tables
    assert toy.status == "drift" and len(toy.problems) == 1
    assert "theta_eff: 1 of 3 rows beyond rtol 1e-06" in toy.problems[0]
    assert "row 1 (codec=linear, input=noise)" in toy.problems[0]
    report = result.report()
    assert "DRIFT toy.csv" in report and "theta_eff" in report


def test_drift_within_tolerance_and_in_ignored_columns_passes(tmp_path, table):
    committed, regenerated = committed_and_regenerated(tmp_path, table, floats=close(rtol=1e-6),
                                                       columns={"seconds": IGNORE})
    edit_csv(committed / "toy.csv", 0, "theta_eff", 0.1898 * (1 + 3e-7))  # float noise, within rtol
    edit_csv(committed / "toy.csv", 2, "seconds", 99.0)  # another machine's clock
    result = reproduce.compare_folders(committed, regenerated)
    assert not result.drifted
    [toy] = result.tables
    assert toy.status == "within tolerance"
    column, rel, tol = toy.largest
    assert column == "theta_eff" and rel == pytest.approx(3e-7, rel=1e-3) and tol == close(rtol=1e-6)


def test_a_count_must_repeat_exactly(tmp_path, table):
    committed, regenerated = committed_and_regenerated(tmp_path, table, floats=close(rtol=0.5))
    edit_csv(committed / "toy.csv", 2, "bytes", 991)
    [toy] = reproduce.compare_folders(committed, regenerated).tables
    assert toy.status == "drift" and toy.problems[0].startswith("bytes: 1 of 3 rows beyond exact")


def test_missing_extra_and_reshaped_tables_are_drift(tmp_path, table):
    committed, regenerated = committed_and_regenerated(tmp_path, table)
    table.to_csv(committed / "stale.csv", index=False)  # committed, no longer written
    table.to_csv(regenerated / "new.csv", index=False)  # written, never committed
    table.iloc[:2].to_csv(committed / "toy.csv", index=False)  # a row fewer
    result = reproduce.compare_folders(committed, regenerated)
    status = {t.name: t.status for t in result.tables}
    assert status == {"new.csv": "not committed", "stale.csv": "not regenerated", "toy.csv": "drift"}
    assert "2 rows committed, 3 regenerated" in result.report()


def test_figures_are_listed_not_compared(tmp_path, table):
    committed, regenerated = committed_and_regenerated(tmp_path, table)
    (committed / "fig1.png").write_bytes(b"png 1")
    (regenerated / "fig1.png").write_bytes(b"png 2")
    result = reproduce.compare_folders(committed, regenerated)
    assert result.figures == (0, 1, []) and not result.drifted
    (committed / "fig2.png").write_bytes(b"gone")
    assert reproduce.compare_folders(committed, regenerated).drifted


def test_undeclared_columns_follow_their_type():
    df = pd.DataFrame({"n": [1, 2], "name": ["a", "b"], "ok": [True, False], "x": [0.5, 1.5]})
    rules = reproduce.column_tolerances(df, floats=close(rtol=1e-3), columns={"n": IGNORE})
    assert rules == {"n": IGNORE, "name": EXACT, "ok": EXACT, "x": close(rtol=1e-3)}
    with pytest.raises(ValueError, match="does not have"):
        reproduce.column_tolerances(df, columns={"nn": IGNORE})
    with pytest.raises(ValueError, match="close"):
        reproduce.Tolerance("exact", rtol=1e-3)


def test_save_table_records_tolerances_environment_and_code(tmp_path, table):
    path = reproduce.save_table(table, tmp_path / "07_toy" / "toy.csv", columns={"seconds": IGNORE})
    pd.testing.assert_frame_equal(pd.read_csv(path), table)
    record = json.loads((path.parent / reproduce.PROVENANCE_FILE).read_text())
    assert record["tables"]["toy.csv"]["rows"] == 3
    assert record["tables"]["toy.csv"]["columns"]["seconds"] == {"kind": "ignore"}
    assert record["tables"]["toy.csv"]["columns"]["theta_eff"] == reproduce.DEFAULT_FLOAT.to_json()
    env = record["environment"]
    assert {"python", "cpu", "cpu_count", "torch_threads", "device", "packages"} <= set(env)
    assert "numpy" in env["packages"] and env["packages"]["numpy"] == np.__version__
    assert len(record["code"]["nic_lib_sha256"]) == 64
    with pytest.raises(ValueError, match="CSV"):
        reproduce.save_table(table, tmp_path / "toy.txt")


def test_provenance_tells_a_code_change_from_an_environment_change():
    base = {"code": {"git_commit": "a" * 40, "nic_lib_sha256": "1" * 64},
            "environment": {"torch_threads": 1, "packages": {"torch": "2.5.0", "numpy": "1.26.4"}}}
    env_changed = json.loads(json.dumps(base))
    env_changed["environment"]["packages"]["torch"] = "2.6.0"
    assert reproduce.provenance_changes(base, env_changed) == {"code": [], "environment": ["packages.torch: 2.5.0 -> 2.6.0"]}
    code_changed = json.loads(json.dumps(base))
    code_changed["code"]["nic_lib_sha256"] = "2" * 64
    changes = reproduce.provenance_changes(base, code_changed)
    assert changes["environment"] == [] and changes["code"] == ["nic_lib_sha256: 111111111111 -> 222222222222"]
    assert "no provenance.json" in reproduce.provenance_changes(None, base)["code"][0]


# A notebook that writes one table through reproduce.save_table into FIGURE_DIR, recording
# whether the verify run bypassed its caches (REFRESH injected, RESULTS_DIR in the scratch folder).
TINY_NOTEBOOK = '''\
# %%
from pathlib import Path

import pandas as pd

from nic_lib import plotting, reproduce

# %% tags=["parameters"]
PROFILE = "cpu"
FIGURE_DIR = None
RESULTS_DIR = None
REFRESH = False

# %%
fig_dir = plotting.figure_dir("07_toy", PROFILE, FIGURE_DIR)
results = Path(RESULTS_DIR) if RESULTS_DIR else None
table = pd.DataFrame({"codec": ["linear", "MLP"], "bytes": [1200, 990], "theta_eff": [0.1898, 0.5249],
                      "refresh": [REFRESH, REFRESH], "scratch_results": [results is not None and "verify" in str(results)] * 2})
reproduce.save_table(table, fig_dir / "toy.csv", floats=reproduce.close(rtol=1e-6))
'''


@pytest.mark.slow
@pytest.mark.notebook
def test_verify_passes_on_a_faithful_rerun_fails_on_an_edited_number_and_never_writes_the_committed_folder(tmp_path):
    nb_dir, committed_root, scratch = tmp_path / "notebooks", tmp_path / "paper_figures", tmp_path / "build" / "verify"
    nb_dir.mkdir()
    (nb_dir / "07_toy.py").write_text(TINY_NOTEBOOK)
    expected = pd.DataFrame({"codec": ["linear", "MLP"], "bytes": [1200, 990], "theta_eff": [0.1898, 0.5249],
                             "refresh": [True, True], "scratch_results": [True, True]})
    reproduce.save_table(expected, committed_root / "07_toy" / "toy.csv", floats=close(rtol=1e-6))

    def run():
        out = io.StringIO()
        status = notebooks.verify(["07"], scratch, committed_root=committed_root, notebook_dir=nb_dir, stream=out)
        return status, out.getvalue()

    status, report = run()
    assert status == 0, report
    assert "ok    toy.csv  identical" in report and (scratch / "figures" / "07_toy" / "toy.csv").is_file()

    edit_csv(committed_root / "07_toy" / "toy.csv", 0, "theta_eff", 0.1911)
    edited = (committed_root / "07_toy" / "toy.csv").read_bytes()
    status, report = run()
    assert status == 1
    assert "DRIFT toy.csv" in report and "theta_eff: 1 of 2 rows beyond rtol 1e-06" in report
    assert (committed_root / "07_toy" / "toy.csv").read_bytes() == edited  # reported, not overwritten
    assert "DRIFT" in (scratch / "07_toy.drift.txt").read_text()


def test_verify_command_names_an_unknown_notebook(capsys):
    assert notebooks.main(["verify", "99_no_such_notebook"]) == 2
    assert "no notebook named" in capsys.readouterr().err
