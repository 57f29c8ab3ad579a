"""JupyterLab on the notebooks, each ``NN_*.py`` opening as a notebook (``make lab``).

``python -m nic_lib.lab`` starts ``jupyter lab`` on ``notebooks/`` with this project's
Jupyter configuration folder, ``.jupyter/``, put first on ``JUPYTER_CONFIG_PATH`` for that
process only. Its ``labconfig/default_setting_overrides.json`` (the file
``jupytext-config set-default-viewer`` would write into the user's ``~/.jupyter``, which
this leaves alone) changes two JupyterLab *defaults*:

- ``defaultViewers``: ``python`` -> ``Jupytext Notebook``, so a double click on a ``.py``
  (or opening ``/lab/tree/01_mbt2018.py``) shows a notebook, not a text editor. JupyterLab
  serves only ``notebooks/``, whose Python files are all notebooks; ``nic_lib/`` and
  ``tests/`` are out of its reach.
- ``fetchNews``: ``false``, so no "get notified about official Jupyter news?" pop-up.

A user's own choices in JupyterLab's Settings Editor still win over these defaults.
``notebooks/jupytext.toml`` pairs each ``.py`` with an ``.ipynb``: saving rewrites the
``.py`` (byte for byte, if nothing was edited) and keeps the outputs in the ``.ipynb``.

When the server is up, this prints its URL and the URL of the first notebook, token
included, then waits until JupyterLab stops (Control-C, twice to skip its question).

Command line::

    python -m nic_lib.lab [JUPYTER LAB OPTIONS ...]     # e.g. --port 8890 --no-browser
    python -m nic_lib.lab --root some/folder ...        # another folder (tests use a copy)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from nic_lib.notebooks import NOTEBOOK_DIR, NOTEBOOK_GLOB
from nic_lib.plotting import REPO_ROOT

#: This project's Jupyter configuration folder (laid out like ``~/.jupyter``).
PROJECT_JUPYTER_CONFIG = REPO_ROOT / ".jupyter"
#: Seconds to wait for the server to write its connection file: a cold start of JupyterLab
#: on a busy 2-core machine takes 5-20 s.
STARTUP_TIMEOUT_S = 120
#: How often to look for the connection file while waiting.
POLL_S = 0.5


def lab_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) with :data:`PROJECT_JUPYTER_CONFIG` first on ``JUPYTER_CONFIG_PATH``.

    Folders on ``JUPYTER_CONFIG_PATH`` come before the user's ``~/.jupyter`` when Jupyter
    looks for configuration, and JupyterLab reads ``labconfig/default_setting_overrides.json``
    from each; other entries of the variable are kept after it.
    """
    env = dict(os.environ if environ is None else environ)
    rest = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p and Path(p) != PROJECT_JUPYTER_CONFIG]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(PROJECT_JUPYTER_CONFIG), *rest])
    return env


def lab_command(root: str | os.PathLike = NOTEBOOK_DIR, options: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``jupyter lab`` command line serving ``root`` with this interpreter's JupyterLab.

    Adds ``--allow-root`` when run as root (containers), which JupyterLab otherwise refuses.
    """
    command = [sys.executable, "-m", "jupyterlab", str(root), *options]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in options:
        command.append("--allow-root")
    return command


def server_info(pid: int, runtime_dir: str | os.PathLike | None = None) -> dict | None:
    """The connection info (``url``, ``token``, ``root_dir``...) of the Jupyter server with process id ``pid``, if running.

    Read from the ``jpserver-<pid>.json`` file the server writes into the Jupyter runtime
    folder once it listens.
    """
    from jupyter_server.serverapp import list_running_servers

    return next((info for info in list_running_servers(runtime_dir) if info.get("pid") == pid), None)


def server_urls(info: dict, notebook: str | None = None) -> tuple[str, str | None]:
    """The URL of JupyterLab and of ``notebook`` (a path relative to the served folder) in it, token included."""
    base = info["url"].rstrip("/")
    token = f"?token={info['token']}" if info.get("token") else ""
    lab = f"{base}/lab{token}"
    return lab, (f"{base}/lab/tree/{notebook}{token}" if notebook else None)


def wait_for_server(process: subprocess.Popen, timeout: float = STARTUP_TIMEOUT_S) -> dict:
    """Wait until the server started as ``process`` writes its connection file; return its info.

    Raises:
        RuntimeError: if the process exits first, or nothing appears within ``timeout``
            seconds; the message says where to look.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"jupyter lab exited with status {process.returncode} before serving (its messages are above); "
                "a busy port is the usual cause: pick another with `make lab ARGS=\"--port 8890\"`"
            )
        info = server_info(process.pid)
        if info is not None:
            return info
        time.sleep(POLL_S)
    raise RuntimeError(
        f"jupyter lab (pid {process.pid}) wrote no connection file within {timeout:.0f} s; its messages above say why"
    )


def main(argv: list[str] | None = None) -> int:
    """Start JupyterLab (see the module docstring), print its URLs, wait for it. Returns its exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m nic_lib.lab",
        description=__doc__.split("\n\n")[0],
        epilog="Any other option is passed to `jupyter lab` (see `jupyter lab --help-all`).",
    )
    parser.add_argument("--root", type=Path, default=NOTEBOOK_DIR, help="folder to serve (default: notebooks/)")
    args, options = parser.parse_known_args(argv)
    root = args.root.resolve()
    if not root.is_dir():
        print(f"error: {root} is not a folder; pass --root with the folder of the notebooks", file=sys.stderr)
        return 2

    process = subprocess.Popen(lab_command(root, options), env=lab_environment())
    try:
        try:
            info = wait_for_server(process)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            process.terminate()
            return process.wait() or 1
        first = next(iter(sorted(root.glob(NOTEBOOK_GLOB))), None)
        lab, notebook = server_urls(info, first.name if first else None)
        lines = [f"JupyterLab serves {root} at", f"    {lab}"]
        if notebook:
            lines += ["Double click a notebook there, or open one by its URL:", f"    {notebook}"]
        lines.append("Control-C stops it.")
        print("\n" + "\n".join(lines) + "\n", flush=True)
    except KeyboardInterrupt:
        pass
    # The terminal sends Control-C to JupyterLab too; it asks, shuts down or carries on,
    # and this process ends when it does.
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


if __name__ == "__main__":
    sys.exit(main())
