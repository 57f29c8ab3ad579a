"""What a notebook run prints while it works: the estimate of each notebook's time
(:func:`estimate_run`: its last complete run here, else :data:`MEASURED_SECONDS`), a line per
notebook and per long cell with what is left (:class:`RunProgress`), and the papermill engine
that reports each cell to it (:data:`PROGRESS_ENGINE`). Part of :mod:`nic_lib.notebooks`,
which runs the notebooks; import from there.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import nbformat
from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

from nic_lib.plotting import BUILD_DIR


#: Executed notebooks go to <this>/<profile>/ unless told otherwise (git-ignored).
DEFAULT_OUT_ROOT = BUILD_DIR / "notebooks"
#: The one parameter every notebook must declare (the runner always injects it).
PROFILE_PARAMETER = "PROFILE"
#: Measured wall-clock seconds of a whole run per profile and notebook, on this project's
#: 2-core machine: the estimate before a notebook has run on this machine. Sources: commit
#: 0b970d2 (01: 3,783 s), 0b37f38 (03: 1,115 s), 2f081fa (05: "37 min on one core"); 00 and
#: 04 from issue 28 (871 s, 47 s; 04 took 42 s here on 2026-12-06, beside two training runs).
#: 02 has no whole-run measurement: its grid alone took 71 + 30 min with two processes
#: (README, *The OOD grid*); the notebook computes it in one, then reads it from cache.
MEASURED_SECONDS = {
    "cpu": {
        "00_classic_codecs": 871,
        "01_mbt2018": 3783,
        # 2026-12-07, figures 0-8 (1,115 s in 0b37f38 before figures 0, 7 and 8), beside one
        # training run, a CI run and short measurements: an upper bound
        "03_spectral_inspection": 6787,
        "04_spectral_theory": 47,
        "05_pq_mim": 37 * 60,
        "06_appendix_engineering": 11,  # 2026-12-06 (reads the benchmarks' tables)
    },
}
#: While a cell runs, a progress line every this many seconds.
HEARTBEAT_S = 60.0
#: Cells expected to take at least this long get a line when they start; shorter ones only
#: when nothing was printed for :data:`HEARTBEAT_S`.
LONG_CELL_S = 20.0
#: Tags of the cells papermill adds to an executed notebook: not in the source, not numbered.
PAPERMILL_TAGS = ("injected-parameters", "papermill-error-cell-tag")
#: The papermill engine that reports progress (registered below).
PROGRESS_ENGINE = "nic-progress"


@dataclass
class Estimate:
    """How long a notebook is expected to run, and what the expectation rests on.

    Attributes:
        seconds: the whole run, or ``None`` when nothing is known.
        cells: seconds per cell source, from the last complete run (empty otherwise).
        basis: where the numbers come from, in words, for the progress lines.
    """

    seconds: float | None
    cells: dict[str, float] = field(default_factory=dict)
    basis: str = "no earlier run here, no measured time"


def estimate_run(source: Path, profile: str, parameters: dict | None = None, out_dir: Path | None = None) -> Estimate:
    """The expected run time of ``source``: its last complete run in ``out_dir``, else :data:`MEASURED_SECONDS`.

    The last run counts only if every cell completed and it had the same parameters
    (``PROFILE`` included): a run on 4 images says little about one on 24. Its cells are
    matched to the current ones by their source text, so an edited cell has no estimate.

    Args:
        source: the notebook's ``.py``.
        profile: as for :func:`run_notebook`.
        parameters: the parameters the run injects besides ``PROFILE``.
        out_dir: where the run writes; default ``build/notebooks/<profile>/``.
    """
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / profile
    last = out_dir / f"{source.stem}.executed.ipynb"
    wanted = {PROFILE_PARAMETER: profile, **(parameters or {})}
    if last.is_file():
        try:
            nb = nbformat.read(last, as_version=4)
        except Exception:  # unreadable (an old or foreign file): no estimate from it
            nb = None
        meta = nb.metadata.get("papermill", {}) if nb is not None else {}
        statuses = [c.metadata.get("papermill", {}).get("status") for c in (nb.cells if nb is not None else [])]
        if meta.get("parameters") == wanted and meta.get("duration") and statuses and set(statuses) == {"completed"}:
            cells = {}
            for cell in nb.cells:
                cells[cell.source] = cells.get(cell.source, 0.0) + float(cell.metadata["papermill"].get("duration") or 0.0)
            day = str(meta.get("end_time", ""))[:10]
            return Estimate(float(meta["duration"]), cells, f"its last run here, {day}")
    measured = MEASURED_SECONDS.get(profile, {}).get(source.stem)
    if measured is not None:
        return Estimate(float(measured), {}, "measured on the project's 2-core machine")
    return Estimate(None)


class RunProgress:
    """Progress lines for a run of several notebooks, with estimates of what is left.

    :func:`run_notebook` calls :meth:`cell_started` and :meth:`cell_finished` (through the
    papermill engine :data:`PROGRESS_ENGINE`); the command line calls
    :meth:`notebook_started` and :meth:`notebook_finished`. While a cell runs, a
    background thread prints a line every ``heartbeat_s`` seconds with the last progress
    bar the cell printed (tqdm's own estimate, for the loops inside it).

    Args:
        plan: ``(notebook stem, estimate)`` for every notebook of the run, in order.
        stream: where the lines go (stderr by default, beside the log).
        heartbeat_s: seconds between two lines about a running cell.
        long_cell_s: a cell expected to take this long gets a line when it starts.
    """

    def __init__(self, plan: list[tuple[str, Estimate]], stream: TextIO | None = None,
                 heartbeat_s: float = HEARTBEAT_S, long_cell_s: float = LONG_CELL_S):
        self.plan = plan
        self.stream = stream if stream is not None else sys.stderr
        self.heartbeat_s = heartbeat_s
        self.long_cell_s = long_cell_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current = -1  # index into plan
        self._nb_start = 0.0
        self._cell: nbformat.NotebookNode | None = None
        self._cell_label = ""
        self._cell_start = 0.0
        self._last_line = 0.0
        self._done_cells: set[str] = set()

    def begin(self) -> None:
        """Print what the whole run is expected to take."""
        known = [e.seconds for _, e in self.plan if e.seconds is not None]
        unknown = [stem for stem, e in self.plan if e.seconds is None]
        total = f"about {format_duration(sum(known))}" if known else "no estimate yet"
        extra = f", plus {', '.join(unknown)} (not measured)" if unknown and known else ""
        self._print(f"{len(self.plan)} notebook(s) to run, {total}{extra}.")

    def notebook_started(self, index: int) -> None:
        """Start reporting on notebook ``index`` of the plan."""
        stem, estimate = self.plan[index]
        with self._lock:
            self._current, self._nb_start, self._cell, self._done_cells = index, time.monotonic(), None, set()
        expected = (f"expected {format_duration(estimate.seconds)} ({estimate.basis})" if estimate.seconds
                    else f"no estimate ({estimate.basis})")
        self._print(f"[{index + 1}/{len(self.plan)}] {stem}: {expected}")
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="notebook-progress", daemon=True)
        self._thread.start()

    def notebook_finished(self, index: int, ok: bool) -> None:
        """Stop reporting on notebook ``index``; print its time against the estimate."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        stem, estimate = self.plan[index]
        took = time.monotonic() - self._nb_start
        against = f" (expected {format_duration(estimate.seconds)})" if estimate.seconds else ""
        self._print(f"[{index + 1}/{len(self.plan)}] {stem}: {'done' if ok else 'FAILED'} in {format_duration(took)}{against}")

    def cell_started(self, nb: nbformat.NotebookNode, index: int) -> None:
        """Called by the engine when cell ``index`` of the executed notebook starts."""
        cell = nb.cells[index]
        now = time.monotonic()
        with self._lock:
            self._cell, self._cell_start = cell, now
            self._cell_label = _cell_label(nb, index)
            expected = self._expected(cell)
            quiet = now - self._last_line < self.heartbeat_s
        if (expected is not None and expected >= self.long_cell_s) or not quiet:
            guess = f", expected {format_duration(expected)}" if expected else ""
            self._print(f"    {self._cell_label} started{guess}; {self._left()}")

    def cell_finished(self, nb: nbformat.NotebookNode, index: int) -> None:
        """Called by the engine when cell ``index`` of the executed notebook ends."""
        with self._lock:
            self._done_cells.add(nb.cells[index].source)
            self._cell = None

    def _expected(self, cell) -> float | None:
        return self.plan[self._current][1].cells.get(cell.source) if self._current >= 0 else None

    def _left(self) -> str:
        """'about X left here, Y in all' from the estimates and the clock."""
        stem, estimate = self.plan[self._current]
        now = time.monotonic()
        if estimate.cells:
            pending = sum(t for src, t in estimate.cells.items() if src not in self._done_cells)
            if self._cell is not None and self._cell.source in estimate.cells:
                ran = now - self._cell_start
                pending -= min(ran, estimate.cells[self._cell.source])
            here = max(pending, 0.0)
        elif estimate.seconds:
            here = max(estimate.seconds - (now - self._nb_start), 0.0)
        else:
            return f"{format_duration(now - self._nb_start)} so far, no estimate of what is left"
        later = [e.seconds for _, e in self.plan[self._current + 1:]]
        rest = here + sum(t for t in later if t)
        unknown = " + the unmeasured" if any(t is None for t in later) else ""
        # Past its estimate, say so rather than "0 s left".
        left_here = f"about {format_duration(here)} left here" if here >= 1 else "past its estimate here"
        return f"{format_duration(now - self._nb_start)} so far, {left_here}, {format_duration(rest)}{unknown} in all"

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self.heartbeat_s, 5.0)):
            with self._lock:
                cell, started = self._cell, self._cell_start
                due = cell is not None and time.monotonic() - max(started, self._last_line) >= self.heartbeat_s
            if not due:
                continue
            expected = self._expected(cell)
            ran = time.monotonic() - started
            guess = f" of about {format_duration(expected)}" if expected else ""
            bar = _last_progress_text(cell)
            self._print(f"    {self._cell_label} running {format_duration(ran)}{guess}; {self._left()}" + (f"\n      {bar}" if bar else ""))

    def _print(self, line: str) -> None:
        with self._lock:
            self._last_line = time.monotonic()
        print(line, file=self.stream, flush=True)


class _ProgressExecutionManager(NotebookExecutionManager):
    """papermill's execution manager, telling a :class:`RunProgress` when each cell starts and ends."""

    def __init__(self, nb, progress: RunProgress, **kwargs):
        super().__init__(nb, **kwargs)
        self.progress = progress

    def cell_start(self, cell, cell_index=None, **kwargs):
        super().cell_start(cell, cell_index, **kwargs)
        self.progress.cell_started(self.nb, cell_index)

    def cell_complete(self, cell, cell_index=None, **kwargs):
        super().cell_complete(cell, cell_index, **kwargs)
        self.progress.cell_finished(self.nb, cell_index)


class _ProgressEngine(NBClientEngine):
    """papermill's nbclient engine with :class:`_ProgressExecutionManager` (``progress=`` keyword).

    ``execute_notebook`` is papermill's ``Engine.execute_notebook`` with the manager swapped:
    papermill's documented way to change execution is a registered engine.
    """

    @classmethod
    def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                         autosave_cell_every=30, progress: RunProgress | None = None, **kwargs):
        nb_man = _ProgressExecutionManager(nb, progress, output_path=output_path, progress_bar=progress_bar,
                                           log_output=log_output, autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


papermill_engines.register(PROGRESS_ENGINE, _ProgressEngine)


def source_cell_number(nb: nbformat.NotebookNode, index: int) -> int | None:
    """1-based number, in the source, of cell ``index`` of an executed notebook; ``None`` for a cell papermill added.

    Papermill adds the injected-parameters cell and, after a failure, two error notes
    (:data:`PAPERMILL_TAGS`); the numbers skip them, as the error messages do.
    """
    def added(cell):
        return any(tag in cell.metadata.get("tags", []) for tag in PAPERMILL_TAGS)

    if added(nb.cells[index]):
        return None
    return index + 1 - sum(added(cell) for cell in nb.cells[:index])


def _cell_label(nb: nbformat.NotebookNode, index: int) -> str:
    """'cell 12/40 (Figure 3 — ...)': numbered as in the source, with the section it belongs to."""
    number = source_cell_number(nb, index)
    if number is None:
        return "injected parameters"
    total = sum(source_cell_number(nb, i) is not None for i in range(len(nb.cells)))
    heading = ""
    for cell in reversed(nb.cells[: index + 1]):  # the section the cell belongs to
        if cell.cell_type == "markdown":
            found = re.search(r"^#+\s+(.+)$", cell.source, flags=re.MULTILINE)
            if found:
                heading = f" ({found.group(1).strip()[:60]})"
                break
    return f"cell {number}/{total}{heading}"


def _last_progress_text(cell: nbformat.NotebookNode, width: int = 110) -> str:
    """The last line a cell printed, as a terminal would show it (a tqdm bar redraws with \\r)."""
    for output in reversed(list(cell.get("outputs", []))):
        if output.get("output_type") == "stream":
            lines = [part.strip() for part in re.split(r"[\r\n]", output.get("text", "")) if part.strip()]
            if lines:
                return lines[-1][:width]
    return ""


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '1 h 05 min'."""
    seconds = max(float(seconds), 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
