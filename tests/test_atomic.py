"""The atomic writer: all or nothing, with ordinary permissions."""

import os

import pytest

from gradlab.store.atomic import write_atomic


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


def _leftover(folder, name):
    """A temporary named the way write_atomic names them, via the same mkstemp call."""
    import tempfile

    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(descriptor)
    return temporary


def test_cleaning_removes_only_the_writers_temporaries(tmp_path):
    from pathlib import Path

    from gradlab.store.atomic import clean_orphaned_temporaries

    run = tmp_path / "sweep" / "run-a"
    run.mkdir(parents=True)
    leftovers = {Path(_leftover(run, "checkpoint.pt")), Path(_leftover(run, "gates.parquet")),
                 Path(_leftover(tmp_path / "sweep", "summary.parquet"))}
    kept = ["notes.tmp", ".hidden.tmp", ".metrics.json.abcdefg.tmp", ".metrics.json.ABCDEFGH.tmp",
            "x.abcdefgh.tmp", ".metrics.json.abcdefgh.tmp.bak", "metrics.json"]
    for name in kept:
        (run / name).write_text("mine")
    (run / ".link.abcdefgh.tmp").symlink_to(run / "metrics.json")
    assert clean_orphaned_temporaries(tmp_path / "sweep") == sorted(leftovers)
    assert sorted(p.name for p in run.iterdir()) == sorted([*kept, ".link.abcdefgh.tmp"])
    assert clean_orphaned_temporaries(tmp_path / "sweep") == []


def test_cleaning_can_spare_recent_temporaries(tmp_path):
    from gradlab.store.atomic import clean_orphaned_temporaries

    old, new = _leftover(tmp_path, "a.npz"), _leftover(tmp_path, "b.npz")
    os.utime(old, (1, 1))
    assert [str(p) for p in clean_orphaned_temporaries(tmp_path, older_than=60)] == [old]
    assert os.path.exists(new)
    with pytest.raises(NotADirectoryError, match="not an existing folder"):
        clean_orphaned_temporaries(tmp_path / "missing")


def test_writer_killed_mid_write_leaves_a_temporary_that_cleaning_removes(tmp_path):
    from process_helpers import kill_group, read_lines, start

    from gradlab.store.atomic import clean_orphaned_temporaries

    target = tmp_path / "run" / "checkpoint.pt"
    writer = start("write", str(target))
    try:
        assert read_lines(writer, 1) == ["writing"]
    finally:
        kill_group(writer)
    left = list(target.parent.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".checkpoint.pt.") and left[0].read_text() == "half of it"
    assert clean_orphaned_temporaries(tmp_path) == left
    assert list(target.parent.iterdir()) == []
