"""The notebook runner: parameter injection, failure reports, CLI exit codes, selection.

Tiny py:percent notebooks are written into a temporary folder; each kernel start costs a
few seconds, so executions are shared between tests through module-scoped fixtures.
"""

import os
import sys
from pathlib import Path

import nbformat
import pytest

from nic_lib import notebooks
from nic_lib.notebooks import NotebookExecutionError, list_notebooks, parse_parameter_value, run_notebook

# Writes, relative to its working directory, a file whose content depends on injected
# parameters and on the interpreter running the kernel.
PASSING = '''\
# %% [markdown]
# # A passing notebook

# %%
import sys
from pathlib import Path

# %% tags=["parameters"]
PROFILE = "cpu"  # smoke | cpu | full
MESSAGE = "default"  # replaced by -p MESSAGE ...
COUNT = 0  # replaced by -p COUNT 3, read as YAML (an int)

# %%
Path("result.txt").write_text(f"{PROFILE}|{MESSAGE}|{COUNT!r}")
Path("kernel_python.txt").write_text(sys.executable)
print("wrote result.txt")
'''

# Cell 3 raises; cell 4 must never run.
FAILING = '''\
# %%
x = 1

# %% tags=["parameters"]
PROFILE = "cpu"

# %%
y = x + 1
raise ValueError("boom in cell three")

# %%
Path("never.txt").write_text("cell 4 ran")
'''
FAILING_CELL_NUMBER = 3
FAILING_CELL_LINE = 7  # the "# %%" line above the raise

NO_PARAMETERS_CELL = '''\
# %%
PROFILE = "cpu"
'''

PARAMETERS_CELL_WITHOUT_PROFILE = '''\
# %% tags=["parameters"]
SEED = 0
'''


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("notebooks")
    texts = {
        "01_passing": PASSING,
        "02_failing": FAILING,
        "03_no_parameters": NO_PARAMETERS_CELL,
        "04_no_profile": PARAMETERS_CELL_WITHOUT_PROFILE,
    }
    for stem, text in texts.items():
        (folder / f"{stem}.py").write_text(text)
    return {stem: folder / f"{stem}.py" for stem in texts}


@pytest.fixture(scope="module")
def cli_passing_run(sources, tmp_path_factory):
    """The passing notebook run through the CLI with two injected parameters."""
    out = tmp_path_factory.mktemp("out_passing")
    argv = ["run", str(sources["01_passing"]), "--profile", "smoke", "-p", "MESSAGE", "injected", "-p", "COUNT", "3"]
    status = notebooks.main([*argv, "--out", str(out)])
    return status, out


@pytest.fixture(scope="module")
def failure(sources, tmp_path_factory) -> NotebookExecutionError:
    out = tmp_path_factory.mktemp("out_failing")
    with pytest.raises(NotebookExecutionError) as info:
        run_notebook(sources["02_failing"], profile="smoke", out_dir=out)
    return info.value


def test_injected_parameters_reach_the_notebook(cli_passing_run, sources):
    status, _ = cli_passing_run
    assert status == 0
    result = sources["01_passing"].parent / "result.txt"  # cwd is the notebook's folder
    assert result.read_text() == "smoke|injected|3"


def test_kernel_runs_this_interpreter(cli_passing_run, sources):
    kernel_python = (sources["01_passing"].parent / "kernel_python.txt").read_text()
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve()


def test_executed_notebook_keeps_outputs_and_injected_cell(cli_passing_run):
    _, out = cli_passing_run
    nb = nbformat.read(out / "01_passing.executed.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'PROFILE = "smoke"' in injected[0].source
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "wrote result.txt" in printed
    assert not (out / "01_passing.running.ipynb").exists()


def test_failure_names_notebook_cell_and_exception(failure, sources):
    assert failure.notebook == sources["02_failing"]
    assert failure.cell_number == FAILING_CELL_NUMBER
    assert failure.line == FAILING_CELL_LINE
    assert (failure.ename, failure.evalue) == ("ValueError", "boom in cell three")
    message = str(failure)
    assert "02_failing.py" in message
    assert f"cell {FAILING_CELL_NUMBER} (line {FAILING_CELL_LINE})" in message
    assert "y = x + 1" in message  # the cell's first source line
    assert "ValueError: boom in cell three" in message
    assert str(failure.executed_path) in message


def test_failed_run_keeps_executed_notebook_with_traceback(failure, sources):
    nb = nbformat.read(failure.executed_path, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["ValueError"]
    assert not (sources["02_failing"].parent / "never.txt").exists()  # stopped at the failing cell


def test_cli_continues_after_failure_and_exits_nonzero(tmp_path, capsys):
    # Own copies: the passing notebook writes next to itself.
    (tmp_path / "02_failing.py").write_text(FAILING)
    (tmp_path / "03_passing.py").write_text(PASSING)
    argv = ["run", str(tmp_path / "02_failing.py"), str(tmp_path / "03_passing.py"), "--profile", "smoke"]
    status = notebooks.main([*argv, "--out", str(tmp_path / "out")])
    summary = capsys.readouterr().out
    assert status != 0
    assert f"FAILED   cell {FAILING_CELL_NUMBER}: ValueError" in summary
    assert (tmp_path / "result.txt").read_text() == "smoke|default|0"  # ran after the failure


@pytest.mark.parametrize(
    ("stem", "expected"),
    [("03_no_parameters", "exactly one cell tagged 'parameters'"), ("04_no_profile", "does not assign PROFILE")],
)
def test_notebook_without_profile_parameter_is_refused_before_running(sources, tmp_path, stem, expected):
    with pytest.raises(ValueError, match=expected) as info:
        run_notebook(sources[stem], profile="smoke", out_dir=tmp_path)
    assert f"{stem}.py" in str(info.value)
    assert 'PROFILE = "cpu"' in str(info.value)  # the fix
    assert not list(tmp_path.iterdir())


def test_unknown_parameter_is_refused(sources, tmp_path):
    with pytest.raises(ValueError, match="MESAGE.*known: COUNT, MESSAGE, PROFILE"):
        run_notebook(sources["01_passing"], profile="smoke", parameters={"MESAGE": "typo"}, out_dir=tmp_path)


def test_list_notebooks_selects_by_stem_or_prefix(tmp_path):
    for name in ["10_c.py", "00_a.py", "01_b.py", "helper.py", "01_b.ipynb"]:
        (tmp_path / name).write_text("# %%\n")
    assert [p.name for p in list_notebooks(notebook_dir=tmp_path)] == ["00_a.py", "01_b.py", "10_c.py"]
    assert [p.name for p in list_notebooks(["01"], notebook_dir=tmp_path)] == ["01_b.py"]
    assert [p.name for p in list_notebooks(["10_c", "00_a", "00"], notebook_dir=tmp_path)] == ["00_a.py", "10_c.py"]


def test_list_notebooks_unknown_name_lists_available(tmp_path):
    for name in ["00_a.py", "01_b.py"]:
        (tmp_path / name).write_text("# %%\n")
    with pytest.raises(ValueError, match="no notebook named '07'.*available: 00_a, 01_b"):
        list_notebooks(["07"], notebook_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("0.5", 0.5),
        ("true", True),
        ("[1, 2]", [1, 2]),
        ("jpeg", "jpeg"),
        ('"007"', "007"),  # quoted: stays a string
        ("2024-01-01", "2024-01-01"),  # a YAML date papermill could not inject: kept as text
    ],
)
def test_parameter_values_are_read_as_yaml(text, value):
    assert parse_parameter_value(text) == value


def test_executed_notebook_keeps_its_figure_when_the_shell_selects_agg(tmp_path, monkeypatch):
    """CI exports MPLBACKEND=Agg; the kernel must still draw inline (the site shows the figure)."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    source = tmp_path / "01_fig.py"
    source.write_text('# %% tags=["parameters"]\nPROFILE = "cpu"\n\n'
                      "# %%\nimport matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()\n")
    executed = run_notebook(source, "smoke", out_dir=tmp_path / "out", log_output=False)
    outputs = [o for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert os.environ["MPLBACKEND"] == "Agg"  # this process's setting is restored
