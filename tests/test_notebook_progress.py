"""`python -m nic_lib.notebooks run` as a newcomer sees it: estimates of what is left, paper keys, Control-C.

Tiny notebooks in a temporary folder; each run starts a kernel (a few seconds).
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from nic_lib import notebooks
from nic_lib.notebooks import PAPERS, RunProgress, estimate_run, list_notebooks, run_notebook

# One long cell with a progress bar, the shape of a rate sweep.
LOOP = '''\
# %% [markdown]
# # A loop

# %% tags=["parameters"]
PROFILE = "cpu"
SECONDS = 2.0  # how long the loop runs

# %% [markdown]
# ## The long cell

# %%
import time
from tqdm.auto import tqdm
for _ in tqdm(range(10), desc="sweep"):
    time.sleep(SECONDS / 10)
'''


def test_paper_keys_select_their_notebooks(tmp_path):
    for name in ["00_a.py", "01_b.py", "02_c.py", "03_d.py", "04_e.py", "05_f.py", "06_g.py"]:
        (tmp_path / name).write_text("# %%\n")
    assert [p.name for p in list_notebooks(["ood-nic"], notebook_dir=tmp_path)] == ["02_c.py", "03_d.py", "04_e.py"]
    assert [p.name for p in list_notebooks(["mbt2018", "05"], notebook_dir=tmp_path)] == ["01_b.py", "05_f.py", "06_g.py"]


@pytest.mark.parametrize("paper", PAPERS)
def test_every_paper_key_selects_notebooks_of_this_repository(paper):
    assert len(list_notebooks([paper])) == len(PAPERS[paper])


def test_before_any_run_the_estimate_is_the_measured_time(tmp_path):
    estimate = estimate_run(notebooks.NOTEBOOK_DIR / "01_mbt2018.py", "cpu", out_dir=tmp_path)
    assert estimate.seconds == notebooks.MEASURED_SECONDS["cpu"]["01_mbt2018"]
    assert "measured" in estimate.basis
    assert estimate_run(notebooks.NOTEBOOK_DIR / "01_mbt2018.py", "smoke", out_dir=tmp_path).seconds is None


@pytest.mark.slow
def test_progress_lines_estimate_what_is_left_from_the_last_run(tmp_path):
    source = tmp_path / "01_loop.py"
    source.write_text(LOOP)
    out = tmp_path / "out"
    transcripts = []
    for _ in range(2):
        estimate = estimate_run(source, "smoke", {}, out)
        lines = io.StringIO()
        progress = RunProgress([(source.stem, estimate)], stream=lines, heartbeat_s=0.5, long_cell_s=0.5)
        progress.begin()
        progress.notebook_started(0)
        run_notebook(source, "smoke", out_dir=out, progress=progress, log_output=False)
        progress.notebook_finished(0, ok=True)
        transcripts.append(lines.getvalue())
    first, second = transcripts
    assert "no estimate" in first
    assert "cell 4/4 (The long cell) running" in first  # a line while the long cell runs...
    assert "sweep:" in first  # ...with the progress bar it printed
    assert "[1/1] 01_loop: expected" in second and "last run here" in second
    # the loop sleeps 2 s; the expectation is the first run's measured time, which a loaded
    # machine stretches: check the line, not the number
    assert re.search(r"cell 4/4 \(The long cell\) started, expected \d+ s", second), second
    assert "left here" in second


def _long_cell_running(path) -> bool:
    """True once papermill has marked the notebook's tqdm cell as running."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return False
    return any("tqdm" in "".join(c.get("source", "")) and
               c.get("metadata", {}).get("papermill", {}).get("status") == "running"
               for c in nb.get("cells", []))


@pytest.mark.slow
def test_control_c_stops_the_run_and_prints_the_command_that_goes_on(tmp_path):
    (tmp_path / "01_slow.py").write_text(LOOP)
    (tmp_path / "02_next.py").write_text(LOOP)
    command = [sys.executable, "-m", "nic_lib.notebooks", "run", str(tmp_path / "01_slow.py"), str(tmp_path / "02_next.py"),
               "--profile", "smoke", "-p", "SECONDS", "120", "--out", str(tmp_path / "out")]
    # a shell that starts a job in the background (``.ci/run &``) makes it ignore SIGINT, and
    # children inherit that: give the run the default handler, as a terminal's would have
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True)
    reader.start()
    seen, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline and not any("Executing notebook with kernel" in line for line in seen):
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            assert process.poll() is None, "".join(seen)
    # wait until the long cell runs (papermill saves the notebook as each cell starts)
    running, deadline = tmp_path / "out" / "01_slow.running.ipynb", time.monotonic() + 120
    while time.monotonic() < deadline and not _long_cell_running(running):
        assert process.poll() is None, "".join(seen)
        time.sleep(0.5)
    time.sleep(1)
    os.kill(process.pid, signal.SIGINT)  # what Control-C sends
    code = process.wait(timeout=300)  # the kernel shuts down first: slow on a loaded machine
    reader.join(timeout=60)
    assert code == 130, "".join(seen) + "".join(lines.get() for _ in range(lines.qsize()))
    while not lines.empty():  # every line of stderr, up to its end (the reader has joined)
        seen.append(lines.get())
    text = "".join(seen)
    assert "Interrupted in 01_slow" in text
    assert f"python -m nic_lib.notebooks run {tmp_path / '01_slow.py'} {tmp_path / '02_next.py'} --profile smoke" in text
    assert "-p SECONDS 120" in text
    assert not (tmp_path / "out" / "02_next.executed.ipynb").exists()
