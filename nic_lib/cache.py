"""Results on disk: tidy tables computed once, reused while their inputs are unchanged.

Notebooks produce tables first and draw figures from them (STYLE.md, habit 4). A table is
stored as CSV beside a small JSON *key* describing everything it was computed from
(dataset, images, codecs, settings, code version...). Asking again with the same key reads
the CSV; any change to the key recomputes it. This module imports nothing of the project but
the leaf ``nic_lib.fileio``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pandas as pd

from nic_lib import fileio


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV at ``path`` atomically (temp file in the same folder, then rename)."""
    return fileio.atomic_write_text(path, df.to_csv(index=False))


def cached_table(
    path: str | os.PathLike,
    key: dict,
    compute: Callable[[], pd.DataFrame],
    refresh: bool = False,
) -> pd.DataFrame:
    """Return the table stored at ``path`` if it was computed from ``key``, else compute and store it.

    Args:
        path: CSV file; its key is stored beside it as ``<path>.key.json``.
        key: JSON-serialisable description of the inputs. Compared exactly.
        compute: called with no arguments when the cache is missing or stale.
        refresh: recompute even if the cache is valid.

    Returns:
        The table (read back from CSV when cached, so dtypes are those of a CSV round trip).

    Raises:
        TypeError: if ``key`` is not JSON-serialisable.
    """
    path = Path(path)
    key_path = path.with_name(path.name + ".key.json")
    key_text = json.dumps(key, sort_keys=True, indent=1, default=_no_default)
    if not refresh and path.exists() and key_path.exists() and key_path.read_text() == key_text:
        return pd.read_csv(path)
    df = compute()
    write_table(df, path)
    fileio.atomic_write_text(key_path, key_text)
    return pd.read_csv(path)


def _no_default(obj):
    raise TypeError(f"cache key value {obj!r} ({type(obj).__name__}) is not JSON-serialisable; use str/int/float/list/dict")
