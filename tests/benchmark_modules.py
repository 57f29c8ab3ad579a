"""Import a script of ``benchmarks/`` (not a package) as a module, for the tests of its
pure functions: ``from benchmark_modules import load_benchmark``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The module of ``benchmarks/<name>.py``. Its folder does not join ``sys.path``: a
    benchmark imports only ``nic_lib``, never another benchmark."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
