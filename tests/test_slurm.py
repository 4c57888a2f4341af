"""The submitit executor against a real Slurm cluster: job arrays, scancel, time limits, detach, the README's command.

``.ci/slurm-up`` starts a one-node cluster (CI runs it before the tests). Where
no cluster answers, every test here is skipped with the reason. The cluster
has no accounting database, so ``sacct`` cannot answer submitit; the
``slurm`` fixture then puts ``.ci/slurm-bin`` (a ``sacct`` that reads the
controller's memory of recent jobs) first on ``PATH``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from process_helpers import ctrl_c_reaches_it
from test_executors import BASE, assert_same_results
from train_helpers import load_script

from gradlab.store.io import RunFolder
from gradlab.sweep import SweepFailed, plan_runs, run_sweep
from gradlab.sweep.executors import SubmititExecutor, live_jobs, submitit_executor
from gradlab.sweep.executors.common import RECORD_FILE

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SLURM_BIN = REPO / ".ci" / "slurm-bin"
#: A tiny sweep, as command-line flags (two steps per epoch).
TINY = ["--dataset", "distance", "--seq-len", "12", "--n-train", "32", "--n-validation", "16", "--n-test", "16",
        "--hidden-size", "6", "--batch-size", "16", "--record-every", "1", "--val-every", "none",
        "--diagnostics-batch", "4", "--jacobian-batch", "2", "--no-figures", "--no-progress"]


def slurm_unavailable() -> str | None:
    """Why the tests cannot use a Slurm cluster here, or None when partition ``debug`` takes jobs."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm is not installed here (no sbatch); .ci/slurm-up (as root) installs and starts a one-node cluster"
    try:
        answer = subprocess.run(["sinfo", "--noheader", "--partition", "debug", "--format", "%T"],
                                capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:  # no slurm.conf: sinfo looks for a controller through DNS first
        return "sinfo did not answer within 15 s; start a cluster with .ci/slurm-up (as root)"
    if answer.returncode != 0:
        return f"no Slurm controller answers (sinfo: {answer.stderr.strip()[-200:]}); start one with .ci/slurm-up"
    states = answer.stdout.split()
    if not any(state.startswith(("idle", "mixed", "allocated", "completing")) for state in states):
        return f"Slurm partition debug has no node that takes jobs (node states: {states or 'none'}); see .ci/slurm-up"
    return None


@pytest.fixture(scope="module")
def slurm():
    """The running cluster, with what its jobs and submitit need on the environment; skips where there is none."""
    reason = slurm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as patch:
        # Slurm jobs inherit the submitter's environment: they import this checkout's gradlab.
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        accounting = subprocess.run(["sacct", "--noheader", "--jobs", "1"], capture_output=True, timeout=30)
        if accounting.returncode != 0:  # no accounting database: submitit would warn on every poll and never see
            patch.setenv("PATH", f"{SLURM_BIN}{os.pathsep}{os.environ['PATH']}")  # a killed job end
        patch.setitem(submitit_executor.POLL_S, "slurm", 1.0)  # in-process sweeps: keep the tests short
        yield


def squeue(job: str, field: str) -> list[str]:
    """One ``squeue`` field (e.g. ``%T`` state, ``%l`` time limit, ``%P`` partition) of each element of ``job``."""
    answer = subprocess.run(["squeue", "--noheader", "--states=all", f"--jobs={job}", f"--format={field}"],
                            capture_output=True, text=True, timeout=30, check=True)
    return answer.stdout.split()


def minutes(limit: str) -> int:
    """Slurm's ``[days-]hours:minutes:seconds`` (or ``minutes:seconds``) as whole minutes."""
    days, _, clock = limit.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    seconds = sum(part * 60 ** power for power, part in enumerate(reversed(parts)))
    return (int(days or 0) * 86400 + seconds) // 60


def job_ids(sweep: Path) -> list[str]:
    """The Slurm job id of each job the sweep submitted, from its logs' names (``<job id>_0_log.out``)."""
    return sorted(path.name[:-len("_0_log.out")] for path in (sweep / "logs").glob("*_0_log.out"))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.1)


def worker_pid(sweep: Path, job: str) -> int:
    """The process that trains job ``job``'s runs (its log's first gradlab line names it)."""
    log = (sweep / "logs" / f"{job}_0_log.out").read_text()
    return int(log.split("(pid ")[1].split(")")[0])


def act_when_training(sweep: Path, run_id: str, action) -> threading.Thread:
    """Call ``action(job id)`` once ``run_id`` has its first epoch checkpoint (mid-run), in a thread."""
    def watch() -> None:
        wait_for(lambda: (sweep / run_id / "checkpoint.pt").exists() and (sweep / RECORD_FILE).exists(), 180,
                 f"{run_id}'s first checkpoint")
        action(json.loads((sweep / RECORD_FILE).read_text())["jobs"][run_id])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _compare_cells(argv) -> int:
    return load_script("compare_cells").main(argv)


def test_job_array_sweep_equals_the_local_sweep(slurm, tmp_path, capfd):
    # One run per task on both sides: --ensemble auto groups by executor (never below 4 members locally on a CPU,
    # 2 on a cluster), and this test compares where runs train, not how they are grouped (the scancel test below
    # trains an ensemble on Slurm).
    sweep_argv = [*TINY, "--cells", "RNN,GRU", "--activations", "tanh", "--seeds", "0,1", "--epochs", "2",
                  "--ensemble", "off", "--out", str(tmp_path)]
    assert _compare_cells([*sweep_argv, "--name", "local"]) == 0
    assert _compare_cells([*sweep_argv, "--name", "slurm", "--executor", "submitit", "--partition", "debug",
                           "--time-limit", "3"]) == 0
    assert "sacct" not in capfd.readouterr().err  # no warning that accounting is missing, poll after poll
    local, sweep = tmp_path / "local", tmp_path / "slurm"
    run_ids = sorted(path.name for path in local.iterdir() if (path / "metrics.json").exists())
    assert run_ids == ["GRU-s0", "GRU-s1", "RNN_TANH-s0", "RNN_TANH-s1"]
    assert_same_results(local, sweep, run_ids)
    jobs = job_ids(sweep)
    assert len(jobs) == 4 and len({job.split("_")[0] for job in jobs}) == 1  # four elements of one array
    array = jobs[0].split("_")[0]
    wait_for(lambda: squeue(array, "%T") == ["COMPLETED"] * 4, 60, "the array's jobs to exit")  # results come first
    assert squeue(array, "%P") == ["debug"] * 4
    assert [minutes(limit) for limit in squeue(array, "%l")] == [3] * 4  # 3 minutes for the one run of each
    assert not (sweep / RECORD_FILE).exists()


def test_scancel_mid_run_then_resume_equals_an_uninterrupted_run(slurm, tmp_path):
    # Long enough that the job is still training when Slurm kills it: the process trains on through KillWait (2 s)
    # after scancel's SIGTERM (submitit ignores it) and until the step is reaped, some seconds on a loaded node, at
    # 30-60 tiny epochs a second on a fast one.
    runs = plan_runs(replace(BASE, train=replace(BASE.train, epochs=300)), modes=("GRU",), seeds=(0, 1))
    reference = tmp_path / "local"
    # An ensemble of two, as Slurm trains them (locally on a CPU, auto would train two runs one by one).
    run_sweep(runs, reference, figures=False, progress=False, min_members=2)
    sweep = tmp_path / "slurm"
    executor = SubmititExecutor(sweep, partition="debug", progress=False)
    cancelled = []
    watcher = act_when_training(sweep, "GRU-s0", lambda job: (cancelled.append(job),
                                                               subprocess.run(["scancel", job], check=True)))
    with pytest.raises(SweepFailed, match=r"2 of 2 runs failed.*Slurm state CANCELLED.*\(log: .*_log\.err\)"):
        run_sweep(runs, sweep, executor=executor, figures=False, progress=False, checkpoint_every=0)
    watcher.join()
    assert squeue(cancelled[0], "%T") == ["CANCELLED"]
    assert not RunFolder(sweep / "GRU-s0").ended and RunFolder(sweep / "GRU-s0").has("checkpoint")
    run_sweep(runs, sweep, resume=True, executor=SubmititExecutor(sweep, partition="debug", progress=False),
              figures=False, progress=False)
    if {RunFolder(sweep / run.run_id).metrics()["ensemble_size"] for run in runs} == {2}:
        assert_same_results(reference, sweep, ["GRU-s0", "GRU-s1"])
    else:
        # The kill fell between the members' checkpoints, leaving them at different epochs: they resumed as two
        # ensembles of one, whose float32 arithmetic is not bit for bit that of an ensemble of two (gradient
        # norms and, through Adam, losses move by a few 1e-6 relative; gate statistics that count thresholds
        # can move by a step). Their learning curves still agree closely.
        for run in runs:
            tables = [RunFolder(path / run.run_id).table("history").drop(columns="wall_time")
                      for path in (reference, sweep)]
            pd.testing.assert_frame_equal(*tables, check_exact=False, rtol=1e-4, atol=0.0)


def test_job_killed_by_its_time_limit_then_resumed(slurm, tmp_path):
    """Slurm's shortest limit is a minute and it checks limits about every 30 s, so the test freezes the training
    process mid-run (as a run too long for its limit would still be training) and lowers the job's limit to zero
    (``scontrol update``): Slurm's own time-limit kill, within 30 s and whatever this machine's speed."""
    # Long enough that the job is still training when Slurm kills it: its SIGCONT thaws the process, which trains on
    # through KillWait (2 s) after the SIGTERM (submitit ignores it) until the step is reaped. 100 epochs were too
    # few: a fast machine finished them all in that window and the resume had nothing left to train.
    run = replace(BASE, run_id="GRU-s0", train=replace(BASE.train, epochs=400))
    sweep = tmp_path / "slurm"
    timed_out = []

    def freeze_and_time_out(job: str) -> None:
        os.kill(worker_pid(sweep, job), signal.SIGSTOP)  # Slurm's signals still reach it
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=0"], check=True)
        timed_out.append(job)

    watcher = act_when_training(sweep, run.run_id, freeze_and_time_out)
    with pytest.raises(SweepFailed, match=r"GRU-s0: TaskFailed: job \S+ reached its time limit \(5 min: "
                                          r"--time-limit 5 min\); --resume continues"):
        run_sweep([run], sweep, executor=SubmititExecutor(sweep, partition="debug", time_limit=5, progress=False),
                  figures=False, progress=False, checkpoint_every=0)
    watcher.join()
    wait_for(lambda: squeue(timed_out[0], "%T") != ["COMPLETING"], 60, "the job to exit")
    assert squeue(timed_out[0], "%T") == ["TIMEOUT"]
    folder = RunFolder(sweep / run.run_id)
    assert not folder.ended and folder.has("checkpoint")
    # An unfinished run's rows live in its checkpoint; the epochs it covers are what the resume must not redo.
    trained = torch.load(folder.path / "checkpoint.pt", weights_only=True)["epochs_done"]
    assert 0 < trained < 400
    run_sweep([run], sweep, resume=True, executor=SubmititExecutor(sweep, partition="debug", progress=False),
              figures=False, progress=False)
    assert folder.ended and folder.metrics()["status"] == "finished"
    assert folder.table("history")["epoch"].nunique() == 400  # the checkpointed epochs' rows carried over


def test_detach_then_resume(slurm, tmp_path, capsys):
    argv = [*TINY, "--cells", "GRU", "--seeds", "0", "--epochs", "40", "--out", str(tmp_path), "--name", "s",
            "--executor", "submitit", "--partition", "debug", "--checkpoint-every", "0"]
    sweep = tmp_path / "s"
    driver_log = tmp_path / "driver.log"
    with open(driver_log, "w") as log:  # a file, not a pipe: detached jobs keep the driver's streams open
        driver = subprocess.Popen([sys.executable, str(REPO / "experiments" / "compare_cells.py"), *argv,
                                   "--on-interrupt", "detach"], stdout=log, stderr=log, cwd=tmp_path,
                                  preexec_fn=ctrl_c_reaches_it)
    wait_for(lambda: (sweep / "GRU-s0" / "checkpoint.pt").exists() or driver.poll() is not None, 180,
             "the run to start training")
    assert driver.poll() is None, driver_log.read_text()
    worker = worker_pid(sweep, json.loads((sweep / RECORD_FILE).read_text())["jobs"]["GRU-s0"])
    os.kill(worker, signal.SIGSTOP)  # held mid-run while the test looks, however fast this machine trains
    try:
        driver.send_signal(signal.SIGINT)  # what Ctrl-C sends the driver
        assert driver.wait(timeout=60) != 0
        said = driver_log.read_text()
        assert "left 1 runs running on slurm: GRU-s0 (job" in said, said
        assert "sacct" not in said  # submitit found what it asks for: no warning on every poll
        assert list(live_jobs(sweep)) == ["GRU-s0"]
        with pytest.raises(SystemExit) as refused:
            _compare_cells([*argv, "--resume"])  # the detached job still writes there
        assert refused.value.code == 2 and "GRU-s0 (job" in capsys.readouterr().err
    finally:  # a failed check must not leave a stopped job holding the cluster's CPUs for the next tests
        os.kill(worker, signal.SIGCONT)
        if driver.poll() is None:
            driver.kill()
    wait_for(lambda: not live_jobs(sweep), 180, "the detached job to end")
    assert RunFolder(sweep / "GRU-s0").ended  # it finished by itself
    assert _compare_cells([*argv, "--resume"]) == 0
    assert "1 of 1 runs already ended" in capsys.readouterr().err


def readme_slurm_command() -> list[str]:
    """The arguments of the README's Slurm command (the code block after "From a Slurm login node")."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"From a Slurm\s+login node:\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no Slurm command after 'From a Slurm login node:'"
    words = shlex.split(block.group(1).replace("\\\n", " "))
    assert words[:2] == ["python", "experiments/compare_cells.py"], words[:2]
    return words[2:]


def tiny_version(argv: list[str], out: Path) -> list[str]:
    """``argv`` on a tiny sweep of this machine: its data flags replaced, its threads and device what is here."""
    data_flags = {"--dataset", "--data-dir", "--out", "--seeds"}
    kept, words = [], iter(argv)
    for word in words:
        if word in data_flags:
            next(words)
        elif word == "--threads":
            kept += [word, str(min(int(next(words)), os.cpu_count() or 1))]
        elif word == "--device" and not torch.cuda.is_available():
            next(words)
            kept += [word, "cpu"]  # the test cluster's GPU is a placeholder with no device behind it
        else:
            kept.append(word)
    return [*TINY, "--cells", "GRU", "--seeds", "0,1", "--epochs", "1", "--max-steps-per-epoch", "1",
            "--out", str(out), "--name", "readme", *kept]


def test_readme_slurm_command_runs_a_tiny_sweep(slurm, tmp_path, capfd):
    argv = readme_slurm_command()
    partition = argv[argv.index("--partition") + 1]
    assert subprocess.run(["sinfo", "--noheader", "--partition", partition], capture_output=True, text=True,
                          timeout=30).stdout.strip(), f"the README names partition {partition}: .ci/slurm-up makes it"
    assert _compare_cells(tiny_version(argv, tmp_path)) == 0
    assert "sacct" not in capfd.readouterr().err
    sweep = tmp_path / "readme"
    assert all(RunFolder(sweep / run_id).ended for run_id in ("GRU-s0", "GRU-s1"))
    (job,) = job_ids(sweep)  # one job: the two seeds train as one ensemble
    time_limit = int(argv[argv.index("--time-limit") + 1])
    assert squeue(job, "%P") == [partition] and [minutes(limit) for limit in squeue(job, "%l")] == [2 * time_limit]


def test_ensembles_are_cut_to_fit_a_partition_that_caps_job_time(slurm, tmp_path, capsys):
    """Partition ``short`` allows 10 minutes a job: with 5 minutes a run, ensembles hold at most 2 runs."""
    argv = [*TINY, "--cells", "GRU", "--seeds", "0,1,2", "--epochs", "1", "--max-steps-per-epoch", "1",
            "--out", str(tmp_path), "--name", "short", "--executor", "submitit", "--partition", "short"]
    assert _compare_cells([*argv, "--time-limit", "5", "--plan"]) == 0
    said = capsys.readouterr().out
    assert "job 1: 2 runs, time limit 10 min: GRU-s0, GRU-s1" in said and "job 2: 1 run, time limit 5 min" in said
    with pytest.raises(SystemExit) as refused:
        _compare_cells([*argv, "--time-limit", "11"])
    assert refused.value.code == 2 and "give at most --time-limit 10" in capsys.readouterr().err
    assert not (tmp_path / "short").exists()  # refused before anything was written
    assert _compare_cells([*argv, "--time-limit", "5"]) == 0
    jobs = job_ids(tmp_path / "short")
    assert sorted(minutes(squeue(job, "%l")[0]) for job in jobs) == [5, 10]
    assert {squeue(job, "%P")[0] for job in jobs} == {"short"}
