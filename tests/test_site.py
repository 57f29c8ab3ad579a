"""The static site (`make site`) and the committed per-notebook summaries.

A tiny notebook in the shape of the real ones (title, parameters cell, a figure saved with
save_figure and shown, a table, a Findings section printed from code) is executed once with
the smoke profile; the site and a summary are built from that run. One more notebook is never
run, so the index must say how to run it.
"""

from __future__ import annotations

import pytest

import browser
from nic_lib import site
from nic_lib.notebooks import NotebookExecutionError, list_notebooks, run_notebook
from nic_lib.plotting import PAPER_FIGURES

TINY = '''\
# %% [markdown]
# # 01 — A tiny notebook
#
# It draws one line and reports one finding.

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from nic_lib import cache, plotting

# %% tags=["parameters"]
PROFILE = "cpu"  # smoke | cpu | full
FIGURE_DIR = ""  # where the figure and the table go

# %% [markdown]
# ## Figure 1 — a line

# %%
fig_dir = plotting.use_figure_dir(FIGURE_DIR)
fig, ax = plt.subplots(figsize=(3, 2))
ax.plot([0, 1], [0, 1])
plotting.save_figure(fig, "fig1_line", formats=("png",))
plt.show()
for part in ("left", "right"):  # one figure per item, named by an f-string
    fig, ax = plt.subplots(figsize=(2, 2))
    plotting.save_figure(fig, f"fig1_part_{part}", formats=("png",))
    plt.close(fig)
cache.write_table(pd.DataFrame({"x": [0, 1], "y": [0, 1]}), fig_dir / "line.csv")

# %% [markdown]
# ## Findings (generated from the tables above)

# %%
display(Markdown("- The line rises by 1 over 1: slope 1."))
display(pd.DataFrame({"claim": ["slope"], "verdict": ["holds"]}).style)
'''

FAILING = '''\
# %% [markdown]
# # 03 — A notebook that fails

# %% tags=["parameters"]
PROFILE = "cpu"

# %%
raise RuntimeError("stops here")
'''


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Sources, the smoke runs of two of them, and the site built from those runs."""
    root = tmp_path_factory.mktemp("site")
    sources, runs, figures = root / "notebooks", root / "runs", root / "figures"
    sources.mkdir()
    (sources / "01_tiny.py").write_text(TINY)
    (sources / "02_never_run.py").write_text(TINY.replace("01 — A tiny notebook", "02 — Never run"))
    (sources / "03_failing.py").write_text(FAILING)
    run_notebook(sources / "01_tiny.py", "smoke", {"FIGURE_DIR": str(figures)}, runs / "smoke", log_output=False)
    with pytest.raises(NotebookExecutionError):
        run_notebook(sources / "03_failing.py", "smoke", out_dir=runs / "smoke", log_output=False)
    out = root / "site"
    result = site.build_site(out, profile="cpu", fallback="smoke", notebook_dir=sources, runs_root=runs, summaries=False)
    return {"root": root, "sources": sources, "runs": runs, "figures": figures, "out": out, "result": result}


def test_site_has_a_page_per_run_with_its_figures_and_findings(built):
    page = (built["out"] / "01_tiny.html").read_text()
    assert "jp-Notebook" in page and "jp-MarkdownCell" in page
    assert "data:image/png;base64," in page  # the figure, inside the page
    assert "The line rises by 1 over 1: slope 1." in page


def test_a_page_from_another_profile_says_so_and_names_the_command_for_the_committed_one(built):
    page = (built["out"] / "01_tiny.html").read_text()
    assert "profile <code>smoke</code>" in page
    assert "make figures NB=01" in page


def test_index_links_every_run_and_says_how_to_run_the_others(built):
    index = (built["out"] / "index.html").read_text()
    assert 'href="01_tiny.html"' in index and "01 — A tiny notebook" in index
    assert "not run yet: <code>make figures NB=02</code>" in index
    assert not (built["out"] / "02_never_run.html").exists()


def test_a_failed_run_is_rendered_with_the_cell_that_failed(built):
    page = (built["out"] / "03_failing.html").read_text()
    assert "This run failed in cell 3" in page
    assert "stops here" in page  # the traceback
    assert "<b>failed</b>" in (built["out"] / "index.html").read_text()


def test_summary_has_the_findings_then_each_figure_and_table_under_its_section(built):
    source = built["sources"] / "01_tiny.py"
    run = site.find_run(source, ["smoke"], built["runs"])
    summary = site.write_summary(source, run, folder=built["figures"]).read_text()
    assert summary.splitlines()[1] == "# 01 — A tiny notebook"
    findings, figures = summary.index("## Findings"), summary.index("## Figures and tables")
    assert findings < summary.index("- The line rises by 1 over 1: slope 1.") < figures
    section = summary.index("### Figure 1 — a line")
    assert figures < section < summary.index("![fig1_line](fig1_line.png)") < summary.index("[`line.csv`](line.csv)")
    assert section < summary.index("![fig1_part_left](fig1_part_left.png)") < summary.index(
        "![fig1_part_right](fig1_part_right.png)")  # each file an f-string template wrote
    assert "make figures NB=01" in summary
    # a styled table has no text of its own: its repr ("<pandas...Styler at 0x...>") is not copied
    assert "Styler" not in summary and "(a styled table: see the rendered page" in summary


def test_summary_depends_on_the_numbers_not_on_when_the_run_ended(built):
    source = built["sources"] / "01_tiny.py"
    run = site.find_run(source, ["smoke"], built["runs"])
    first = site.write_summary(source, run, folder=built["figures"]).read_bytes()
    run.ended, run.seconds = "2031-01-01T00:00:00", 12345.0
    assert site.write_summary(source, run, folder=built["figures"]).read_bytes() == first


def test_summary_without_a_run_names_the_command_that_prints_the_findings(built, tmp_path):
    summary = site.write_summary(built["sources"] / "01_tiny.py", None, folder=tmp_path).read_text()
    assert "Not in this summary yet: `make figures NB=01`" in summary


@pytest.mark.parametrize("source", list_notebooks(), ids=lambda p: p.stem)
def test_each_committed_summary_shows_every_committed_figure(source):
    summary = PAPER_FIGURES / source.stem / site.SUMMARY_NAME
    assert summary.is_file(), f"no {summary}: write it with `python -m nic_lib.site summary {source.stem[:2]}`"
    text = summary.read_text()
    missing = [p.name for p in sorted(summary.parent.glob("*.png")) if f"]({p.name})" not in text]
    assert not missing, (f"{summary} does not show {', '.join(missing)}: rewrite it with "
                         f"`python -m nic_lib.site summary {source.stem[:2]}` (or `make figures NB={source.stem[:2]}`)")


@pytest.mark.slow
def test_site_page_shows_as_a_notebook_in_a_browser(built):
    page = built["out"] / "01_tiny.html"
    with browser.chromium() as driver:
        driver.get(page.as_uri())
        browser.wait_for_notebook_or_editor(driver)
        view = browser.page_view(driver)
        browser.screenshot(driver, "site_01_tiny")
    assert view["editors"] == 0
    assert view["cells"] > 1
    assert view["headings"][:1] == ["01 — A tiny notebook"]
    assert view["images"] >= 1 and view["images_loaded"] == view["images"]
