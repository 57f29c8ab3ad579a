import pandas as pd
import pytest

from nic_lib.cache import cached_table


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
