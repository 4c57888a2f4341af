"""The atomic writer: all or nothing, with ordinary permissions."""

import os

import pytest

from gradlab.atomic import write_atomic


def test_write_replaces_whole_file_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "table.txt"
    write_atomic(target, lambda temporary: temporary.write_text("old"))
    write_atomic(target, lambda temporary: temporary.write_text("new"))
    assert target.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["table.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("kept")

    def broken(temporary):
        temporary.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, broken)
    assert target.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
