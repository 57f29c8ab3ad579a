"""`make lab`: JupyterLab opens every notebooks/NN_*.py as a notebook, and saving keeps the .py.

One JupyterLab for the module, started as `make lab` starts it (`python -m nic_lib.lab`,
the project's `.jupyter/` settings) on the loopback address with a token, serving a copy of
the notebooks. The user's own Jupyter folders are swapped for empty temporary ones, so the
project's settings alone decide what a double click does. The browser tests drive headless
Chromium and leave screenshots in build/test-artefacts/.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

import browser
from nic_lib.lab import PROJECT_JUPYTER_CONFIG, lab_environment
from nic_lib.notebooks import NOTEBOOK_DIR, list_notebooks
from nic_lib.site import notebook_title

pytestmark = pytest.mark.slow

#: Seconds JupyterLab may take to start on a busy 2-core machine.
STARTUP_TIMEOUT_S = 180
NOTEBOOKS = list_notebooks()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running `python -m nic_lib.lab` and what it printed."""

    def __init__(self, root: Path, home: Path):
        self.root = root
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        env = {**os.environ}
        for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                         ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                         ("IPYTHONDIR", "ipython")]:
            env[var] = str(home / sub)
        env.pop("JUPYTER_CONFIG_PATH", None)
        command = [sys.executable, "-m", "nic_lib.lab", "--root", str(root), "--no-browser", "--ip", "127.0.0.1",
                   "--port", str(self.port), "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}"]
        # Its own process group, so that teardown stops the launcher and JupyterLab together.
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.banner = self._wait_for(r"/lab/tree/\S+\?token=", STARTUP_TIMEOUT_S)

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line)

    def _wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.lines.append(line)
            if re.search(pattern, line):
                return "".join(self.lines)
        self.stop()
        pytest.fail("python -m nic_lib.lab printed no notebook URL; its output:\n" + "".join(self.lines[-40:]))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}{path}?token={self.token}"

    def api(self, method: str, path: str, body: dict | None = None, query: str = "") -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url(path)}{query}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # JupyterLab shuts its kernels down on SIGTERM
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a copy of notebooks/ (the sources and jupytext.toml), as `make lab` starts it."""
    root = tmp_path_factory.mktemp("lab") / "notebooks"
    root.mkdir()
    for source in NOTEBOOKS:
        shutil.copy2(source, root)
    shutil.copy2(NOTEBOOK_DIR / "jupytext.toml", root)
    server = Lab(root, tmp_path_factory.mktemp("jupyter-home"))
    yield server
    server.stop()


def test_lab_prints_its_url_and_a_notebook_url_with_the_token(lab):
    assert f"{lab.base}/lab?token={lab.token}" in lab.banner.replace("localhost", "127.0.0.1")
    assert f"/lab/tree/{NOTEBOOKS[0].name}?token={lab.token}" in lab.banner


def test_project_settings_make_python_files_open_as_notebooks_and_turn_news_off(lab):
    viewers = lab.api("GET", "/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert viewers["schema"]["properties"]["defaultViewers"]["default"] == {"python": "Jupytext Notebook"}
    notifications = lab.api("GET", "/lab/api/settings/@jupyterlab/apputils-extension:notification")
    assert notifications["schema"]["properties"]["fetchNews"]["default"] == "false"


def test_project_settings_leave_the_users_jupyter_folder_alone():
    env = lab_environment({"JUPYTER_CONFIG_PATH": "/elsewhere", "HOME": "/home/someone"})
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [str(PROJECT_JUPYTER_CONFIG), "/elsewhere"]
    assert "JUPYTER_CONFIG_DIR" not in env  # ~/.jupyter stays the user's own
    assert (PROJECT_JUPYTER_CONFIG / "labconfig" / "default_setting_overrides.json").is_file()


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_saving_an_unedited_notebook_leaves_its_py_byte_for_byte(lab, source):
    path = lab.root / source.name
    before = path.read_bytes()
    model = lab.api("GET", f"/api/contents/{source.name}", query="&type=notebook&content=1")
    assert model["type"] == "notebook"
    lab.api("PUT", f"/api/contents/{source.name}", {"type": "notebook", "format": "json", "content": model["content"]})
    assert path.read_bytes() == before


def test_saving_an_edited_notebook_writes_the_edit_into_the_py_and_its_paired_ipynb(lab):
    model = lab.api("GET", f"/api/contents/{NOTEBOOKS[-1].name}", query="&type=notebook&content=1")
    content = model["content"]
    content["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "## Added in JupyterLab", "id": "added"})
    lab.api("PUT", "/api/contents/98_saved_in_lab.py", {"type": "notebook", "format": "json", "content": content})
    assert (lab.root / "98_saved_in_lab.py").read_text().rstrip().endswith("# ## Added in JupyterLab")
    paired = nbformat.read(lab.root / "98_saved_in_lab.ipynb", as_version=4)
    assert paired.cells[-1].source == "## Added in JupyterLab"


@pytest.fixture(scope="module")
def driver():
    with browser.chromium() as d:
        yield d


def _assert_shows_notebook(view: dict, source: Path) -> None:
    assert view["editors"] == 0, f"{source.name} opened in a text editor, not as a notebook"
    assert view["cells"] > 1
    assert view["headings"][:1] == [notebook_title(source)]
    assert not any("news" in d.lower() for d in view["dialogs"]), view["dialogs"]


def test_notebook_opened_by_its_url_shows_as_a_notebook(lab, driver):
    source = NOTEBOOK_DIR / "01_mbt2018.py"
    driver.get(lab.url(f"/lab/tree/{source.name}"))
    browser.wait_for_notebook_or_editor(driver)
    time.sleep(3)  # time for a pop-up (news, errors) to show, if one were coming
    view = browser.page_view(driver)
    browser.screenshot(driver, "lab_01_mbt2018_by_url")
    _assert_shows_notebook(view, source)


def test_double_click_on_a_notebook_source_opens_a_notebook(lab, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    source = NOTEBOOKS[0]
    driver.get(lab.url("/lab"))
    item = f"//li[contains(@class, 'jp-DirListing-item')][.//span[text()='{source.name}']]"
    entry = WebDriverWait(driver, browser.PAGE_TIMEOUT_S).until(expected_conditions.element_to_be_clickable((By.XPATH, item)))
    ActionChains(driver).double_click(entry).perform()
    WebDriverWait(driver, browser.PAGE_TIMEOUT_S).until(
        lambda d: notebook_title(source) in browser.page_view(d)["headings"] or browser.page_view(d)["editors"]
    )
    view = browser.page_view(driver)
    browser.screenshot(driver, "lab_double_click_00")
    assert view["editors"] == 0, f"a double click opened {source.name} in a text editor, not as a notebook"
    assert notebook_title(source) in view["headings"]
