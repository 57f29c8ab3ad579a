"""Properties of nic_lib.cache: a cached table is reused only while its code, data and models are unchanged."""

import importlib
import os
import sys
from functools import partial

import numpy as np
import pandas as pd
import pytest

from nic_lib import cache

# No images and no models: the tables of these tests are computed from the key alone.
cached_table = partial(cache.cached_table, data=None, models=None)


def test_cached_table_computes_once_for_the_same_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})

    first = cached_table(tmp_path / "t.csv", {"n": 2}, compute)
    second = cached_table(tmp_path / "t.csv", {"n": 2}, compute)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, second)


def test_cached_table_recomputes_when_key_changes_or_refresh(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"a": [len(calls)]})

    cached_table(tmp_path / "t.csv", {"n": 1}, compute)
    out = cached_table(tmp_path / "t.csv", {"n": 2}, compute)
    assert out["a"].tolist() == [2]
    out = cached_table(tmp_path / "t.csv", {"n": 2}, compute, refresh=True)
    assert out["a"].tolist() == [3]


def test_failed_compute_leaves_previous_table_intact(tmp_path):
    cached_table(tmp_path / "t.csv", {"n": 1}, lambda: pd.DataFrame({"a": [7]}))

    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cached_table(tmp_path / "t.csv", {"n": 2}, boom)
    assert pd.read_csv(tmp_path / "t.csv")["a"].tolist() == [7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.csv.key.json"]


def test_unserialisable_key_is_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        cached_table(tmp_path / "t.csv", {"x": object()}, lambda: pd.DataFrame())


def test_data_and_models_must_be_stated(tmp_path):
    with pytest.raises(TypeError, match="data"):
        cache.cached_table(tmp_path / "t.csv", {}, lambda: pd.DataFrame({"a": [1]}), models=None)


def test_a_changed_image_or_model_recomputes_under_the_same_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"a": [len(calls)]})

    image = np.zeros((4, 4, 3), np.uint8)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights v1")

    def ask(img):
        return cache.cached_table(tmp_path / "t.csv", {"images": ["x"]}, compute, data=[("x", img)], models={"m": ckpt})

    ask(image)
    ask(image.copy())
    assert len(calls) == 1  # same pixels, same weights: read back
    changed = image.copy()
    changed[0, 0, 0] = 1
    ask(changed)
    assert len(calls) == 2  # one pixel: recomputed, though the image keeps its name
    ckpt.write_bytes(b"weights v2")
    ask(changed)
    assert len(calls) == 3
    (tmp_path / "model.calibration.json").write_text("{}")  # a sidecar changes what loading gives
    ask(changed)
    assert len(calls) == 4


def test_model_digests_take_files_and_digests_and_refuse_model_objects():
    """A model object is identified by nic_lib.models.identity (tests/test_identity.py), which
    this module cannot import: it is refused with the fix, never digested another way."""
    torch = pytest.importorskip("torch")
    assert cache.model_digests({"q1": "0123abcd"}) == {"q1": "0123abcd"}  # a digest the caller computed
    with pytest.raises(TypeError, match="identity.model_ids"):
        cache.model_digests({"q1": torch.nn.Linear(3, 2)})
    with pytest.raises(TypeError, match="checkpoint path"):
        cache.model_digests(3.5)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A throw-away package standing in for nic_lib: ``pkg.top`` imports ``pkg.helper``."""
    root = tmp_path / "src"
    (root / "pkgcv").mkdir(parents=True)
    (root / "pkgcv" / "__init__.py").write_text("")
    (root / "pkgcv" / "helper.py").write_text('"""Helper."""\n\n\ndef scale():\n    return 2\n')
    (root / "pkgcv" / "top.py").write_text(
        '"""Top."""\nfrom pkgcv import helper\n\n\ndef table():\n    """Doc."""\n    return helper.scale()  # comment\n')
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(cache, "PROJECT_PACKAGE", "pkgcv")
    importlib.invalidate_caches()
    top = importlib.import_module("pkgcv.top")
    yield root / "pkgcv", top
    for name in [m for m in sys.modules if m == "pkgcv" or m.startswith("pkgcv.")]:
        del sys.modules[name]


def _rewrite(path, text):
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime even on a coarse clock


def test_code_version_follows_the_code_and_what_it_imports_not_docstrings_or_comments(project):
    folder, top = project
    compute = lambda: top.table()  # noqa: E731  (as notebooks pass it)
    first = cache.code_version(compute)
    assert first["modules"] == ["pkgcv", "pkgcv.helper", "pkgcv.top"]  # the module named, what it imports, their package
    _rewrite(folder / "top.py", (folder / "top.py").read_text().replace('"""Doc."""', '"""Other words."""')
             .replace("# comment", "# another comment"))
    assert cache.code_version(compute) == first
    _rewrite(folder / "helper.py", (folder / "helper.py").read_text().replace("return 2", "return 3"))
    assert cache.code_version(compute)["sha256"] != first["sha256"]  # an imported module's code changed


def test_code_version_covers_the_compute_function_itself(project):
    _, top = project
    assert cache.code_version(lambda: top.table() + 1) != cache.code_version(lambda: top.table())


def test_code_version_is_the_same_in_every_process():
    """A cache must hit after a kernel restart: no hash seed, address or time in the version."""
    import subprocess

    script = ("from nic_lib import cache, neural; "
              "print(cache.code_version(lambda: neural.rate_sweep([], {}) if {'a', 'b', 'c'} else None))")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}) for seed in ("1", "2")]
    versions = {proc.communicate()[0] for proc in procs}
    assert [proc.returncode for proc in procs] == [0, 0]
    assert len(versions) == 1 and "nic_lib.neural" in versions.pop()
