"""Run the paper notebooks headless: jupytext ``py:percent`` source -> ``.ipynb`` -> papermill.

The sources are ``notebooks/NN_name.py``. :func:`run_notebook` turns one into
``<out>/<stem>.ipynb`` with jupytext, then executes it with papermill into
``<out>/<stem>.executed.ipynb`` (kept, with every output and traceback, for a reader to
open), injecting ``PROFILE`` and any other parameters after the cell tagged
``parameters``. The default ``<out>`` is ``build/notebooks/<profile>/``.

Profiles (``smoke``, ``cpu``, ``full``) are only passed on as the ``PROFILE`` parameter:
each notebook derives its sizes from it in ``nic_lib.notebook_setup.setup``, which picks its
figure folder with ``nic_lib.plotting.figure_dir(notebook, PROFILE, FIGURE_DIR)``: ``smoke``
and ``full`` figures under ``build/figures/``, only ``cpu`` figures into ``paper_figures/``.
So a smoke run never writes into ``paper_figures/`` as long as the notebook goes through
``setup`` and ``save_figure``.

Command line::

    python -m nic_lib.notebooks list
    python -m nic_lib.notebooks run [NAMES...] --profile smoke [-p KEY VALUE ...] [--out DIR] [--timeout S] [--show-outputs]
    python -m nic_lib.notebooks sync [NAMES...]     # .ipynb next to the sources, for JupyterLab
    python -m nic_lib.notebooks verify [NAMES...] [--scratch DIR] [--timeout S]   # re-run (cpu), compare tables with paper_figures/

NAMES are notebook stems or prefixes (``00``, ``00_classic_codecs``), paper keys
(:data:`PAPERS`: ``mbt2018``, ``ood-nic``, ``pq-mim``, ``classic``) or paths to ``.py``
sources; all notebooks by default. ``-p`` values are read as YAML, like papermill's ``-y``:
``-p SEED 3`` is an int, ``-p FAST true`` a bool, ``-p QUALITIES "[1, 2]"`` a list; quote to
force a string (``-p NAME '"007"'``).

While ``run`` works it prints a line per notebook and per long cell with what is left, in
this notebook and in all (:class:`RunProgress`): the estimate is the notebook's last
complete run with the same parameters in the same output folder, cell by cell, else its
measured time (:data:`MEASURED_SECONDS`). A cell running longer than a minute gets a line a
minute with the last progress bar it printed. Control-C stops the run and prints the
command that goes on from the notebook it stopped in; the tables finished by then are
cached and are read back, not recomputed. Cell outputs are not echoed (``--show-outputs``
echoes them).

The estimates and the progress lines are :mod:`nic_lib.notebook_progress`'s, the reading of
a source's cells (the parameters cell, errors that name the source line) is
:mod:`nic_lib.notebook_cells`'s; their names are re-exported here.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from papermill.exceptions import PapermillExecutionError

from nic_lib import fileio, reproduce
from nic_lib.plotting import COMMITTED_PROFILE, REPO_ROOT
from nic_lib.notebook_cells import (  # noqa: F401  re-exported: import them from here
    DEFAULT_PROFILE,
    ERROR_SOURCE_LINES,
    _execution_error,
    _last_started_cell,
    NotebookExecutionError,
    _parameters_cell,
    PARAMETERS_TAG,
    SOURCE_FORMAT,
)
from nic_lib.notebook_progress import (  # noqa: F401  re-exported: import them from here
    DEFAULT_OUT_ROOT,
    Estimate,
    estimate_run,
    format_duration,
    HEARTBEAT_S,
    LONG_CELL_S,
    MEASURED_SECONDS,
    PAPERMILL_TAGS,
    PROFILE_PARAMETER,
    PROGRESS_ENGINE,
    RunProgress,
    source_cell_number,
)


logger = logging.getLogger(__name__)

#: Folder holding the notebook sources.
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
#: A notebook is a two-digit-numbered py:percent file; anything else there is a helper, not run.
NOTEBOOK_GLOB = "[0-9][0-9]_*.py"
#: smoke: seconds, tiny data, for CI; cpu: the committed figures, a laptop in minutes to
#: hours; full: CompressAI's published weights where the zoo has them (downloaded once,
#: hash-checked: nic_lib.models.zoo), best on a GPU. Every notebook also takes ``-p SMOKE
#: true``: smoke sizes with the profile's models (CI runs ``full`` so, against the stand-in
#: zoo of nic_lib.testing.standin_zoo: tests/test_notebooks_full.py).
PROFILES = ("smoke", "cpu", "full")
#: The kernelspec ipykernel installs into this environment; its "python" argv is replaced by
#: jupyter_client with sys.executable, so the kernel runs the interpreter running this module.
KERNEL_NAME = "python3"
#: Each paper's notebooks, so that one short command regenerates one paper's figures
#: (``make figures NB=ood-nic``); a name on the command line may be one of these keys.
PAPERS = {
    "classic": ("00",),  # the classic codecs every learned one is measured against
    "mbt2018": ("01", "06"),  # Minnen, Ballé, Toderici (NeurIPS 2018), and its appendix
    "ood-nic": ("02", "03", "04"),  # Lieberman et al. (NeurIPS 2023)
    "pq-mim": ("05",),  # El-Nouby et al. (TMLR 2023)
}
#: Matplotlib backend of the kernels that execute notebooks: inline, so that the executed
#: notebook holds its figures whatever MPLBACKEND the calling shell sets (run_notebook).
KERNEL_MPL_BACKEND = "module://matplotlib_inline.backend_inline"


def list_notebooks(names: list[str] | tuple[str, ...] | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebook sources ``notebooks/NN_*.py``, sorted, optionally selected by name.

    Args:
        names: stems or stem prefixes (``"00"``, ``"00_classic_codecs"``), paper keys of
            :data:`PAPERS` (``"ood-nic"``), or paths to ``.py`` sources (in any folder);
            ``None`` or empty selects every notebook.
            Each notebook is listed once, in sorted order.
        notebook_dir: folder to look in (the repository's ``notebooks/``).

    Returns:
        Paths of the selected notebook sources.

    Raises:
        ValueError: if a name matches no notebook; the message lists the available ones.
    """
    available = sorted(notebook_dir.glob(NOTEBOOK_GLOB))
    if not names:
        return available
    names = [prefix for name in names for prefix in PAPERS.get(name, (name,))]
    selected = set()
    for name in names:
        if name.endswith(".py") and Path(name).is_file():  # a path, e.g. from tab completion
            selected.add(Path(name).resolve())
            continue
        name = Path(name).stem if name.endswith(".py") else name
        matches = [p for p in available if p.stem == name or p.stem.startswith(name)]
        if not matches:
            listing = ", ".join(p.stem for p in available) or f"none: {notebook_dir} has no {NOTEBOOK_GLOB} files"
            raise ValueError(
                f"no notebook named {name!r} in {notebook_dir}; available: {listing}; papers: {', '.join(PAPERS)}. "
                "Pass a stem, its number prefix or a paper, e.g. `python -m nic_lib.notebooks run 00`."
            )
        selected.update(matches)
    return sorted(selected)


def parse_parameter_value(text: str):
    """Read a ``-p KEY VALUE`` value as YAML, as papermill's ``-y`` does.

    Args:
        text: the value as typed on the command line.

    Returns:
        An int, float, bool, ``None``, list or dict where YAML reads one, else ``text``
        itself (also for YAML types papermill cannot inject, such as dates).
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (datetime.date, datetime.datetime)):
        return text
    return value


def run_notebook(
    path: str | os.PathLike,
    profile: str = DEFAULT_PROFILE,
    parameters: dict | None = None,
    out_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
    *,
    progress_bar: bool = False,
    progress: RunProgress | None = None,
    log_output: bool = True,
) -> Path:
    """Convert a py:percent notebook with jupytext and execute it with papermill.

    Writes ``<out_dir>/<stem>.ipynb`` (the inputs), then executes it in this Python's
    ``python3`` kernel with the notebook's folder as working directory (relative paths
    behave as in JupyterLab). While running, the notebook is saved after every cell to
    ``<out_dir>/<stem>.running.ipynb``; when it ends, successfully or not, that file is
    renamed to ``<out_dir>/<stem>.executed.ipynb``. Cell outputs go to the ``papermill``
    logger at INFO level.

    Args:
        path: the ``.py`` source; any folder (tests use a temporary one).
        profile: one of :data:`PROFILES`; injected as ``PROFILE``.
        parameters: more values to inject; every key must be assigned in the notebook's
            ``parameters`` cell. ``PROFILE`` is not allowed here (use ``profile``).
        out_dir: folder for the generated notebooks; default ``build/notebooks/<profile>/``.
        timeout: seconds any single cell may run before the run is stopped; ``None``: no limit.
        progress_bar: show papermill's per-cell progress bar on stderr.
        progress: report each cell to this :class:`RunProgress` (lines with estimates of
            what is left; the command line uses it).
        log_output: echo every cell's outputs to the ``papermill`` logger.

    Returns:
        Path of the executed notebook.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unknown profile, a notebook without exactly one ``parameters``
            cell assigning ``PROFILE``, or a parameter that cell does not assign.
        NotebookExecutionError: if a cell raised, timed out or killed the kernel.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"notebook source {path} not found; list the notebooks with `python -m nic_lib.notebooks list`"
        )
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} for {path.name}; use one of {', '.join(PROFILES)}")
    parameters = dict(parameters or {})
    if PROFILE_PARAMETER in parameters:
        raise ValueError(
            f"pass the profile as run_notebook(profile=...) or --profile, not as a {PROFILE_PARAMETER} parameter"
        )

    nb = jupytext.read(path, fmt=SOURCE_FORMAT)
    params_index, declared = _parameters_cell(nb, path)
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise ValueError(
            f"{path.name}: parameter(s) {', '.join(unknown)} not assigned in its '{PARAMETERS_TAG}' cell "
            f"(cell {params_index + 1}), so injecting them would change nothing; known: {', '.join(sorted(declared))}. "
            "Fix the name, or add the knob to that cell."
        )
    kernel_name = _checked_kernel_name()
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})

    # Absolute: papermill writes the output from inside the notebook's folder.
    out_dir = Path(out_dir).resolve() if out_dir is not None else DEFAULT_OUT_ROOT / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    input_path = out_dir / f"{path.stem}.ipynb"
    running_path = out_dir / f"{path.stem}.running.ipynb"
    executed_path = out_dir / f"{path.stem}.executed.ipynb"
    with fileio.atomic_open(input_path) as f:
        nbformat.write(nb, f)

    logger.info("running %s (profile %s) -> %s", path.name, profile, executed_path)
    # The kernel inherits this process's environment: a caller that selects a headless
    # backend (CI exports MPLBACKEND=Agg) would leave the executed notebook without its
    # figures. The kernel always draws inline; scripts of this process keep their backend.
    backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = KERNEL_MPL_BACKEND
    try:
        papermill.execute_notebook(
            input_path,
            running_path,
            parameters={PROFILE_PARAMETER: profile, **parameters},
            kernel_name=kernel_name,
            cwd=path.parent,
            log_output=log_output,
            progress_bar=progress_bar,
            execution_timeout=timeout,
            **({"engine_name": PROGRESS_ENGINE, "progress": progress} if progress is not None else {}),
        )
    except PapermillExecutionError as err:
        _replace_if_exists(running_path, executed_path)
        raise _execution_error(path, params_index, err.cell_index, err.ename, err.evalue, executed_path) from err
    except Exception as err:  # a timeout or a dead kernel: papermill lets nbclient's error through
        cell_index = _last_started_cell(running_path)
        if cell_index is None:  # the kernel never ran a cell: not a notebook failure
            raise
        _replace_if_exists(running_path, executed_path)
        raise _execution_error(path, params_index, cell_index, type(err).__name__, str(err), executed_path) from err
    finally:
        if backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = backend
    os.replace(running_path, executed_path)
    return executed_path


def sync_notebooks(names: list[str] | None = None) -> list[Path]:
    """Write ``notebooks/<stem>.ipynb`` next to each source, for people using JupyterLab.

    Outputs already in an existing ``.ipynb`` are kept (jupytext ``--update``); the ``.py``
    sources keep their content (jupytext only touches their timestamp, so that they do not
    look older than the new ``.ipynb``). Thanks to ``jupytext.toml`` the pair then stays in sync when
    either file is saved from JupyterLab.

    Args:
        names: notebook stems or prefixes, as for :func:`list_notebooks`; all by default.

    Returns:
        The written ``.ipynb`` paths.
    """
    from jupytext.cli import jupytext as jupytext_cli

    written = []
    for source in list_notebooks(names):
        target = source.with_suffix(".ipynb")
        jupytext_cli(["--from", SOURCE_FORMAT, "--to", "ipynb", "--update", "--output", str(target), str(source)])
        written.append(target)
    return written


def verify(names: Sequence[str] | None = None, scratch: str | os.PathLike | None = None, timeout: float | None = None,
           committed_root: str | os.PathLike | None = None, notebook_dir: str | os.PathLike | None = None,
           stream=None) -> int:
    """Re-execute notebooks into a scratch folder and compare their tables with the committed ones
    (:func:`nic_lib.reproduce.compare_folders`; ``make verify``).

    Each notebook runs in the cpu profile with ``FIGURE_DIR=<scratch>/figures/<stem>``,
    ``RESULTS_DIR=<scratch>/results/<stem>`` (both emptied first) and ``REFRESH=True``
    where it declares them, so no cached result is read and nothing is written into the
    committed folder. The committed folder is digested before and after the run; any
    change to it is reported as a failure. The executed notebook goes to
    ``<scratch>/notebooks/``; the report of each notebook is printed and also written to
    ``<scratch>/<stem>.drift.txt``.

    Args:
        names: notebook stems, prefixes or paper keys (as ``run``); all notebooks when empty.
        scratch: root of the scratch folders; default :data:`nic_lib.reproduce.DEFAULT_SCRATCH`.
        timeout: seconds any single cell may run; ``None``: no limit.
        committed_root: folder of the committed ``<stem>/`` folders; default :data:`nic_lib.reproduce.COMMITTED_ROOT`.
        notebook_dir: folder of the notebook sources; default the repository's ``notebooks/``.
        stream: where the report goes (stdout by default).

    Returns:
        The exit status: 0 when every table is within tolerance, 1 on drift or a failed
        run.

    Raises:
        ValueError: a name that selects no notebook, or a notebook without a ``FIGURE_DIR``
            parameter (it could only write into the committed folder).
    """
    stream = stream if stream is not None else sys.stdout
    scratch = Path(scratch) if scratch is not None else reproduce.DEFAULT_SCRATCH
    committed_root = Path(committed_root) if committed_root is not None else reproduce.COMMITTED_ROOT
    kwargs = {"notebook_dir": Path(notebook_dir)} if notebook_dir is not None else {}
    selected = list_notebooks(list(names or []), **kwargs)
    declared = {path: _parameters_cell(jupytext.read(path, fmt=SOURCE_FORMAT), path)[1] for path in selected}
    for path, params in declared.items():
        if "FIGURE_DIR" not in params:
            raise ValueError(f"{path.name} has no FIGURE_DIR parameter, so a verify run could only write into "
                             f"{committed_root / path.stem}; add `FIGURE_DIR = None` to its parameters cell and "
                             "pass it to notebook_setup.setup(..., figure_dir=FIGURE_DIR)")
    logging.getLogger("papermill").setLevel(logging.WARNING)  # the report, not every cell's output
    summary = []
    for path in selected:
        stem = path.stem
        committed, figures, results = committed_root / stem, scratch / "figures" / stem, scratch / "results" / stem
        if scratch.resolve().is_relative_to(committed_root.resolve()):
            raise ValueError(f"the scratch folder {scratch} lies inside the committed {committed_root}; choose another --scratch")
        for folder in (figures, results):
            shutil.rmtree(folder, ignore_errors=True)
        values = {"FIGURE_DIR": str(figures.resolve()), "RESULTS_DIR": str(results.resolve()), "REFRESH": True}
        parameters = {k: v for k, v in values.items() if k in declared[path]}
        before = reproduce.tree_digest(committed, pattern="*")
        print(f"{stem}: re-executing (profile {reproduce.VERIFY_PROFILE}, caches bypassed) into {reproduce.display_path(figures)} ...", file=stream, flush=True)
        start = time.perf_counter()
        try:
            run_notebook(path, reproduce.VERIFY_PROFILE, parameters, scratch / "notebooks", timeout)
            failure = None
        except Exception as err:  # a failing cell or kernel: report it, go on with the others
            failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        seconds = time.perf_counter() - start
        touched = reproduce.tree_digest(committed, pattern="*") != before
        if failure is not None:
            text = f"  FAILED after {seconds:.0f} s: {failure}\n  (the executed notebook is in {reproduce.display_path(scratch / 'notebooks')})"
            status = "FAILED"
        else:
            comparison = reproduce.compare_folders(committed, figures)
            text = comparison.report()
            status = "DRIFT" if comparison.drifted else "ok"
        if touched:
            text += f"\n  FAILED: the run changed files in {committed}; a notebook writes there despite FIGURE_DIR"
            status = "FAILED"
        print(f"{stem}: {status} ({seconds:.0f} s)\n{text}\n", file=stream, flush=True)
        fileio.atomic_write_text(scratch / f"{stem}.drift.txt", f"{stem}: {status} ({seconds:.0f} s)\n{text}\n")
        summary.append((stem, seconds, status))
    width = max((len(s) for s, _, _ in summary), default=8)
    print(f"{'notebook':<{width}}  {'seconds':>8}  verified against {reproduce.display_path(committed_root)}", file=stream)
    for stem, seconds, status in summary:
        print(f"{stem:<{width}}  {seconds:8.1f}  {status}", file=stream)
    bad = [s for s, _, status in summary if status != "ok"]
    print(f"{len(summary) - len(bad)} ok, {len(bad)} with drift or failed"
          + (f"; reports in {reproduce.display_path(scratch)}/<notebook>.drift.txt" if bad else ""), file=stream)
    return 1 if bad else 0


def _checked_kernel_name() -> str:
    """:data:`KERNEL_NAME`, after checking that it starts this interpreter, not another Python."""
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel as err:
        raise RuntimeError(
            f"no Jupyter kernel named {KERNEL_NAME!r}; install ipykernel's into this environment with "
            f"`{sys.executable} -m ipykernel install --sys-prefix`"
        ) from err
    exe = spec.argv[0]
    # jupyter_client replaces a bare "python", "python3" or "python3.X" with sys.executable.
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if exe not in bare and not (Path(exe).exists() and Path(exe).resolve() == Path(sys.executable).resolve()):
        raise RuntimeError(
            f"the {KERNEL_NAME!r} kernel in {spec.resource_dir} runs {exe}, not this environment's {sys.executable}; "
            f"reinstall it with `{sys.executable} -m ipykernel install --sys-prefix` or remove that kernelspec"
        )
    return KERNEL_NAME


def _replace_if_exists(src: Path, dst: Path) -> None:
    if src.exists():
        os.replace(src, dst)


def _run_command(args: argparse.Namespace) -> int:
    """``run``: execute the selected notebooks one after the other, with progress; print a summary."""
    parameters = {key: parse_parameter_value(value) for key, value in args.parameter or []}
    selected = list_notebooks(args.names)
    out_dir = args.out if args.out is not None else DEFAULT_OUT_ROOT / args.profile
    progress = RunProgress([(p.stem, estimate_run(p, args.profile, parameters, out_dir)) for p in selected])
    progress.begin()
    results = []  # (name, seconds, status)
    for i, path in enumerate(selected):
        start = time.perf_counter()
        progress.notebook_started(i)
        try:
            executed = run_notebook(path, args.profile, parameters, args.out, args.timeout,
                                    progress=progress, log_output=args.show_outputs)
            status = f"ok       {executed}"
        except KeyboardInterrupt:
            progress.notebook_finished(i, ok=False)
            print(_interrupted_message(selected[i:], args), file=sys.stderr)
            return 130
        except NotebookExecutionError as err:
            logger.error("%s", err)
            cell = f"cell {err.cell_number}" if err.cell_number else "injected parameters"
            status = f"FAILED   {cell}: {err.ename}: {err.evalue.splitlines()[0] if err.evalue else ''}"
        except Exception as err:  # setup errors (parameters cell, kernel): report and go on
            logger.error("%s", err)
            first_line = (str(err).splitlines() or [""])[0]
            status = f"FAILED   {type(err).__name__}: {first_line}"
        progress.notebook_finished(i, ok=status.startswith("ok"))
        results.append((path.stem, time.perf_counter() - start, status))

    width = max((len(name) for name, _, _ in results), default=8)
    print(f"\n{'notebook':<{width}}  {'seconds':>8}  result")
    for name, seconds, status in results:
        print(f"{name:<{width}}  {seconds:8.1f}  {status}")
    failed = sum(status.startswith("FAILED") for _, _, status in results)
    print(f"{len(results) - failed} ok, {failed} failed (profile {args.profile})")
    return 1 if failed else 0


def _interrupted_message(left: list[Path], args: argparse.Namespace) -> str:
    """What Control-C stopped, and the command that goes on from there."""
    names = " ".join(p.stem[:2] if p.parent == NOTEBOOK_DIR else str(p) for p in left)
    extra = "".join(f" -p {k} {shlex.quote(v)}" for k, v in args.parameter or [])
    command = f"python -m nic_lib.notebooks run {names} --profile {args.profile}{extra}"
    if args.out is not None:
        command += f" --out {args.out}"
    make = f'\n    make figures NB="{names}"' if args.profile == COMMITTED_PROFILE and not extra and args.out is None else ""
    return (
        f"\nInterrupted in {left[0].stem}. Every table finished so far is cached (build/results/{args.profile}/) "
        f"and is read back, not recomputed, when its notebook runs again. To go on from {left[0].stem}:"
        f"{make}\n    {command}"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m nic_lib.notebooks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the notebook sources")
    run = sub.add_parser("run", help="execute notebooks with papermill (all by default)")
    run.add_argument("names", nargs="*", help="notebook stems or prefixes, e.g. 00 or 00_classic_codecs")
    run.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE, help=f"default: {DEFAULT_PROFILE}")
    run.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"),
        help="inject KEY=VALUE into the parameters cell (VALUE read as YAML: 3, true, [1, 2])",
    )
    run.add_argument("--out", type=Path, help="output folder (default: build/notebooks/<profile>/)")
    run.add_argument("--timeout", type=float, help="seconds any single cell may run (default: no limit)")
    run.add_argument("--show-outputs", action="store_true", help="echo every cell's outputs (default: progress lines only)")
    sync = sub.add_parser("sync", help="write notebooks/<stem>.ipynb from the .py sources, for JupyterLab")
    sync.add_argument("names", nargs="*")
    verify_command = sub.add_parser("verify", help="re-execute notebooks (cpu profile, no caches) into a scratch folder and "
                            "compare their tables with paper_figures/ (nic_lib.reproduce); exit 1 on drift")
    verify_command.add_argument("names", nargs="*", help="notebook stems, prefixes or papers (default: all)")
    verify_command.add_argument("--scratch", type=Path, help="scratch folder (default: build/verify/)")
    verify_command.add_argument("--timeout", type=float, help="seconds any single cell may run (default: no limit)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "list":
            for path in list_notebooks():
                print(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)
            return 0
        if args.command == "sync":
            for path in sync_notebooks(args.names):
                print(path)
            return 0
        if args.command == "verify":
            return verify(args.names, args.scratch, args.timeout)
        return _run_command(args)
    except ValueError as err:  # bad selection or parameters: say why, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
