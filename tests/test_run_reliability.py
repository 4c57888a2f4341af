"""Damaged and mismatched run folders give errors that name the file and the fix; nothing is mixed up."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from train_helpers import InterruptAfterEpoch

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.store.io import RunFolderError
from gradlab.sweep import plan_runs, run_sweep
from gradlab.training import train_run

BASE = RunConfig(
    model=ModelConfig("GRU", hidden_size=6, num_layers=1),
    data=DataConfig("distance", seq_len=12, n_train=32, n_validation=16, n_test=16),
    train=TrainConfig(epochs=2, batch_size=16, lr=1e-2, record_every=2, val_every=None, diagnostics_batch=4,
                      jacobian_batch=2, device="cpu"),
    run_id="GRU-s0",
)


def test_a_truncated_checkpoint_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train_run(BASE, run_dir=tmp_path / "run", callbacks=[InterruptAfterEpoch(0)], checkpoint_every=0)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(RunFolderError, match="checkpoint.pt is damaged") as error:
        train_run(BASE, run_dir=tmp_path / "run")
    assert "delete it" in str(error.value)


def test_a_broken_metrics_file_names_the_file_and_the_fix(tmp_path):
    train_run(BASE, run_dir=tmp_path / "run")
    (tmp_path / "run" / "metrics.json").write_text('{"status": "finis')
    with pytest.raises(RunFolderError, match="metrics.json is damaged") as error:
        train_run(BASE, run_dir=tmp_path / "run")
    assert "--overwrite" in str(error.value)


def test_a_finished_run_of_other_settings_is_never_taken_for_this_one(tmp_path):
    runs = plan_runs(BASE, modes=["GRU"], seeds=[0])
    run_sweep(runs, tmp_path / "sweep", figures=False, progress=False)
    # sweep.json agrees, but the run folder holds a run made at another learning rate (a mixed-up folder)
    changed = replace(runs[0], train=replace(runs[0].train, lr=0.3))
    train_run(changed, run_dir=tmp_path / "other")
    for name in ("config.json", "metrics.json"):
        (tmp_path / "sweep" / "GRU-s0" / name).write_bytes((tmp_path / "other" / name).read_bytes())
    with pytest.raises(RunFolderError, match=r"train.lr: 0.3 on disk, 0.01 requested"):
        run_sweep(runs, tmp_path / "sweep", resume=True, figures=False, progress=False)


def test_settings_that_do_not_change_results_do_not_block_a_resume(tmp_path):
    runs = plan_runs(BASE, modes=["GRU"], seeds=[0])
    run_sweep(runs, tmp_path / "sweep", figures=False, progress=False)
    moved = [replace(run, train=replace(run.train, device="auto"), data=replace(run.data, cache_dir="elsewhere"))
             for run in runs]
    result = run_sweep(moved, tmp_path / "sweep", resume=True, figures=False, progress=False, threads=1)
    assert list(result.summary["run_id"]) == ["GRU-s0"]


def test_amp_on_cpu_trains_in_bfloat16(tmp_path):
    config = replace(BASE, train=replace(BASE.train, amp=True, epochs=1, diagnostics=False))
    seen = []
    model_forward = torch.nn.Linear.forward

    def spy(self, x):
        out = model_forward(self, x)
        seen.append(out.dtype)
        return out

    torch.nn.Linear.forward = spy
    try:
        result = train_run(config)
    finally:
        torch.nn.Linear.forward = model_forward
    assert result.status == "finished"
    assert torch.bfloat16 in seen  # the head ran under CPU autocast


def test_skipped_audio_is_counted_in_metrics_and_named_in_sweep_json(tmp_path):
    import json

    import soundfile
    from data_helpers import fsdd_recordings, tone

    recordings = fsdd_recordings()
    copy = tmp_path / "fsdd"
    copy.mkdir()
    for path in recordings.glob("[123]_*_*.wav"):
        _, speaker, take = path.stem.split("_")
        if speaker in ("jackson", "theo") and take in ("0", "5", "10", "11"):
            (copy / path.name).symlink_to(path)
    poisoned = "1_jackson_10.wav"
    (copy / poisoned).unlink()
    soundfile.write(copy / poisoned, tone(300, 0.5, 16000, amplitude=1e24), 16000, subtype="FLOAT")
    config = replace(BASE, model=replace(BASE.model, mode="GRU"),
                     data=DataConfig("fsdd", data_dir=str(copy), cache_dir=str(tmp_path / "cache"), split="takes"),
                     train=replace(BASE.train, epochs=1, diagnostics=False, batch_size=8))
    runs = plan_runs(config, modes=["GRU"], seeds=[0])
    with pytest.warns(RuntimeWarning, match="1_jackson_10"):
        result = run_sweep(runs, tmp_path / "sweep", figures=False, progress=False)
    assert result.summary.loc[0, "skipped_files"] == 1
    record = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert record["skipped_files"] == {"fsdd": {"non_finite": [poisoned]}}


def test_concurrent_sweeps_on_one_folder_let_exactly_one_write(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "compare_cells.py"
    argv = [sys.executable, str(script), "--dataset", "distance", "--cells", "GRU", "--seeds", "0", "--epochs", "1",
            "--hidden-size", "4", "--num-layers", "1", "--seq-len", "10", "--n-train", "32", "--n-validation", "16",
            "--n-test", "16", "--batch-size", "16", "--no-figures", "--no-progress", "--device", "cpu",
            "--out", str(tmp_path / "runs"), "--name", "same"]
    processes = [subprocess.Popen(argv + ["--lr", lr], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for lr in ("0.003", "0.3", "0.03")]
    outcomes = []
    for process in processes:
        _, error = process.communicate(timeout=120)
        outcomes.append((process.returncode, error))
    assert sorted(code for code, _ in outcomes) == [0, 2, 2], outcomes
    for code, error in outcomes:
        if code:
            assert ("is in use by PID" in error or "already exists" in error) and "Traceback" not in error, error
    winner = next(lr for (code, _), lr in zip(outcomes, ("0.003", "0.3", "0.03")) if code == 0)
    run = tmp_path / "runs" / "same" / "GRU-s0"
    import json

    assert json.loads((run / "config.json").read_text())["train"]["lr"] == float(winner)
    assert json.loads((run / "metrics.json").read_text())["lr"] == float(winner)


def test_resume_removes_what_a_killed_sweep_left_half_written(tmp_path):
    runs = plan_runs(BASE, modes=["GRU"], seeds=[0])
    run_sweep(runs, tmp_path / "sweep", figures=False, progress=False)
    leftovers = [tmp_path / "sweep" / "GRU-s0" / ".gates.parquet.k3j9x0aq.tmp",
                 tmp_path / "sweep" / "GRU-s0" / ".checkpoint.pt.a81kz0pq.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    run_sweep(runs, tmp_path / "sweep", resume=True, figures=False, progress=False)
    assert not any(path.exists() for path in leftovers)
    assert (tmp_path / "sweep" / "GRU-s0" / "metrics.json").is_file()


STOPPED_SWEEP = """
import os, runpy, signal, sys
from gradlab.training import epoch_checkpoint

original = epoch_checkpoint.EpochCheckpoint.on_epoch_end
stops = []


def on_epoch_end(self, state):
    if state.epochs_done == 2 and not stops:  # once, before the second epoch's checkpoints: a suspended laptop
        stops.append(state.config.run_id)
        os.kill(os.getpid(), signal.SIGSTOP)
    original(self, state)


epoch_checkpoint.EpochCheckpoint.on_epoch_end = on_epoch_end
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

TAKE_OVER = """
import sys, time
from gradlab.store.locking import SweepLock, SweepLockedError

lock = SweepLock(sys.argv[1], stale_after=0.5, heartbeat_every=0.1)
while True:  # until the stopped holder's heartbeat is older than 0.5 s, as seen from this host
    try:
        lock.acquire()
        break
    except SweepLockedError:
        time.sleep(0.05)
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def _other_host_available() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None or shutil.which("hostname") is None:
        return False
    return subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0


def _files(folder):
    return {str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size)
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.skipif(not _other_host_available(), reason="needs unshare --uts (root) to play a second host")
def test_a_stopped_holder_whose_lock_was_taken_over_writes_nothing_more(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from process_helpers import wait_until

    repository = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repository), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "stopped.py").write_text(STOPPED_SWEEP)
    (tmp_path / "take_over.py").write_text(TAKE_OVER)
    sweep = tmp_path / "runs" / "taken"
    argv = [sys.executable, str(tmp_path / "stopped.py"), str(repository / "experiments" / "compare_cells.py"),
            "--dataset", "distance", "--cells", "GRU", "--seeds", "0,1", "--epochs", "4", "--hidden-size", "4",
            "--num-layers", "1", "--seq-len", "10", "--n-train", "32", "--n-validation", "16", "--n-test", "16",
            "--batch-size", "16", "--checkpoint-every", "0", "--no-figures", "--no-progress", "--device", "cpu",
            "--out", str(sweep.parent), "--name", sweep.name]
    holder = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    other = None
    try:
        def stopped() -> bool:
            assert holder.poll() is None, holder.communicate()
            return Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"

        wait_until(stopped, timeout=120)
        other = subprocess.Popen(
            ["unshare", "--uts", "sh", "-c", 'hostname gradlab-other-host && exec "$0" "$@"',
             sys.executable, str(tmp_path / "take_over.py"), str(sweep)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment)
        assert other.stdout.readline().strip() == "held"
        before = _files(sweep)
        assert before, "the stopped sweep had written its first epoch"
        holder.send_signal(signal.SIGCONT)
        _, error = holder.communicate(timeout=120)
        assert holder.returncode == 1, error
        assert "no longer holds the sweep lock" in error and "gradlab-other-host" in error, error
        assert "Traceback" not in error, error
        assert _files(sweep) == before  # not a checkpoint, table, metrics or summary more
    finally:
        if holder.poll() is None:
            holder.send_signal(signal.SIGCONT)
            holder.kill()
            holder.communicate()
        if other is not None:
            other.communicate(input="", timeout=30)
    assert other.returncode == 0


def test_a_worker_checks_the_lock_before_each_write(tmp_path):
    from gradlab.store.locking import SweepLock, SweepLockLost
    from gradlab.sweep.execute import RunTask, run_work

    with SweepLock(tmp_path / "sweep") as lock:
        task = RunTask("GRU-s0", BASE.to_dict(), str(tmp_path / "sweep" / "GRU-s0"), lock=(str(lock.path), "another"))
        with pytest.raises(SweepLockLost, match="no longer holds the sweep lock"):
            run_work(task)
    assert not (tmp_path / "sweep" / "GRU-s0").exists()  # not even config.json


def test_a_detached_job_writes_on_after_its_command_released_the_lock(tmp_path):
    import json

    from gradlab.store.locking import lock_path_for
    from gradlab.sweep.execute import RunTask, run_work

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    task = RunTask("GRU-s0", BASE.to_dict(), str(sweep / "GRU-s0"), lock=(str(lock_path_for(sweep)), "released"))
    (sweep / "executor.json").write_text(json.dumps({"executor": "submitit", "jobs": {"GRU-s0": "7"},
                                                     "detached": True}))  # what --on-interrupt detach records
    assert run_work(task)[0]["status"] == "finished"
    assert (sweep / "GRU-s0" / "metrics.json").is_file()
