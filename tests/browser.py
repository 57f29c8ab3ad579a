"""Headless Chromium for the tests that look at a page as a reader does (JupyterLab, the static site).

Selenium drives Debian's ``chromium`` through its ``chromedriver`` (both from apt: ``.ci/run``
installs them when missing). Where either is absent the tests that need them skip, saying
which command installs it. Screenshots go to :data:`ARTEFACTS`, kept after the run.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest

from nic_lib.plotting import BUILD_DIR

#: Where the tests leave their screenshots (git-ignored, kept for a person to look at).
ARTEFACTS = BUILD_DIR / "test-artefacts"
#: Chromium as a container allows it: no sandbox (root, no user namespaces), no GPU, and
#: nothing that reaches for the network on its own (updates, sync, QUIC probes).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
#: Large enough for JupyterLab's file browser and the first cells side by side.
WINDOW = (1400, 900)
#: Seconds a page may take to show a notebook on a busy 2-core machine (JupyterLab's first
#: load compiles a few MB of JavaScript).
PAGE_TIMEOUT_S = 120
#: The install command named by the skip reasons.
INSTALL = "apt-get install -y chromium chromium-driver"

#: What a page shows, read in the browser: the notebook's cells and markdown headings, any
#: text editor, dialog or toast, and whether every image in an output has loaded.
_VIEW_SCRIPT = """
const notebook = document.querySelector('.jp-Notebook');
const heading = h => h.textContent.replace(/\\u00b6/g, '').trim();
const images = notebook ? [...notebook.querySelectorAll('.jp-OutputArea img')] : [];
return {
  cells: notebook ? notebook.querySelectorAll('.jp-Cell').length : 0,
  headings: [...document.querySelectorAll('.jp-MarkdownCell h1')].map(heading),
  editors: document.querySelectorAll('.jp-FileEditor').length,
  dialogs: [...document.querySelectorAll('.jp-Dialog, .Toastify__toast')].map(d => d.innerText),
  images: images.length,
  images_loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
};
"""


def chromium_or_skip() -> tuple[str, str]:
    """Paths of ``chromium`` and ``chromedriver``; skips the test, naming the fix, where one is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed: `pip install -e '.[dev]'` installs it")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None:
        pytest.skip(f"no chromium on PATH: install it with `{INSTALL}` (.ci/run does)")
    if driver is None:
        pytest.skip(f"no chromedriver on PATH: install it with `{INSTALL}` (.ci/run does)")
    return chromium, driver


@contextlib.contextmanager
def chromium():
    """A headless Chromium (selenium ``WebDriver``) with a fresh profile, quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_or_skip()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            yield driver
        finally:
            driver.quit()


def wait_for_notebook_or_editor(driver, timeout: float = PAGE_TIMEOUT_S) -> None:
    """Wait until the page shows a rendered markdown heading in a notebook, or a text editor."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script(
            "return document.querySelector('.jp-Notebook .jp-MarkdownCell h1') !== null"
            " || document.querySelector('.jp-FileEditor') !== null"
        )
    )


def page_view(driver) -> dict:
    """What the current page shows (see :data:`_VIEW_SCRIPT`)."""
    return driver.execute_script(_VIEW_SCRIPT)


def screenshot(driver, name: str) -> Path:
    """Save the window as ``ARTEFACTS/<name>.png``; returns the path."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
