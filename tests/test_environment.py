"""The pip and conda environments list the same dependencies, and the documented commands exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent

#: Packages the user named for this project, by their distribution names.
USER_NAMED = {"jupyterlab", "jupytext", "papermill", "torch", "compressai", "numpy", "scipy", "seaborn",
              "imagecorruptions-imaug"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda_env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _name(req: str) -> str:
    return Requirement(req).name.lower().replace("_", "-")


def test_conda_environment_installs_the_package_with_dev_extras():
    deps = _conda_env()["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip_sections == [["-e .[dev]"]], "environment.yml must install the project with `-e .[dev]`"
    assert "pip" in deps


def test_conda_packages_are_a_subset_of_pyproject_dependencies():
    project = _pyproject()["project"]
    declared = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    conda_names = {re.split(r"[=<> ]", d)[0].lower() for d in _conda_env()["dependencies"] if isinstance(d, str)}
    extra = conda_names - {"python", "pip"} - declared
    assert not extra, f"environment.yml lists packages missing from pyproject.toml: {sorted(extra)}"


def test_conda_python_satisfies_requires_python():
    python = next(d for d in _conda_env()["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = python.split("=", 1)[1]
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(version + ".0")


def test_user_named_packages_are_dependencies():
    declared = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert USER_NAMED <= declared, f"missing: {sorted(USER_NAMED - declared)}"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call `make test`"
    assert "make test" in readme and "make figures" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: env$", makefile, re.M) and re.search(r"^figures: env$", makefile, re.M)
