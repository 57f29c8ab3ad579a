"""Atomic writes: the target appears whole on success, is untouched on failure, and is readable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from nic_lib import fileio


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_target_appears_only_on_success_with_content_and_usual_mode(tmp_path):
    target = tmp_path / "table.csv"
    with fileio.atomic_path(target) as tmp:
        tmp.write_text("a,b\n1,2\n")
        assert not target.exists()  # nothing under the final name while writing
    assert target.read_text() == "a,b\n1,2\n"
    assert _mode(target) == 0o666 & ~_umask()  # what open() gives, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_file_mode_follows_the_umask_the_process_started_with(tmp_path):
    code = ("import os; os.umask(0o027); from nic_lib import fileio; "
            f"fileio.atomic_write_text({str(tmp_path / 'x.txt')!r}, 'x'); print(oct(fileio.FILE_MODE))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0o640"
    assert _mode(tmp_path / "x.txt") == 0o640


@pytest.mark.parametrize("writer", ["atomic_path", "atomic_open", "atomic_write_text"])
def test_exception_inside_the_block_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, writer):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises((RuntimeError, UnicodeEncodeError)):
        if writer == "atomic_path":
            with fileio.atomic_path(target) as tmp:
                tmp.write_text("half a fi")
                raise RuntimeError("interrupted")
        elif writer == "atomic_open":
            with fileio.atomic_open(target) as f:
                f.write("half a fi")
                raise RuntimeError("interrupted")
        else:
            fileio.atomic_write_text(target, "café", encoding="ascii")  # fails while writing
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_replaces_an_existing_file(tmp_path):
    target = tmp_path / "blob.bin"
    target.write_bytes(b"old")
    assert fileio.atomic_write_bytes(target, b"\x00new") == target
    assert target.read_bytes() == b"\x00new"


def test_missing_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "notes.txt"
    fileio.atomic_write_text(target, "é\n")
    assert target.read_bytes() == "é\n".encode("utf-8")


def test_temporary_name_is_hidden_beside_the_target_with_its_suffix(tmp_path):
    target = tmp_path / "fig.png"
    with fileio.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".fig.png.") and tmp.suffix == ".png"
    with fileio.atomic_path(target, suffix=".part") as tmp:
        assert tmp.name.startswith(".fig.png.") and tmp.name.endswith(".part")
    with fileio.atomic_path(tmp_path / "data", suffix="") as tmp:
        assert tmp.name.startswith(".data.") and "." not in tmp.name[len(".data."):]


def test_np_save_to_the_temporary_path_appends_no_second_npy(tmp_path):
    target = tmp_path / "pool.npy"
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with fileio.atomic_path(target) as tmp:
        np.save(tmp, array)
    assert np.array_equal(np.load(target), array)
    assert [p.name for p in tmp_path.iterdir()] == ["pool.npy"]


def test_atomic_open_streams_text_with_newline_control_and_binary(tmp_path):
    with fileio.atomic_open(tmp_path / "t.csv", "w", newline="") as f:
        f.write("a\r\nb\r\n")
    assert (tmp_path / "t.csv").read_bytes() == b"a\r\nb\r\n"
    with fileio.atomic_open(tmp_path / "b.bin", "wb") as f:
        f.write(b"\xff\x00")
    assert (tmp_path / "b.bin").read_bytes() == b"\xff\x00"


def test_atomic_open_refuses_append_and_read_modes(tmp_path):
    for mode in ("a", "r+", "ab"):
        with pytest.raises(ValueError, match="mode must be one of"):
            with fileio.atomic_open(tmp_path / "x", mode):
                pass
    assert not any(tmp_path.iterdir())
