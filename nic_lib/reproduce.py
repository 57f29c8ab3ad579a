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

``make verify NB=04`` (``python -m nic_lib.notebooks verify 04``; :func:`nic_lib.notebooks.verify`) re-executes
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

This module imports nothing of the project but the leaf ``nic_lib.fileio``: notebooks
import it to save their tables, and the ``verify`` command (:mod:`nic_lib.notebooks`, which
runs the notebooks) imports it to compare them.

Two files: the provenance record in :mod:`nic_lib.provenance`, tolerances, saving and
comparing tables here; its names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from nic_lib import fileio
from nic_lib.provenance import (  # noqa: F401  re-exported: import them from here
    code_provenance,
    DISTRIBUTION,
    environment,
    FALLBACK_PACKAGES,
    provenance_changes,
    PROVENANCE_FILE,
    read_provenance,
    REPO_ROOT,
    THREAD_VARIABLES,
    tree_digest,
)


#: Committed tables and figures, one folder per notebook.
COMMITTED_ROOT = REPO_ROOT / "paper_figures"
#: Where :func:`nic_lib.notebooks.verify` re-executes notebooks: ``<root>/{figures,results}/<notebook>/``,
#: the executed notebooks in ``<root>/notebooks/`` and the reports in ``<root>/<notebook>.drift.txt``.
DEFAULT_SCRATCH = REPO_ROOT / "build" / "verify"
#: The profile whose tables are committed, and the one :func:`nic_lib.notebooks.verify` runs.
VERIFY_PROFILE = "cpu"
#: Suffixes of the tables compared, and of the figures only reported (byte-identical or not).
TABLE_SUFFIX = ".csv"
FIGURE_SUFFIXES = (".png", ".pdf")
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
#: Numbers of a float32 network trained here (notebook 04's toy codecs): one CPU gives the
#: same bits on every run; another CPU's float32 kernels round otherwise and training
#: carries the difference along. Measured 2026-12-07, the committed tables (Intel Xeon)
#: re-made on an AMD EPYC: worst relative difference 4.3e-2 in one frequency bin of the
#: MLP's distortion spectrum (0.1936 vs 0.1852), 2.1e-3 in its summary rows, 8.3e-4
#: absolute in the small "loss change" column; the linear codec's rows equal.
TRAINED_FLOAT32 = close(rtol=5e-2, atol=1e-2)
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
        lines = [f"  committed   {display_path(self.committed)}", f"  regenerated {display_path(self.regenerated)}"]
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


def display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
