"""The executed notebooks as a static HTML site, and a short committed summary per notebook.

Two readers see results without running anything:

- Someone with the repository built (``make figures``, or ``make site`` after it):
  ``build/site/index.html`` links one page per notebook, rendered by nbconvert from the
  executed notebook papermill kept in ``build/notebooks/<profile>/``, with every output,
  figure and printed finding, and a note at the top that says which run it shows.
  nbconvert's ``lab`` template gives the page JupyterLab's look and cell classes.
- Someone reading the repository on its host, who has built nothing: each
  ``paper_figures/<notebook>/README.md`` (shown under the folder's file list) has the
  notebook's title, its findings as the last cpu-profile run printed them, and its figures
  and tables under the section that makes them. It is written from the ``.py`` source and
  the executed cpu notebook, with no dates or times in it, so a rerun that changes no
  number changes no line.

Only a complete run of the ``cpu`` profile rewrites a summary, as only it writes
``paper_figures/``. A page from another profile (``--fallback smoke``) says so in its note.

Command line::

    python -m nic_lib.site build [--profile cpu] [--fallback smoke] [--out build/site]
    python -m nic_lib.site summary [NAMES...]   # paper_figures/<nb>/README.md, from a run if there is one
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

from nic_lib import fileio
from nic_lib.notebooks import (
    DEFAULT_OUT_ROOT,
    MEASURED_SECONDS,
    PROFILES,
    SOURCE_FORMAT,
    format_duration,
    list_notebooks,
    source_cell_number,
)
from nic_lib.plotting import BUILD_DIR, COMMITTED_PROFILE, REPO_ROOT, figure_dir

#: Where ``make site`` writes the pages.
SITE_DIR = BUILD_DIR / "site"
#: The summary's file name inside ``paper_figures/<notebook>/``: the name a repository host
#: renders below a folder's file list.
SUMMARY_NAME = "README.md"
#: nbconvert template: JupyterLab's look, and its cell classes (``jp-Cell``...) in the page.
TEMPLATE = "lab"
#: A summary's findings are the outputs of the section whose heading starts with this.
FINDINGS_HEADING = "Findings"
#: First line of every summary (and how a hand-written file would be told apart).
SUMMARY_MARKER = "<!-- Written by `python -m nic_lib.site` from {source} and its last complete cpu-profile run; not edited by hand. -->"
#: ``save_figure(fig, "name")`` and ``fig_dir / "name.csv"`` in a notebook's code: what a section
#: makes (listed only where the file exists).
_FIGURE_CALL = re.compile(r"save_figure\(\s*[^,()]+(?:\([^()]*\))?\s*,\s*f?[\"']([\w{}-]+)[\"']")
_TABLE_PATH = re.compile(r"fig_dir\s*/\s*[\"']([\w.-]+\.csv)[\"']")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$", re.MULTILINE)
#: The default repr of an object, ``<pandas.io.formats.style.Styler at 0x7f...>``.
_OBJECT_REPR = re.compile(r"^<[\w.]+( object)? at 0x[0-9a-f]+>$")


@dataclass
class Run:
    """One executed notebook and what is known about its run.

    Attributes:
        source: the notebook's ``.py``.
        path: the executed notebook, or ``None`` when it has not run in the profiles looked at.
        profile: the profile of that run.
        complete: every cell completed (no failure, not interrupted).
        failed_cell: 1-based number of the failing cell, when one failed.
        ended: papermill's end time (ISO 8601), and ``seconds`` its duration.
    """

    source: Path
    path: Path | None = None
    profile: str | None = None
    complete: bool = False
    failed_cell: int | None = None
    ended: str = ""
    seconds: float | None = None

    @property
    def stem(self) -> str:
        return self.source.stem


def find_run(source: Path, profiles: list[str], root: Path = DEFAULT_OUT_ROOT) -> Run:
    """The executed notebook of ``source`` in the first of ``profiles`` that has one (``root/<profile>/``)."""
    for profile in profiles:
        path = Path(root) / profile / f"{source.stem}.executed.ipynb"
        if not path.is_file():
            continue
        nb = nbformat.read(path, as_version=4)
        meta = nb.metadata.get("papermill", {})
        statuses = [c.metadata.get("papermill", {}).get("status") for c in nb.cells]
        failed = next((i for i, s in enumerate(statuses) if s == "failed"), None)
        return Run(source, path, profile, complete=bool(statuses) and set(statuses) == {"completed"},
                   failed_cell=None if failed is None else source_cell_number(nb, failed),
                   ended=str(meta.get("end_time") or ""), seconds=meta.get("duration"))
    return Run(source)


def notebook_title(source: Path) -> str:
    """The first markdown heading of a notebook source (its stem if it has none)."""
    for cell in jupytext.read(source, fmt=SOURCE_FORMAT).cells:
        if cell.cell_type == "markdown":
            found = _HEADING.search(cell.source)
            if found:
                return found.group(2)
    return source.stem


def render_page(run: Run, out_dir: Path, index_name: str = "index.html") -> Path:
    """Render ``run``'s executed notebook as ``out_dir/<stem>.html`` with a note on the run at the top.

    Returns:
        The page's path.
    """
    from nbconvert import HTMLExporter

    nb = nbformat.read(run.path, as_version=4)
    note = nbformat.v4.new_markdown_cell(_page_note(run, index_name))
    note.metadata["tags"] = ["nic-site-note"]
    nb.cells.insert(0, note)
    exporter = HTMLExporter(template_name=TEMPLATE)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": notebook_title(run.source)}})
    return fileio.atomic_write_text(Path(out_dir) / f"{run.stem}.html", body)


def build_site(out_dir: Path = SITE_DIR, profile: str = COMMITTED_PROFILE, fallback: str | None = None,
               names: list[str] | None = None, notebook_dir: Path | None = None,
               runs_root: Path = DEFAULT_OUT_ROOT, summaries: bool = True) -> list[Run]:
    """Render every executed notebook into ``out_dir`` with an index page; refresh the summaries.

    Args:
        out_dir: folder of the site (created).
        profile: the profile whose executed notebooks are rendered.
        fallback: a profile to render a notebook from when ``profile`` has no run of it
            (pages say so); ``None``: such a notebook is listed with the command that runs it.
        names: notebooks to include, as for :func:`nic_lib.notebooks.list_notebooks`; all by default.
        notebook_dir: folder of the sources (default: the repository's ``notebooks/``).
        runs_root: folder holding ``<profile>/<stem>.executed.ipynb``.
        summaries: rewrite ``paper_figures/<stem>/README.md`` of each notebook rendered
            from a complete run of the committed profile.

    Returns:
        One :class:`Run` per notebook, ``path=None`` for those not rendered.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = list_notebooks(names) if notebook_dir is None else list_notebooks(names, notebook_dir=notebook_dir)
    profiles = [profile] + ([fallback] if fallback and fallback != profile else [])
    runs = []
    for source in sources:
        run = find_run(source, profiles, runs_root)
        if run.path is not None:
            render_page(run, out_dir)
            if summaries and run.profile == COMMITTED_PROFILE and run.complete:
                write_summary(source, run)
        runs.append(run)
    fileio.atomic_write_text(out_dir / "index.html", _index_page(runs, profile, out_dir))
    return runs


def write_summary(source: Path, run: Run | None = None, folder: Path | None = None) -> Path:
    """Write ``paper_figures/<stem>/README.md``: title and abstract, findings, figures and tables by section.

    Args:
        source: the notebook's ``.py``.
        run: its executed cpu-profile notebook; without one the findings are left out and
            the summary says which command prints them.
        folder: where to write (default: the notebook's figure folder of the cpu profile).

    Returns:
        The summary's path.
    """
    folder = Path(folder) if folder is not None else figure_dir(source.stem, COMMITTED_PROFILE)
    nb = jupytext.read(source, fmt=SOURCE_FORMAT)
    title, intro = _title_and_intro(nb)
    short = source.stem[:2]
    measured = MEASURED_SECONDS.get(COMMITTED_PROFILE, {}).get(source.stem)
    took = f" (about {format_duration(measured)} on this project's 2-core machine)" if measured else ""
    source_link = _relative(source, folder)
    lines = [
        SUMMARY_MARKER.format(source=f"notebooks/{source.name}"),
        f"# {title}",
        "",
        *([intro, ""] if intro else []),
        f"Notebook [`notebooks/{source.name}`]({source_link}), summarised: the findings as its last cpu-profile run "
        f"printed them, then its figures and tables in the order it makes them. Regenerate them with "
        f"`make figures NB={short}`{took}; `make site` renders the whole executed notebook into "
        f"`build/site/{source.stem}.html`.",
        "",
        f"## {FINDINGS_HEADING}",
        "",
    ]
    findings = _findings(nbformat.read(run.path, as_version=4)) if run is not None and run.path is not None else []
    lines += findings or [f"Not in this summary yet: `make figures NB={short}` runs the notebook, which prints them, "
                          "and writes them here.", ""]
    lines += ["## Figures and tables", ""]
    for heading, figures, tables in _made_by_section(nb):
        present_figures = [f for name in figures for f in _figure_files(folder, name)]
        present_tables = [t for t in tables if (folder / t).is_file()]
        if not present_figures and not present_tables:
            continue
        lines += [f"### {heading}", ""]
        lines += [f"![{name}]({name}.png)\n" for name in present_figures]
        if present_tables:
            lines += ["Tables: " + ", ".join(f"[`{t}`]({t})" for t in present_tables), ""]
    return fileio.atomic_write_text(folder / SUMMARY_NAME, "\n".join(lines).rstrip() + "\n")


def _figure_files(folder: Path, name: str) -> list[str]:
    """The figures a ``save_figure`` call wrote into ``folder``: its name, or every file its
    f-string template matches (``f"fig7_spectra_{codec}"``: one figure per codec), sorted."""
    if "{" not in name:
        return [name] if (folder / f"{name}.png").is_file() else []
    pattern = re.sub(r"\{[^{}]*\}", "*", name)
    return sorted(p.stem for p in folder.glob(f"{pattern}.png"))


def _title_and_intro(nb: nbformat.NotebookNode) -> tuple[str, str]:
    """The first heading, and the rest of its cell (each notebook opens with its abstract)."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        found = _HEADING.search(cell.source)
        if found:
            return found.group(2), cell.source[found.end():].strip()
    return "", ""


def _made_by_section(nb: nbformat.NotebookNode) -> list[tuple[str, list[str], list[str]]]:
    """``(section heading, figure names, table files)`` in source order, from the code's ``save_figure`` calls."""
    sections: list[tuple[str, list[str], list[str]]] = [("Before the first section", [], [])]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            headings = [h for level, h in _HEADING.findall(cell.source) if len(level) >= 2]
            if headings:
                sections.append((headings[0], [], []))
        elif cell.cell_type == "code":
            _, figures, tables = sections[-1]
            figures += [f for f in _FIGURE_CALL.findall(cell.source) if f not in figures]
            tables += [t for t in _TABLE_PATH.findall(cell.source) if t not in tables]
    return sections


def _findings(nb: nbformat.NotebookNode) -> list[str]:
    """The outputs of the executed notebook's Findings section, as Markdown lines."""
    lines, inside = [], False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heading = _HEADING.search(cell.source)
            if heading:
                inside = heading.group(2).startswith(FINDINGS_HEADING)
            continue
        if not inside or cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "text/markdown" in data:
                lines += [data["text/markdown"].strip(), ""]
            elif output.get("output_type") == "stream" and output.get("name") == "stdout":
                lines += ["```text", output.get("text", "").rstrip(), "```", ""]
            elif "text/plain" in data and _OBJECT_REPR.match(data["text/plain"].strip()):
                # an object with only an HTML face (a pandas Styler): its repr says nothing
                lines += ["(a styled table: see the rendered page, `make site`)", ""]
            elif "text/plain" in data:
                lines += ["```text", data["text/plain"].rstrip(), "```", ""]
    return lines


def _page_note(run: Run, index_name: str) -> str:
    """The note at the top of a page: which run it shows, how to make it again."""
    short = run.stem[:2]
    ended = run.ended[:16].replace("T", " ")
    took = f" in {format_duration(run.seconds)}" if run.seconds else ""
    parts = [f"**Rendered from** `{_display(run.path)}`: profile `{run.profile}`, run ended {ended} UTC{took}. "
             f"Source: `{_display(run.source)}`. [All notebooks]({index_name})"]
    if run.profile != COMMITTED_PROFILE:
        parts.append(f"**Profile `{run.profile}`**: small data and untrained or tiny models; its numbers check the "
                     f"pipeline, not the papers. The committed figures are the `{COMMITTED_PROFILE}` profile's, in "
                     f"`paper_figures/{run.stem}/`; `make figures NB={short}` makes this page from that run.")
    if run.failed_cell is not None:
        parts.append(f"**This run failed in cell {run.failed_cell}**; the traceback is below it, the cells after it did not run.")
    elif not run.complete:
        parts.append("**This run did not finish** (interrupted): the cells after the last output did not run.")
    return "\n\n".join("> " + p for p in parts)


def _index_page(runs: list[Run], profile: str, out_dir: Path) -> str:
    """The site's front page: one row per notebook."""
    rows = []
    for run in runs:
        title = html.escape(notebook_title(run.source))
        figures = figure_dir(run.stem, run.profile or profile)
        figures_link = f'<a href="{html.escape(_relative(figures, out_dir))}/">{html.escape(_display(figures))}/</a>'
        if run.path is None:
            what = f"not run yet: <code>make figures NB={run.stem[:2]}</code>"
            rows.append(f"<tr><td>{title}</td><td>{what}</td><td>{figures_link}</td></tr>")
            continue
        state = "" if run.complete else (" — <b>failed</b>" if run.failed_cell is not None else " — <b>unfinished</b>")
        took = f", {format_duration(run.seconds)}" if run.seconds else ""
        what = f"profile <code>{run.profile}</code>, {html.escape(run.ended[:10])}{took}{state}"
        rows.append(f'<tr><td><a href="{run.stem}.html">{title}</a></td><td>{what}</td><td>{figures_link}</td></tr>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>nic-repro: the executed notebooks</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.5em;text-align:left;vertical-align:top}}
code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body><h1>nic-repro: the executed notebooks</h1>
<p>Each page is a notebook as its last run left it, every output and figure included (rendered by nbconvert from
<code>build/notebooks/&lt;profile&gt;/</code>; the profile asked for: <code>{html.escape(profile)}</code>).
<code>make figures</code> runs them all again, <code>make figures NB=01</code> one of them, then this site is rebuilt.</p>
<table><tr><th>notebook</th><th>run</th><th>figures</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def _display(path: Path) -> str:
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m nic_lib.site", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="render the executed notebooks into a static site")
    build.add_argument("--profile", choices=PROFILES, default=COMMITTED_PROFILE, help=f"default: {COMMITTED_PROFILE}")
    build.add_argument("--fallback", choices=PROFILES, help="render from this profile where --profile has no run")
    build.add_argument("--out", type=Path, default=SITE_DIR, help=f"default: {_display(SITE_DIR)}")
    build.add_argument("names", nargs="*", help="notebooks to include (default: all)")
    summary = sub.add_parser("summary", help=f"write paper_figures/<notebook>/{SUMMARY_NAME}")
    summary.add_argument("names", nargs="*", help="notebooks (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "summary":
            for source in list_notebooks(args.names):
                run = find_run(source, [COMMITTED_PROFILE])
                print(write_summary(source, run if run.complete else None).relative_to(REPO_ROOT))
            return 0
        runs = build_site(args.out, args.profile, args.fallback, args.names or None)
    except ValueError as err:  # an unknown notebook name
        print(f"error: {err}", file=sys.stderr)
        return 2
    rendered = [r for r in runs if r.path is not None]
    missing = [r.stem for r in runs if r.path is None]
    for run in rendered:
        print(f"{run.profile:<6} {_display(args.out / (run.stem + '.html'))}")
    if missing:
        print(f"not run yet (no build/notebooks/{args.profile}/<name>.executed.ipynb): {', '.join(missing)}; "
              f"`make figures NB=<number>` runs one")
    print(f"site: {_display(args.out / 'index.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
