"""What a committed table was computed with: the environment (threads, CPU, packages),
the code (commit, tree digests), the record beside a folder of tables, and what changed
between two records. Part of :mod:`nic_lib.reproduce`; import from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path


#: Repository root (this file lives in <root>/nic_lib/).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The record beside each folder of committed tables.
PROVENANCE_FILE = "provenance.json"
#: Environment variables that set thread counts, and so may move float results.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY",
                    "CUBLAS_WORKSPACE_CONFIG")
#: The distribution whose dependencies are listed in the provenance.
DISTRIBUTION = "nic-repro"
#: Packages recorded when the project is not installed as a distribution.
FALLBACK_PACKAGES = ("torch", "compressai", "numpy", "scipy", "pandas", "pillow", "scikit-image",
                     "pytorch-msssim", "imagecorruptions-imaug", "opencv-python", "matplotlib", "seaborn")


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
        "cpu": cpu_model(),
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
        "nic_lib_sha256": tree_digest(REPO_ROOT / "nic_lib"),
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


def tree_digest(folder: Path, pattern: str = "*.py") -> str | None:
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


def cpu_model() -> str:
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
