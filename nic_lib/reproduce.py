"""Reproducibility that checks itself: committed tables, their tolerances and provenance, drift.

Every table a notebook commits (``paper_figures/<notebook>/*.csv``) is written by
:func:`save_table`, whose call declares, next to the code that makes the table, how far a
re-run may move each column (:class:`Tolerance`), and which records in ``provenance.json``
beside the tables:

- ``tables``: for each table its row count and the tolerance of each column;
- ``environment``: Python, platform, CPU model and count, torch threads, CUDA device (or
  none), thread variables (``OMP_NUM_THREADS``...) and the version of every package the
  project depends on;
- ``code``: the git commit, and SHA-256 digests of ``nic_lib/`` and of the notebook source.

``make verify NB=04`` (``python -m nic_lib.notebooks verify 04``; :func:`verify`) re-executes
notebooks (cpu profile) into a scratch folder, ``build/verify/figures/<notebook>/``, with every
result cache bypassed (``RESULTS_DIR`` in the scratch folder, ``REFRESH`` on), compares each
regenerated table with the committed one (:func:`compare_folders`) and prints a drift report
per file; the differences between the two ``provenance.json`` say whether the code or the
environment changed. It exits non-zero on drift beyond tolerance, and never writes into
``paper_figures/`` (it checks that too).

A column's tolerance is one of:

- :data:`EXACT`: equal values (counts, bytes, names, settings);
- :func:`close` ``(rtol, atol)``: ``|a - b| <= atol + rtol |a|`` (float metrics);
- :data:`IGNORE`: not compared (wall-clock times and what is computed from them).

Undeclared columns are exact when they hold integers, booleans or text, and
:data:`DEFAULT_FLOAT` when they hold floats. Named tolerances with the evidence behind
them: :data:`NETWORK`, :data:`MS_SSIM`, :data:`DERIVED`.

This module imports nothing of the project but the leaf ``nic_lib.fileio`` (the command
imports :mod:`nic_lib.notebooks` when it runs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from nic_lib import fileio

#: Repository root (this file lives in <root>/nic_lib/).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Committed tables and figures, one folder per notebook.
COMMITTED_ROOT = REPO_ROOT / "paper_figures"
#: Where :func:`verify` re-executes notebooks: ``<root>/{figures,results}/<notebook>/``,
#: the executed notebooks in ``<root>/notebooks/`` and the reports in ``<root>/<notebook>.drift.txt``.
DEFAULT_SCRATCH = REPO_ROOT / "build" / "verify"
#: The record beside each folder of committed tables.
PROVENANCE_FILE = "provenance.json"
#: The profile whose tables are committed, and the one :func:`verify` runs.
VERIFY_PROFILE = "cpu"
#: Suffixes of the tables compared, and of the figures only reported (byte-identical or not).
TABLE_SUFFIX = ".csv"
FIGURE_SUFFIXES = (".png", ".pdf")
#: Environment variables that set thread counts, and so may move float results.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY",
                    "CUBLAS_WORKSPACE_CONFIG")
#: The distribution whose dependencies are listed in the provenance.
DISTRIBUTION = "nic-repro"
#: Packages recorded when the project is not installed as a distribution.
FALLBACK_PACKAGES = ("torch", "compressai", "numpy", "scipy", "pandas", "pillow", "scikit-image",
                     "pytorch-msssim", "imagecorruptions-imaug", "opencv-python", "matplotlib", "seaborn")
#: Parameters :func:`verify` injects when a notebook declares them: results computed afresh
#: in the scratch folder, never read from a cache.
SCRATCH_PARAMETERS = ("FIGURE_DIR", "RESULTS_DIR", "REFRESH")
#: Text columns used to name a row in the drift report (at most this many).
ROW_LABEL_COLUMNS = 2

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tolerances


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far a re-run may move one column of a committed table.

    Attributes:
        kind: ``"exact"``, ``"close"`` or ``"ignore"``.
        rtol, atol: for ``"close"``: ``|regenerated - committed| <= atol + rtol |committed|``.
    """

    kind: str
    rtol: float = 0.0
    atol: float = 0.0

    def __post_init__(self):
        if self.kind not in ("exact", "close", "ignore"):
            raise ValueError(f"tolerance kind must be 'exact', 'close' or 'ignore', got {self.kind!r}")
        if self.rtol < 0 or self.atol < 0 or (self.kind != "close" and (self.rtol or self.atol)):
            raise ValueError(f"rtol/atol must be >= 0 and only given for 'close' (use close(rtol, atol)), got {self}")

    def to_json(self) -> dict:
        """The record of this tolerance in ``provenance.json``."""
        return {"kind": self.kind, **({"rtol": self.rtol, "atol": self.atol} if self.kind == "close" else {})}

    @classmethod
    def from_json(cls, record: Mapping) -> Tolerance:
        """The tolerance :meth:`to_json` recorded."""
        return cls(record["kind"], float(record.get("rtol", 0.0)), float(record.get("atol", 0.0)))

    def describe(self) -> str:
        """In words, for the drift report: ``exact``, ``ignored`` or ``rtol 1e-05``."""
        if self.kind != "close":
            return {"exact": "exact", "ignore": "ignored"}[self.kind]
        return f"rtol {self.rtol:g}" + (f" atol {self.atol:g}" if self.atol else "")


#: Equal values: counts, bytes, names, settings.
EXACT = Tolerance("exact")
#: Not compared: wall-clock times and what is computed from them.
IGNORE = Tolerance("ignore")


def close(rtol: float, atol: float = 0.0) -> Tolerance:
    """A float metric that may move by ``atol + rtol |committed|`` between runs.

    Args:
        rtol: relative tolerance, >= 0.
        atol: absolute tolerance, >= 0 (for values that may be 0).

    Returns:
        The :class:`Tolerance`.

    Raises:
        ValueError: a negative tolerance.
    """
    return Tolerance("close", float(rtol), float(atol))


#: Undeclared float columns: float64 arithmetic done in another order (a library's sum,
#: another thread count) moves the last digits, ~1e-15 relative; 1e-9 allows that and
#: nothing a figure or a table could show. Float32 networks and MS-SSIM declare more.
DEFAULT_FLOAT = close(rtol=1e-9, atol=1e-12)
#: Metrics from float32 networks and entropy models (NIC, PQ-MIM): mbt2018-q3's MSE in
#: notebook 04 moved 1.6e-7 between the committed table and a re-run (another day, same
#: machine); 1e-5 leaves a margin of 60.
NETWORK = close(rtol=1e-5, atol=1e-12)
#: MS-SSIM (pytorch-msssim's float32 convolutions): the same classic codecs' MS-SSIM in
#: notebooks 00 and 01 differ by up to 1.7e-6 (ms_ssim) and 8.7e-6 (ms_ssim_db); 1e-4
#: leaves a margin of 10.
MS_SSIM = close(rtol=1e-4, atol=1e-12)
#: Values derived from whole RD curves within :data:`NETWORK` or :data:`MS_SSIM` (BD-rate,
#: BD-PSNR, gaps in percent that subtract nearly equal numbers): relative, or absolute in
#: the table's unit (percent, dB) near 0. Stated, not measured.
DERIVED = close(rtol=1e-3, atol=1e-3)


def column_tolerances(df: pd.DataFrame, floats: Tolerance = DEFAULT_FLOAT,
                      columns: Mapping[str, Tolerance] | None = None) -> dict[str, Tolerance]:
    """The tolerance of every column of ``df``: declared, else by its type.

    Args:
        df: the table.
        floats: tolerance of the float columns not in ``columns``.
        columns: column name -> tolerance, for the columns that differ from the rule.

    Returns:
        ``{column: Tolerance}`` in the table's column order; integer, boolean and text
        columns not in ``columns`` are :data:`EXACT`.

    Raises:
        ValueError: ``columns`` names a column the table does not have (a typo would
            otherwise leave the column at the default silently).
    """
    columns = dict(columns or {})
    unknown = [c for c in columns if c not in df.columns]
    if unknown:
        raise ValueError(f"tolerances declared for column(s) {unknown} that the table does not have; "
                         f"its columns are {list(df.columns)}. Fix the name where the table is saved.")
    bad = [c for c, t in columns.items() if not isinstance(t, Tolerance)] + ([] if isinstance(floats, Tolerance) else ["floats"])
    if bad:
        raise TypeError(f"tolerances must be reproduce.EXACT, reproduce.IGNORE or reproduce.close(...); not for {bad}")
    return {str(c): columns.get(c, floats if pd.api.types.is_float_dtype(df[c]) else EXACT) for c in df.columns}


def save_table(df: pd.DataFrame, path: str | os.PathLike, floats: Tolerance = DEFAULT_FLOAT,
               columns: Mapping[str, Tolerance] | None = None) -> Path:
    """Write a committed table as CSV, atomically, with the drift a re-run may show.

    The tolerances (``make verify`` compares a re-run's table with the committed one
    column by column) and the environment are recorded in ``provenance.json`` beside the
    table (:func:`record_table`). Integer, boolean and text columns must repeat exactly;
    float columns within ``floats``; ``columns`` overrides single columns (:data:`IGNORE`
    for wall-clock times).

    Args:
        df: the table.
        path: the CSV, e.g. ``fig_dir / "toy_codecs_vs_theory.csv"``.
        floats: tolerance of the float columns (default :data:`DEFAULT_FLOAT`: float64
            rounding only).
        columns: column -> tolerance, for the columns that differ from the rule.

    Returns:
        The path of the CSV.

    Raises:
        ValueError: ``columns`` names a column the table does not have, or ``path`` is
            not a ``.csv``.
        TypeError: a tolerance that is not a :class:`Tolerance`.
    """
    path = Path(path)
    if path.suffix != TABLE_SUFFIX:
        raise ValueError(f"{path}: committed tables are CSV files; name it <table>{TABLE_SUFFIX}")
    tolerances = column_tolerances(df, floats, columns)
    fileio.atomic_write_text(path, df.to_csv(index=False))
    record_table(path, df, tolerances)
    return path


# --------------------------------------------------------------------------- provenance


def environment() -> dict:
    """What the numbers of this process may depend on besides the code.

    Returns:
        ``python``, ``platform``, ``machine``, ``cpu`` (model name), ``cpu_count``,
        ``torch_threads`` and ``device`` (``"cpu"`` or the CUDA device's name; both
        ``None`` when torch is not imported), ``thread_variables`` (those of
        :data:`THREAD_VARIABLES` that are set) and ``packages`` (name -> version of every
        dependency of the project).
    """
    torch = sys.modules.get("torch")  # recorded as the notebook set it; never imported here
    device = None
    if torch is not None:
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "device": device,
        "thread_variables": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "packages": _package_versions(),
    }


def code_provenance(notebook: str | None = None) -> dict:
    """Which code made the tables: git commit and digests of ``nic_lib/`` and the notebook.

    Args:
        notebook: notebook stem; its source ``notebooks/<stem>.py`` is digested when it exists.

    Returns:
        ``git_commit`` (``None`` outside a git checkout), ``nic_lib_sha256`` (all of
        ``nic_lib/**/*.py``, so uncommitted edits show) and ``notebook_sha256`` (or ``None``).
    """
    source = REPO_ROOT / "notebooks" / f"{notebook}.py" if notebook else None
    return {
        "git_commit": _git_commit(),
        "nic_lib_sha256": _tree_digest(REPO_ROOT / "nic_lib"),
        "notebook_sha256": hashlib.sha256(source.read_bytes()).hexdigest() if source and source.is_file() else None,
    }


def read_provenance(folder: str | os.PathLike) -> dict | None:
    """The ``provenance.json`` of a folder of tables, or ``None`` if it has none (or an unreadable one)."""
    path = Path(folder) / PROVENANCE_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def record_table(path: str | os.PathLike, df: pd.DataFrame, tolerances: Mapping[str, Tolerance]) -> Path:
    """Record a written table, its tolerances and the environment in the folder's ``provenance.json``.

    The record is read, updated and written back atomically; the environment and code
    entries describe the latest table written.

    Args:
        path: the table's CSV (already written).
        df: the table.
        tolerances: ``{column: Tolerance}`` (:func:`column_tolerances`).

    Returns:
        The path of ``provenance.json``.
    """
    path = Path(path)
    record = read_provenance(path.parent) or {}
    tables = dict(record.get("tables") or {})
    tables[path.name] = {"rows": int(len(df)), "columns": {c: t.to_json() for c, t in tolerances.items()}}
    record = {"tables": dict(sorted(tables.items())), "environment": environment(),
              "code": code_provenance(path.parent.name)}
    return fileio.atomic_write_text(path.parent / PROVENANCE_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")


def provenance_changes(committed: dict | None, regenerated: dict | None) -> dict[str, list[str]]:
    """What differs between two provenance records, in words, split into code and environment.

    Args:
        committed, regenerated: records from :func:`read_provenance` (``None``: missing).

    Returns:
        ``{"code": [...], "environment": [...]}``: one line per changed entry (a package
        version, the torch threads, the CPU, a digest...); both empty when nothing changed.
        A missing record is one line under ``"code"``.
    """
    if committed is None or regenerated is None:
        which = "committed tables have" if committed is None else "regenerated tables have"
        return {"code": [f"{which} no {PROVENANCE_FILE} (written before provenance was recorded)"], "environment": []}
    out = {}
    for part in ("code", "environment"):
        old, new = _flatten(committed.get(part) or {}), _flatten(regenerated.get(part) or {})
        out[part] = [f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k)]
    return out


# --------------------------------------------------------------------------- comparing


@dataclasses.dataclass
class TableComparison:
    """One committed table against its regenerated version.

    Attributes:
        name: file name.
        status: ``"identical"``, ``"within tolerance"``, ``"drift"``, ``"not regenerated"``
            (committed, not written by the run) or ``"not committed"`` (written, not committed).
        problems: one line per difference beyond tolerance (drift).
        largest: for columns compared with a tolerance, the largest relative difference
            seen within it, ``(column, relative difference, tolerance)``.
    """

    name: str
    status: str
    problems: list[str] = dataclasses.field(default_factory=list)
    largest: tuple[str, float, Tolerance] | None = None

    @property
    def drifted(self) -> bool:
        """True when the table moved beyond tolerance, or is missing on one side."""
        return self.status not in ("identical", "within tolerance")


def compare_tables(committed: pd.DataFrame, regenerated: pd.DataFrame, tolerances: Mapping[str, Tolerance],
                   name: str = "table") -> TableComparison:
    """Compare a regenerated table with the committed one, column by column, row by row.

    Rows are matched by position (a table whose rows come in another order has drifted).
    Columns not in ``tolerances`` follow the default rule (:func:`column_tolerances`).

    Args:
        committed: the committed table (as read from its CSV).
        regenerated: the regenerated table (as read from its CSV).
        tolerances: column -> :class:`Tolerance`, normally those the regenerating code declared.
        name: the table's name in the messages.

    Returns:
        A :class:`TableComparison`.
    """
    problems = []
    if list(committed.columns) != list(regenerated.columns):
        gone = [c for c in committed.columns if c not in regenerated.columns]
        new = [c for c in regenerated.columns if c not in committed.columns]
        problems.append("columns differ: " + "; ".join(
            s for s in (f"not regenerated {gone}" if gone else "", f"new {new}" if new else "",
                        "same columns in another order" if not gone and not new else "") if s))
    if len(committed) != len(regenerated):
        problems.append(f"{len(committed)} rows committed, {len(regenerated)} regenerated")
    if problems:
        return TableComparison(name, "drift", problems)
    rules = column_tolerances(regenerated, columns={c: t for c, t in tolerances.items() if c in regenerated.columns})
    identical, largest = True, None
    for column, tol in rules.items():
        if tol.kind == "ignore":
            continue
        a, b = committed[column], regenerated[column]
        numeric = pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b)
        if numeric:
            x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            if tol.kind == "close":
                within = np.isclose(y, x, rtol=tol.rtol, atol=tol.atol, equal_nan=True)
            else:
                within = same
        else:
            same = within = (a.astype(str) == b.astype(str)).to_numpy()
        identical &= bool(same.all())
        if numeric and tol.kind == "close" and not same.all():
            rel = _relative(x, y)
            rel = rel[within & (x != 0) & np.isfinite(rel)]  # values at 0 are within atol: no ratio
            worst = float(rel.max()) if rel.size else 0.0
            if largest is None or worst > largest[1]:
                largest = (column, worst, tol)
        if not within.all():
            bad = np.flatnonzero(~within)
            row = int(bad[0]) if not numeric else int(bad[np.argmax(_relative(x[bad], y[bad]))])
            what = f"rel {_relative(x[row:row + 1], y[row:row + 1])[0]:.2e}" if numeric else "differs"
            problems.append(f"{column}: {len(bad)} of {len(a)} rows beyond {tol.describe()} (worst: row {row}"
                            f"{_row_label(regenerated, row)}, {_plain(a.iloc[row])!r} committed, {_plain(b.iloc[row])!r} regenerated, {what})")
    if problems:
        return TableComparison(name, "drift", problems, largest)
    return TableComparison(name, "identical" if identical else "within tolerance", [], largest)


@dataclasses.dataclass
class FolderComparison:
    """A notebook's committed folder against a regenerated one.

    Attributes:
        committed, regenerated: the two folders.
        tables: one :class:`TableComparison` per table on either side, sorted by name.
        figures: ``(identical, differing, problems)``: counts of byte-identical and differing
            figures and one line per figure missing on one side.
        provenance: :func:`provenance_changes` of the two folders' records.
    """

    committed: Path
    regenerated: Path
    tables: list[TableComparison]
    figures: tuple[int, int, list[str]]
    provenance: dict[str, list[str]]

    @property
    def drifted(self) -> bool:
        """True when a table drifted, or a table or figure exists on one side only."""
        return any(t.drifted for t in self.tables) or bool(self.figures[2])

    def report(self) -> str:
        """The per-file drift report, as printed by :func:`verify`."""
        lines = [f"  committed   {_display(self.committed)}", f"  regenerated {_display(self.regenerated)}"]
        code, env = self.provenance["code"], self.provenance["environment"]
        lines.append("  code: " + ("same" if not code else "changed: " + "; ".join(code)))
        lines.append("  environment: " + ("same" if not env else "changed: " + "; ".join(env)))
        width = max((len(t.name) for t in self.tables), default=0)
        for t in self.tables:
            flag = "DRIFT" if t.drifted else "ok"
            detail = t.status
            if t.largest is not None and not t.drifted:
                column, rel, tol = t.largest
                detail += f" (largest: {column}, rel {rel:.1e}; {tol.describe()})"
            lines.append(f"  {flag:<5} {t.name:<{width}}  {detail}")
            lines.extend(f"          {p}" for p in t.problems)
        same, differ, missing = self.figures
        lines.append(f"  figures: {same} byte-identical, {differ} differ (figures are not compared: look at them)")
        lines.extend(f"  DRIFT {m}" for m in missing)
        return "\n".join(lines)


def compare_folders(committed: str | os.PathLike, regenerated: str | os.PathLike) -> FolderComparison:
    """Compare every table (and list every figure) of a regenerated folder with the committed one.

    Tolerances are those the regenerating code declared (the regenerated folder's
    ``provenance.json``), else the committed record's, else the default rule.

    Args:
        committed: e.g. ``paper_figures/04_spectral_theory``.
        regenerated: the folder a re-run wrote its tables and figures into.

    Returns:
        A :class:`FolderComparison`.
    """
    committed, regenerated = Path(committed), Path(regenerated)
    old_record, new_record = read_provenance(committed), read_provenance(regenerated)
    declared = {**_declared(old_record), **_declared(new_record)}
    names = sorted({p.name for folder in (committed, regenerated) for p in folder.glob(f"*{TABLE_SUFFIX}")})
    tables = []
    for name in names:
        a, b = committed / name, regenerated / name
        if not b.is_file():
            tables.append(TableComparison(name, "not regenerated", ["committed, but the run did not write it (stale?)"]))
        elif not a.is_file():
            tables.append(TableComparison(name, "not committed", ["written by the run, but not committed"]))
        elif a.read_bytes() == b.read_bytes():
            tables.append(TableComparison(name, "identical"))
        else:
            tables.append(compare_tables(pd.read_csv(a), pd.read_csv(b), declared.get(name, {}), name))
    same = differ = 0
    missing = []
    for name in sorted({p.name for folder in (committed, regenerated) for s in FIGURE_SUFFIXES for p in folder.glob(f"*{s}")}):
        a, b = committed / name, regenerated / name
        if not (a.is_file() and b.is_file()):
            missing.append(f"{name}: {'committed, not regenerated' if a.is_file() else 'regenerated, not committed'}")
        elif a.read_bytes() == b.read_bytes():
            same += 1
        else:
            differ += 1
    return FolderComparison(committed, regenerated, tables, (same, differ, missing),
                            provenance_changes(old_record, new_record))


# --------------------------------------------------------------------------- the command


def verify(names: Sequence[str] | None = None, scratch: str | os.PathLike | None = None, timeout: float | None = None,
           committed_root: str | os.PathLike | None = None, notebook_dir: str | os.PathLike | None = None,
           stream=None) -> int:
    """Re-execute notebooks into a scratch folder and compare their tables with the committed ones.

    Each notebook runs in the cpu profile with ``FIGURE_DIR=<scratch>/figures/<stem>``,
    ``RESULTS_DIR=<scratch>/results/<stem>`` (both emptied first) and ``REFRESH=True``
    where it declares them, so no cached result is read and nothing is written into the
    committed folder. The committed folder is digested before and after the run; any
    change to it is reported as a failure. The executed notebook goes to
    ``<scratch>/notebooks/``; the report of each notebook is printed and also written to
    ``<scratch>/<stem>.drift.txt``.

    Args:
        names: notebook stems, prefixes or paper keys (as ``run``); all notebooks when empty.
        scratch: root of the scratch folders; default :data:`DEFAULT_SCRATCH`.
        timeout: seconds any single cell may run; ``None``: no limit.
        committed_root: folder of the committed ``<stem>/`` folders; default :data:`COMMITTED_ROOT`.
        notebook_dir: folder of the notebook sources; default the repository's ``notebooks/``.
        stream: where the report goes (stdout by default).

    Returns:
        The exit status: 0 when every table is within tolerance, 1 on drift or a failed
        run.

    Raises:
        ValueError: a name that selects no notebook, or a notebook without a ``FIGURE_DIR``
            parameter (it could only write into the committed folder).
    """
    from nic_lib import notebooks  # the runner (papermill, jupytext): only when verifying

    stream = stream if stream is not None else sys.stdout
    scratch = Path(scratch) if scratch is not None else DEFAULT_SCRATCH
    committed_root = Path(committed_root) if committed_root is not None else COMMITTED_ROOT
    kwargs = {"notebook_dir": Path(notebook_dir)} if notebook_dir is not None else {}
    selected = notebooks.list_notebooks(list(names or []), **kwargs)
    declared = {path: _declared_parameters(path) for path in selected}
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
        before = _tree_digest(committed, pattern="*")
        print(f"{stem}: re-executing (profile {VERIFY_PROFILE}, caches bypassed) into {_display(figures)} ...", file=stream, flush=True)
        start = time.perf_counter()
        try:
            notebooks.run_notebook(path, VERIFY_PROFILE, parameters, scratch / "notebooks", timeout)
            failure = None
        except Exception as err:  # a failing cell or kernel: report it, go on with the others
            failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        seconds = time.perf_counter() - start
        touched = _tree_digest(committed, pattern="*") != before
        if failure is not None:
            text = f"  FAILED after {seconds:.0f} s: {failure}\n  (the executed notebook is in {_display(scratch / 'notebooks')})"
            status = "FAILED"
        else:
            comparison = compare_folders(committed, figures)
            text = comparison.report()
            status = "DRIFT" if comparison.drifted else "ok"
        if touched:
            text += f"\n  FAILED: the run changed files in {committed}; a notebook writes there despite FIGURE_DIR"
            status = "FAILED"
        print(f"{stem}: {status} ({seconds:.0f} s)\n{text}\n", file=stream, flush=True)
        fileio.atomic_write_text(scratch / f"{stem}.drift.txt", f"{stem}: {status} ({seconds:.0f} s)\n{text}\n")
        summary.append((stem, seconds, status))
    width = max((len(s) for s, _, _ in summary), default=8)
    print(f"{'notebook':<{width}}  {'seconds':>8}  verified against {_display(committed_root)}", file=stream)
    for stem, seconds, status in summary:
        print(f"{stem:<{width}}  {seconds:8.1f}  {status}", file=stream)
    bad = [s for s, _, status in summary if status != "ok"]
    print(f"{len(summary) - len(bad)} ok, {len(bad)} with drift or failed"
          + (f"; reports in {_display(scratch)}/<notebook>.drift.txt" if bad else ""), file=stream)
    return 1 if bad else 0


# --------------------------------------------------------------------------- helpers


def _declared(record: dict | None) -> dict[str, dict[str, Tolerance]]:
    """``{table: {column: Tolerance}}`` from a provenance record."""
    out = {}
    for name, entry in ((record or {}).get("tables") or {}).items():
        try:
            out[name] = {c: Tolerance.from_json(t) for c, t in (entry.get("columns") or {}).items()}
        except (KeyError, TypeError, ValueError):
            logger.warning("unreadable tolerances for %s in %s; the default rule applies", name, PROVENANCE_FILE)
    return out


def _declared_parameters(path: Path) -> set[str]:
    """Names assigned in a notebook's ``parameters`` cell."""
    import jupytext

    from nic_lib import notebooks

    return notebooks._parameters_cell(jupytext.read(path, fmt=notebooks.SOURCE_FORMAT), path)[1]


def _relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|y - x| / |x|: 0 where equal (NaN and NaN included), inf where x is 0 or one side is NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(y - x) / np.abs(x)
    rel = np.where((x == y) | (np.isnan(x) & np.isnan(y)), 0.0, rel)
    return np.nan_to_num(rel, nan=np.inf, posinf=np.inf)


def _plain(value):
    """A numpy scalar as the Python value it holds (its repr is the number, whatever numpy's version)."""
    return value.item() if isinstance(value, np.generic) else value


def _row_label(df: pd.DataFrame, row: int) -> str:
    """`` (codec=linear, input=clean)``: the first text columns of a row, to find it in the table."""
    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])][:ROW_LABEL_COLUMNS]
    return " (" + ", ".join(f"{c}={df[c].iloc[row]}" for c in text) + ")" if text else ""


def _tree_digest(folder: Path, pattern: str = "*.py") -> str | None:
    """SHA-256 over the relative names and bytes of the files under ``folder`` matching ``pattern``."""
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _git_commit() -> str | None:
    """HEAD of the repository's git checkout, or ``None`` (no git, not a checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_versions() -> dict[str, str | None]:
    """name -> installed version of every dependency of :data:`DISTRIBUTION` (None if missing)."""
    try:
        requires = metadata.requires(DISTRIBUTION) or []
        names = [r.split(";")[0].split("[")[0] for r in requires if "extra ==" not in r]
        names = [n.split("<")[0].split(">")[0].split("=")[0].split("!")[0].split("~")[0].strip() for n in names]
    except metadata.PackageNotFoundError:
        names = list(FALLBACK_PACKAGES)
    versions = {}
    for name in sorted(set(names), key=str.lower):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _flatten(record: Mapping, prefix: str = "") -> dict:
    """``{"packages": {"torch": "2.1"}}`` -> ``{"packages.torch": "2.1"}``."""
    out = {}
    for k, v in record.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(value) -> str:
    """A value for the report: digests cut to 12 characters."""
    text = str(value)
    return text[:12] if isinstance(value, str) and len(text) >= 40 and all(c in "0123456789abcdef" for c in text) else text


def _display(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
