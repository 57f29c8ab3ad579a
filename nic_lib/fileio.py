"""Atomic file writes: a file appears whole under its name, or not at all.

Every output of the project (figures, tables, checkpoints, notebooks, downloads) is written
to a hidden temporary file ``.<name>.<random><suffix>`` in the target's folder and then
renamed onto the target with ``os.replace``, which is atomic within one file system. A
reader or an interrupted run sees the old file or the new one, never half a file; on an
error the temporary file is removed and the target is left as it was. The finished file gets
the permissions ``open()`` would give (``0o666 & ~umask``, usually ``rw-r--r--``), not
``tempfile.mkstemp``'s ``0600``.

Nothing is fsync'd: this guards against interrupted or failing runs, not against power loss.

This module is a leaf: it imports nothing of the project, so the modules that must import
nothing of the project (``data``, ``metrics``, ``plotting``, ``cache``) may still use it.

Typical use::

    atomic_write_text(path, df.to_csv(index=False))
    with atomic_path("fig.png") as tmp:      # for libraries that write to a path
        fig.savefig(tmp)                     # tmp ends in .png, like the target
    with atomic_open("log.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["FILE_MODE", "atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text",
           "file_digest"]

#: Text encoding of written text files: the same on every machine, whatever its locale.
DEFAULT_ENCODING = "utf-8"
#: The modes :func:`atomic_open` accepts: a new file is always written whole, so no append
#: or read-write modes.
OPEN_MODES = ("w", "wb")


def _read_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    ``os.umask`` can only be read by setting it, which races with threads creating files
    at the same moment; Linux reports it in ``/proc/self/status`` instead. Either way it is
    read once, when this module is imported.
    """
    with contextlib.suppress(OSError):
        with open("/proc/self/status", encoding="ascii") as status:
            match = re.search(r"^Umask:\s*([0-7]+)$", status.read(), re.MULTILINE)
        if match:
            return int(match.group(1), 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Mode of written files: what ``open()`` gives under the umask this process started with.
FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path to write ``path`` through, for libraries that write to a path.

    Use it for ``fig.savefig``, ``torch.save``, ``np.save``, memory maps and the like: write
    the whole file to the yielded path inside the ``with`` block. The temporary file already
    exists (empty) so that no other process can take its name; writers that open it with
    ``"w"``/``"wb"`` simply truncate it.

    Args:
        path: the file to write. Its folder is created if missing.
        suffix: ending of the temporary name. ``None`` (default) uses the target's own
            suffix (``.png`` for ``fig.png``), so writers that choose the format from the
            extension choose the right one and ``np.save`` appends no second ``.npy``.
            ``""`` for none, or e.g. ``".part"`` to mark partial downloads.

    Yields:
        The temporary path, ``<folder>/.<name>.<random><suffix>``.

    Raises:
        OSError: the folder cannot be created or written (on entering), or the rename fails
            (on leaving). Any exception raised inside the block is re-raised after the
            temporary file is removed; ``path`` is then untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix if suffix is None else suffix
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; outputs are ordinary readable files
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike,
    mode: str = "w",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    suffix: str | None = None,
) -> Iterator[IO]:
    """Open ``path`` for writing through a temporary file, renamed into place on success.

    For writers that stream into an open file (``csv.writer``, ``shutil.copyfileobj``,
    ``torch.save`` to a file object). The file is closed before the rename.

    Args:
        path: the file to write. Its folder is created if missing.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding: text encoding; default :data:`DEFAULT_ENCODING` in text mode. Must be
            ``None`` in binary mode.
        newline: as for :func:`open` (``""`` for the ``csv`` module); text mode only.
        suffix: ending of the temporary name, see :func:`atomic_path`.

    Yields:
        The open file object.

    Raises:
        ValueError: ``mode`` is not one of :data:`OPEN_MODES`.
        OSError: as :func:`atomic_path`. Exceptions inside the block are re-raised after
            the temporary file is removed; ``path`` is then untouched.
    """
    if mode not in OPEN_MODES:
        raise ValueError(f"atomic_open writes a new file: mode must be one of {OPEN_MODES}, got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = DEFAULT_ENCODING
    with atomic_path(path, suffix=suffix) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring).

    Args:
        path: the file to write. Its folder is created if missing.
        data: the whole content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the folder cannot be created or written; ``path`` is then untouched.
    """
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = DEFAULT_ENCODING) -> Path:
    """Write ``text`` to ``path`` atomically (see the module docstring).

    Args:
        path: the file to write. Its folder is created if missing.
        text: the whole content.
        encoding: text encoding.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the folder cannot be created or written; ``path`` is then untouched.
        UnicodeEncodeError: ``text`` cannot be encoded; ``path`` is then untouched.
    """
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def file_digest(path: str | os.PathLike, chars: int = 16) -> str:
    """What identifies a file of weights: SHA-256 of its bytes and of its JSON sidecars.

    The sidecars are ``<stem>.*.json`` beside it (a scale calibration, an attention-radius
    record, a run config), each hashed with its name, in name order: they change what
    loading the file gives. The one file identity of the project: the result caches' key
    of a checkpoint (:func:`nic_lib.cache.model_digests`) and
    :func:`nic_lib.models.checkpoints.checkpoint_digest`. A model in memory is identified by
    :func:`nic_lib.models.identity.model_digest` instead.

    Args:
        path: the file. chars: hex digits returned.

    Returns:
        The first ``chars`` hex digits.
    """
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes())
    for sidecar in sorted(path.parent.glob(f"{path.stem}.*.json")):
        digest.update(sidecar.name.encode() + b"\0" + sidecar.read_bytes())
    return digest.hexdigest()[:chars]
