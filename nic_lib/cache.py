"""Results on disk: tidy tables computed once, reused while their inputs are unchanged.

Notebooks produce tables first and draw figures from them (STYLE.md, habit 4). A table is
stored as CSV beside a small JSON *key* describing everything it was computed from. Asking
again with the same key reads the CSV; any change to the key recomputes it. A cached table
cannot go stale silently, because the key always covers, besides what the caller puts in
it (dataset, settings...):

- ``code``: the version of the code that made the table (:func:`code_version`): the source
  of the ``compute`` function and of every ``nic_lib`` module it refers to, with the
  ``nic_lib`` modules those import, transitively; comments and docstrings left out;
- ``data``: a digest of the pixels of every input image (:func:`data_digests`; the caller
  names the images, ``data=None`` says there are none);
- ``models``: a digest of every model (:func:`model_digests`: a checkpoint file with its
  ``<stem>.*.json`` sidecars, or the identity the caller computed for an in-memory model,
  :func:`nic_lib.models.identity.model_ids`; ``models=None`` says there are none).

The key file written beside each table lists the modules and digests, so it says which
code, data and models the table was computed from. Installed libraries (Pillow's encoders,
torch) are not in the key: a codec's ``description`` is, where callers put it.
``make verify`` never reads a cache (it computes into a scratch folder).

This module imports nothing of the project but the leaf ``nic_lib.fileio``, and not torch:
:mod:`nic_lib.data` uses it, and importing :mod:`nic_lib.models` from here would close a
cycle through it. So a model object is refused, not digested here: the one identity of a
model is :func:`nic_lib.models.identity.model_digest`, which the caller passes in
(``models=identity.model_ids(...)``).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from nic_lib import fileio

#: Modules whose source is part of a code version: this project's.
PROJECT_PACKAGE = "nic_lib"
#: Hex digits kept of each digest in a key (64 bits: no collision among a project's inputs).
DIGEST_CHARS = 16
#: Items of a list or dict referred to by ``compute`` that are looked into for project objects.
MAX_ITEMS_SCANNED = 1000

_module_digests: dict[tuple[str, int, int], tuple[str, list[str]]] = {}


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV at ``path`` atomically (temp file in the same folder, then rename)."""
    return fileio.atomic_write_text(path, df.to_csv(index=False))


def cached_table(
    path: str | os.PathLike,
    key: dict,
    compute: Callable[[], pd.DataFrame],
    refresh: bool = False,
    *,
    data: Any,
    models: Any,
) -> pd.DataFrame:
    """Return the table stored at ``path`` if it was computed from the same inputs, else compute and store it.

    The stored key is ``{"inputs": key, "code": code_version(compute), "data":
    data_digests(data), "models": model_digests(models)}`` (see the module docstring):
    editing the code that computes the table, changing an image or retraining a model
    recomputes it.

    Args:
        path: CSV file; its key is stored beside it as ``<path>.key.json``.
        key: JSON-serialisable description of the other inputs (dataset, settings...).
            Compared exactly.
        compute: called with no arguments when the cache is missing or stale.
        refresh: recompute even if the cache is valid.
        data: the input images (``(name, pixels)`` pairs, a name -> pixels mapping, or
            arrays), or ``None`` when the table is computed from no images.
        models: the models (checkpoint paths, digest strings such as
            :func:`nic_lib.models.identity.model_ids` gives for in-memory models, or a
            mapping/list of them), or ``None`` when no model is involved.

    Returns:
        The table (read back from CSV when cached, so dtypes are those of a CSV round trip).

    Raises:
        TypeError: if ``key`` is not JSON-serialisable, or ``data``/``models`` hold
            something that cannot be digested (a model object among them).
    """
    path = Path(path)
    key_path = path.with_name(path.name + ".key.json")
    full_key = {"inputs": key, "code": code_version(compute), "data": data_digests(data), "models": model_digests(models)}
    key_text = json.dumps(full_key, sort_keys=True, indent=1, default=_no_default)
    if not refresh and path.exists() and key_path.exists() and key_path.read_text() == key_text:
        return pd.read_csv(path)
    df = compute()
    write_table(df, path)
    fileio.atomic_write_text(key_path, key_text)
    return pd.read_csv(path)


def code_version(fn: Callable) -> dict:
    """The version of the code behind ``fn``: its source and the project modules it depends on.

    The project modules are those ``fn`` refers to by name (a module, or a function, class
    or object defined in one, also inside lists and dicts, in its globals and closure; in
    nested functions and lambdas too), and the project modules they import, transitively
    (any ``import`` statement in the file, including those inside functions), with the
    packages above each (their ``__init__`` runs when a submodule is imported). Each module
    counts by its syntax tree without docstrings, so editing a comment or a docstring
    keeps cached results; editing code does not.

    Args:
        fn: the function that computes a result (a lambda or a local function is fine).

    Returns:
        ``{"sha256": first DIGEST_CHARS hex digits, "modules": sorted module names}``.
    """
    digest = hashlib.sha256(_function_source(fn).encode())
    modules = set()
    todo = sorted(_referenced_modules(fn))
    while todo:
        name = todo.pop()
        if name in modules:
            continue
        found = _module_digest(name)
        if found is None:  # not a module with a source file (a namespace, a builtin)
            continue
        modules.add(name)
        todo.extend(found[1])
        todo.extend(name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1))  # its packages run on import
    for name in sorted(modules):
        digest.update(f"\0{name}\0{_module_digest(name)[0]}".encode())
    return {"sha256": digest.hexdigest()[:DIGEST_CHARS], "modules": sorted(modules)}


def data_digests(data: Any) -> dict[str, str] | None:
    """A digest of each input image's pixels (dtype, shape and bytes).

    Args:
        data: ``(name, array)`` pairs, a ``{name: array}`` mapping, a list of arrays
            (named by position) or ``None``.

    Returns:
        ``{name: digest}``, or ``None`` for ``None``.

    Raises:
        TypeError: an item that is not an array.
    """
    if data is None:
        return None
    items = data.items() if isinstance(data, Mapping) else (
        item if isinstance(item, tuple) and len(item) == 2 else (str(i), item) for i, item in enumerate(data))
    out = {}
    for name, array in items:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"data item {name!r} is a {type(array).__name__}, not an image array; pass (name, pixels) pairs")
        out[str(name)] = _array_digest(array)
    return out


def model_digests(models: Any) -> Any:
    """A digest of each model, in the shape ``models`` was given.

    Args:
        models: ``None``; a checkpoint path (its bytes and those of its sidecars
            ``<stem>.*.json`` beside it, e.g. a scale calibration or an attention radius,
            which change what loading it gives: :func:`nic_lib.fileio.file_digest`); a
            string that is not a file (taken as a digest the caller computed, e.g.
            :func:`nic_lib.models.identity.model_id` or
            :func:`nic_lib.models.checkpoints.checkpoint_digest`); or a mapping or list of these.

    Returns:
        The digests, as a string, list or dict like ``models``; ``None`` for ``None``.

    Raises:
        TypeError: a model object (anything with a ``state_dict``: its identity is
            :func:`nic_lib.models.identity.model_digest`, which this module cannot import),
            or something that is none of the above.
    """
    if models is None:
        return None
    if isinstance(models, Mapping):
        return {str(k): model_digests(v) for k, v in models.items()}
    if isinstance(models, os.PathLike) or (isinstance(models, str) and Path(models).is_file()):
        return fileio.file_digest(models, DIGEST_CHARS)
    if isinstance(models, str):
        return models
    if hasattr(models, "state_dict"):
        raise TypeError(f"a {type(models).__name__} object cannot be digested here: a model's identity is "
                        "nic_lib.models.identity.model_digest (weights and coding settings); pass "
                        "models=nic_lib.models.identity.model_ids(<your models>), or their checkpoint paths")
    if isinstance(models, Sequence):
        return [model_digests(m) for m in models]
    raise TypeError(f"cannot digest a model given as {type(models).__name__}; pass a checkpoint path, a digest "
                    "string (nic_lib.models.identity.model_ids of in-memory models), or a list/dict of them")


# --------------------------------------------------------------------------- helpers


def _no_default(obj):
    raise TypeError(f"cache key value {obj!r} ({type(obj).__name__}) is not JSON-serialisable; use str/int/float/list/dict")


def _array_digest(array: np.ndarray) -> str:
    a = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    digest.update(a.tobytes())
    return digest.hexdigest()[:DIGEST_CHARS]


def _function_source(fn: Callable) -> str:
    """``fn``'s source text (when there is a file) and its compiled code, nested functions included.

    The compiled code tells apart two lambdas on one line, whose source text is that line.
    """
    fn = inspect.unwrap(getattr(fn, "func", fn))  # functools.partial -> its function
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        text = ""
    code = getattr(fn, "__code__", None)
    if code is None:
        return text or repr(type(fn))
    parts, stack = [text], [code]
    while stack:
        co = stack.pop()
        parts += [co.co_code.hex(), repr(co.co_names)]
        parts += [_stable_repr(c) for c in co.co_consts if not inspect.iscode(c)]
        stack.extend(c for c in co.co_consts if inspect.iscode(c))
    return "\0".join(parts)


def _stable_repr(const) -> str:
    """repr of a compiled constant, the same in every process (a frozenset's order follows the string hash seed)."""
    if isinstance(const, frozenset):
        return "frozenset(" + repr(sorted(_stable_repr(c) for c in const)) + ")"
    if isinstance(const, tuple):
        return "(" + ", ".join(_stable_repr(c) for c in const) + ")"
    return repr(const)


def _referenced_modules(fn: Callable) -> set[str]:
    """Project modules ``fn`` refers to by name, in its globals and closure (nested code included)."""
    fn = inspect.unwrap(getattr(fn, "func", fn))
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: its class's module
        return _project_modules(fn)
    names, stack = set(), [code]
    while stack:
        co = stack.pop()
        names.update(co.co_names)
        names.update(co.co_freevars)
        stack.extend(c for c in co.co_consts if inspect.iscode(c))
    namespace = dict(getattr(fn, "__globals__", {}))
    for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            namespace[name] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    found = set()
    for name in names:
        if name in namespace:
            found |= _project_modules(namespace[name])
    return found


def _project_modules(obj, depth: int = 0) -> set[str]:
    """The project module(s) behind an object: a module, what defines a function/class, an instance's class."""
    if inspect.ismodule(obj):
        name = obj.__name__
    elif isinstance(obj, (list, tuple, set, frozenset, dict)) and depth == 0:
        values = list(obj.values() if isinstance(obj, dict) else obj)[:MAX_ITEMS_SCANNED]
        return set().union(*(_project_modules(v, 1) for v in values)) if values else set()
    elif inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj):
        name = getattr(obj, "__module__", None) or ""
    else:
        name = type(obj).__module__
    return {name} if name == PROJECT_PACKAGE or name.startswith(PROJECT_PACKAGE + ".") else set()


def _module_digest(name: str) -> tuple[str, list[str]] | None:
    """(digest of the module's syntax tree without docstrings, project modules it imports), or None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    stat = path.stat()
    cache_key = (str(path), stat.st_mtime_ns, stat.st_size)
    if cache_key not in _module_digests:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = _project_imports(tree, name, is_package=path.name == "__init__.py")
        for node in ast.walk(tree):  # docstrings are documentation, not behaviour
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        _module_digests[cache_key] = (hashlib.sha256(ast.dump(tree).encode()).hexdigest(), imports)
    return _module_digests[cache_key]


def _project_imports(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Project modules imported anywhere in a module's tree (``from nic_lib import x`` -> ``nic_lib.x``)."""
    package = module if is_package else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
            except (ImportError, ValueError):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                try:
                    is_module = importlib.util.find_spec(candidate) is not None
                except (ImportError, ValueError):
                    is_module = False
                out.add(candidate if is_module else base)
    return sorted(n for n in out if n and (n == PROJECT_PACKAGE or n.startswith(PROJECT_PACKAGE + ".")))
