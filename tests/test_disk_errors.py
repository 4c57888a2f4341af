"""A full or read-only disk: the error names the file, and the command line prints it without the usage text."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from train_helpers import load_script

from gradlab.store.atomic import write_atomic, write_descriptor
from gradlab.store.io import write_table

compare_cells = load_script("compare_cells")
TINY = ["--dataset", "distance", "--seq-len", "12", "--n-train", "32", "--n-validation", "16", "--n-test", "16",
        "--epochs", "1", "--batch-size", "16", "--hidden-size", "4", "--num-layers", "1", "--cells", "GRU",
        "--seeds", "0", "--no-progress", "--no-figures", "--device", "cpu"]


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as pyarrow, torch.save and write() report it: no path


def test_a_full_disk_names_the_file_being_written_once(tmp_path):
    path = tmp_path / "notes.txt"
    with pytest.raises(OSError) as caught:
        write_atomic(path, _disk_full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    # OSError's str() appends the filename itself: the message must not name it a second time
    assert str(caught.value) == f"[Errno {errno.ENOSPC}] No space left on device while writing: '{path}'"
    assert str(caught.value).count(str(path)) == 1
    assert os.listdir(tmp_path) == []  # no temporary left behind


def test_a_full_disk_under_a_table_names_the_table_once(tmp_path, monkeypatch):
    monkeypatch.setattr(pd.DataFrame, "to_parquet", _disk_full)
    path = tmp_path / "run" / "history.parquet"
    with pytest.raises(OSError) as caught:
        write_table(pd.DataFrame({"a": [1]}), path)
    assert caught.value.filename == str(path) and str(caught.value).count(str(path)) == 1
    assert "No space left on device while writing" in str(caught.value)


def test_a_short_write_through_a_descriptor_names_the_file_once(tmp_path, monkeypatch):
    path = tmp_path / ".sweep.lock"
    monkeypatch.setattr(os, "write", _disk_full)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as caught:
            write_descriptor(descriptor, b"record", path)
    finally:
        os.close(descriptor)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert str(caught.value) == f"[Errno {errno.ENOSPC}] No space left on device while writing: '{path}'"


def test_a_full_disk_in_a_sweep_names_the_file_once_on_the_command_line(tmp_path, monkeypatch, capsys):
    import gradlab.sweep.folder

    monkeypatch.setattr(gradlab.sweep.folder, "write_json",
                        lambda path, payload: write_atomic(path, _disk_full))
    with pytest.raises(SystemExit):
        compare_cells.main([*TINY, "--out", str(tmp_path / "runs")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    sweep_json = tmp_path / "runs" / "compare_cells-distance" / "sweep.json"
    assert line.endswith(f": error: [Errno {errno.ENOSPC}] No space left on device while writing: '{sweep_json}'")
    assert line.count(str(sweep_json)) == 1


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_disk_error_at_start_is_one_line_without_the_usage(tmp_path, monkeypatch, capsys, code):
    import gradlab.sweep.folder

    def refuse(path, payload):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(gradlab.sweep.folder, "write_json", refuse)
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main([*TINY, "--out", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage:" not in error and "Traceback" not in error
    (line,) = error.strip().splitlines()
    assert line.endswith(f": error: [Errno {code}] {os.strerror(code)}: "
                         f"'{tmp_path / 'runs' / 'compare_cells-distance' / 'sweep.json'}'")


@pytest.mark.skipif(not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and os.geteuid() != 0,
                    reason="needs /sys, which refuses new files even to root")
def test_an_unwritable_output_folder_is_one_line_without_the_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main([*TINY, "--out", "/sys/gradlab-test-output"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage:" not in error and "/sys/gradlab-test-output" in error and len(error.strip().splitlines()) == 1



# A real write failure, not a stand-in: a file-size limit (RLIMIT_FSIZE) makes the kernel refuse writes past it
# (EFBIG), the way a full disk refuses them (ENOSPC); torch and os.write report both the same way.
_LIMITED = """
import resource, signal, sys
from pathlib import Path
from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.store.locking import SweepLock
from gradlab.store.atomic import write_atomic, write_descriptor
from gradlab.training import train_run
from gradlab.training.checkpoint_rows import save_torch
folder = Path(sys.argv[1])
run = RunConfig(model=ModelConfig("GRU", hidden_size=4, num_layers=1),
                data=DataConfig("distance", seq_len=12, n_train=32, n_validation=16, n_test=16),
                train=TrainConfig(epochs=1, batch_size=16, device="cpu", diagnostics=False), run_id="GRU-s0")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write(), not a killed process
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
# config.json (about 2 KB) fits in 8 KB, the first checkpoint.pt does not; the lock's record is 1 KB
for name, limit, write in [("run", 8000, lambda: train_run(run, run_dir=folder / "run")),
                           ("lock", 500, lambda: SweepLock(folder / "sweep").acquire())]:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        write()
        print(name, "wrote")
    except Exception as error:
        print(name, type(error).__name__, getattr(error, "errno", None), getattr(error, "filename", None), error)
# torch's zip writer may swallow a failed write and fail on the next one, by a limit that cuts off a later write
import torch
seen = set()
for limit in range(500, 40000, 700):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        write_atomic(folder / "x.pt", lambda temporary: save_torch({"w": torch.zeros(8000)}, temporary))
    except Exception as error:
        seen.add(f"{type(error).__name__}:{getattr(error, 'filename', None)}")
print("limits", *sorted(seen))
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs RLIMIT_FSIZE as Linux applies it")
def test_real_write_failures_of_checkpoints_and_locks_name_the_file(tmp_path):
    result = subprocess.run([sys.executable, "-c", _LIMITED, str(tmp_path)], capture_output=True, text=True,
                            check=True, timeout=300)
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    # torch.save given a path reported this as "RuntimeError: [enforce fail ...] unexpected pos", naming nothing
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert lines["run"].startswith(f"OSError {errno.EFBIG} {checkpoint} "), lines["run"]
    assert lines["run"].endswith(f"File too large while writing: '{checkpoint}'")  # the path once more, not twice
    assert lines["run"].count(str(checkpoint)) == 2  # the filename attribute, then the message's one mention
    assert not [path for path in (tmp_path / "run").rglob("*") if path.name.endswith(".tmp") or path == checkpoint]
    # os.write wrote 500 of the 1024 bytes and said nothing: the lock was taken with a cut-off record
    lock = tmp_path / ".sweep.lock"
    assert lines["lock"].startswith(f"OSError {errno.EFBIG} {lock} "), lines["lock"]
    assert not lock.exists()
    assert lines["limits"] == f"OSError:{tmp_path / 'x.pt'}"  # was RuntimeError for most limits
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run", "x.pt"]  # x.pt: the limits that fit


class _OneRunFails:
    """An executor whose first task raises and whose others end without writing anything."""

    def run(self, tasks, report):
        for index, task in enumerate(tasks):
            if index == 0:
                report(task, None, RuntimeError("the run broke"))
            else:
                report(task, [{"status": "finished"} for _ in task.run_ids], None)


class _Stops:
    def run(self, tasks, report):
        raise KeyboardInterrupt


def _sweep_runs():
    from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from gradlab.sweep import plan_runs

    base = RunConfig(model=ModelConfig("GRU", hidden_size=4, num_layers=1),
                     data=DataConfig("distance", seq_len=12, n_train=32, n_validation=16, n_test=16),
                     train=TrainConfig(epochs=1, batch_size=16, device="cpu"))
    return plan_runs(base, modes=("GRU",), seeds=(0, 1))


@pytest.fixture
def summary_disk_full(monkeypatch):
    """The final summary.parquet meets a full disk; returns the calls' sweep folders."""
    import gradlab.sweep.runner

    calls = []

    def full(sweep_dir, warn=None):
        calls.append(sweep_dir)
        write_atomic(Path(sweep_dir) / "summary.parquet", _disk_full)

    monkeypatch.setattr(gradlab.sweep.runner, "write_summary", full)
    return calls


def test_runs_that_failed_are_the_error_when_the_summary_meets_a_full_disk_too(tmp_path, summary_disk_full):
    from gradlab.sweep import SweepFailed, run_sweep

    printed = io.StringIO()
    with pytest.raises(SweepFailed, match=r"^1 of 2 runs failed \(GRU-s0: RuntimeError: the run broke\)"):
        run_sweep(_sweep_runs(), tmp_path / "sweep", executor=_OneRunFails(), ensemble="off", figures=False,
                  progress=False, stream=printed)
    summary = tmp_path / "sweep" / "summary.parquet"
    assert summary_disk_full == [tmp_path / "sweep"]  # the last write, after the runs ended
    (line,) = [line for line in printed.getvalue().splitlines() if "summary" in line]
    assert line.startswith(f"the sweep's summary was not written (OSError: [Errno {errno.ENOSPC}] No space left on "
                           f"device while writing: '{summary}'); ")
    assert line.count(str(summary)) == 1 and "--resume" in line


def test_a_full_disk_at_the_summary_of_a_sweep_whose_runs_ended_is_the_error(tmp_path, summary_disk_full):
    from gradlab.sweep import run_sweep

    class AllEnd(_OneRunFails):
        def run(self, tasks, report):
            for task in tasks:
                report(task, [{"status": "finished"} for _ in task.run_ids], None)

    with pytest.raises(OSError, match="No space left on device while writing") as caught:
        run_sweep(_sweep_runs(), tmp_path / "sweep", executor=AllEnd(), ensemble="off", figures=False, progress=False,
                  stream=io.StringIO())
    assert caught.value.filename == str(tmp_path / "sweep" / "summary.parquet")


def test_a_stopped_sweep_stops_even_when_its_summary_meets_a_full_disk(tmp_path, summary_disk_full):
    from gradlab.sweep import run_sweep

    printed = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_sweep_runs(), tmp_path / "sweep", executor=_Stops(), ensemble="off", figures=False, progress=False,
                  stream=printed)
    assert "the sweep's summary was not written (OSError" in printed.getvalue()
