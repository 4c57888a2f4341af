"""Sweeps on real engines: submitit (its local executor, also where Slurm is installed: the pickling and job-folder
path of Slurm) and Ray. tests/test_slurm.py runs submitit against a real Slurm cluster.

Each runs the same tiny sweep as ``--executor local`` and must write the same
results bit for bit (wall times aside); a run that fails in its worker is
named with its log, and ``--resume`` redoes only it.
"""

from __future__ import annotations

import os
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
from train_helpers import load_script

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.store.io import RUN_TABLES, RunFolder
from gradlab.sweep import SweepFailed, plan_runs, run_sweep
from gradlab.sweep.execute import EnsembleTask, RunTask
from gradlab.sweep.executors import (
    RayExecutor,
    SubmititExecutor,
    live_jobs,
    submitit_executor,
)
from gradlab.sweep.executors.common import RECORD_FILE, require_engine

REPO = Path(__file__).resolve().parents[1]
BASE = RunConfig(
    model=ModelConfig("GRU", hidden_size=6, num_layers=1),
    data=DataConfig("distance", seq_len=12, n_train=32, n_validation=16, n_test=16),
    train=TrainConfig(epochs=1, batch_size=16, lr=1e-2, record_every=1, val_every=None, diagnostics_batch=4,
                      jacobian_batch=2),
)
RUNS = plan_runs(BASE, modes=("RNN_TANH", "GRU"), seeds=(0, 1))
WALL_TIMES = ["wall_time", "time_per_epoch", "train_time_per_epoch"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA for a missing device")


def _with_device(runs, run_id, device):
    return [replace(run, train=replace(run.train, device=device)) if run.run_id == run_id else run for run in runs]


def assert_same_results(expected: Path, actual: Path, run_ids) -> None:
    """Summary rows and every run table equal bit for bit, wall times aside."""
    def summary(path):
        frame = pd.read_parquet(path / "summary.parquet").drop(columns=WALL_TIMES)
        return frame[frame["run_id"].isin(run_ids)].sort_values("run_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(summary(expected), summary(actual), check_exact=True)
    for run_id in run_ids:
        for kind in RUN_TABLES:
            tables = [RunFolder(path / run_id).table(kind) for path in (expected, actual)]
            tables = [table.drop(columns=[c for c in WALL_TIMES if c in table.columns]) for table in tables]
            pd.testing.assert_frame_equal(*tables, check_exact=True, obj=f"{run_id} {kind}")


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("local") / "sweep"
    run_sweep(RUNS, sweep, ensemble="off", figures=False, progress=False)
    return sweep


@pytest.fixture(scope="module")
def local_ensembles(tmp_path_factory) -> Path:
    """RUNS trained here as two ensembles (one per cell)."""
    sweep = tmp_path_factory.mktemp("local") / "ensembles"
    run_sweep(RUNS, sweep, figures=False, progress=False, min_members=2)  # ensembles of 2, as on a GPU
    return sweep


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as patch:  # Ray's workers inherit it: they import this checkout's gradlab
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _job_logs(sweep: Path) -> dict[str, str]:
    """The run each submitit job's stdout log names, by log file name."""
    logs = {}
    for path in (sweep / "logs").glob("*_log.out"):
        for line in path.read_text().splitlines():
            if line.startswith("run ") and " on " in line:
                logs[path.name] = line.split()[1]
    return logs


@pytest.mark.slow
def test_submitit_sweep_equals_local(local_sweep, tmp_path):
    pytest.importorskip("submitit")
    sweep = tmp_path / "submitit"
    executor = SubmititExecutor(sweep, cluster="local", array_parallelism=2, progress=False)
    run_sweep(RUNS, sweep, executor=executor, ensemble="off", figures=False, progress=False)
    assert_same_results(local_sweep, sweep, [run.run_id for run in RUNS])
    assert sorted(_job_logs(sweep).values()) == sorted(run.run_id for run in RUNS)  # one job (and log) per run
    assert not (sweep / RECORD_FILE).exists()  # every job ended: nothing left to wait for


@pytest.mark.slow
def test_submitit_trains_one_job_per_ensemble(local_ensembles, tmp_path):
    pytest.importorskip("submitit")
    sweep = tmp_path / "submitit"
    run_sweep(RUNS, sweep, executor=SubmititExecutor(sweep, cluster="local", array_parallelism=2, progress=False),
              figures=False, progress=False)
    assert_same_results(local_ensembles, sweep, [run.run_id for run in RUNS])
    assert sorted(_job_logs(sweep).values()) == ["GRU-s0+1", "RNN_TANH-s0+1"]  # one job per ensemble of 2
    assert {RunFolder(sweep / run.run_id).metrics()["ensemble_size"] for run in RUNS} == {2}


@pytest.mark.slow
def test_ray_sweep_equals_local(local_ensembles, tmp_path, ray_cluster):
    sweep = tmp_path / "ray"
    run_sweep(RUNS, sweep, executor=RayExecutor(sweep, progress=False), figures=False, progress=False)
    assert_same_results(local_ensembles, sweep, [run.run_id for run in RUNS])
    assert sorted(path.stem for path in (sweep / "logs").glob("*.log")) == ["GRU-s0+1", "RNN_TANH-s0+1"]


@pytest.mark.slow
@no_cuda
def test_submitit_failed_run_is_named_with_its_log_and_resume_redoes_only_it(local_sweep, tmp_path):
    pytest.importorskip("submitit")
    sweep, runs = tmp_path / "submitit", [run for run in RUNS if run.model.mode == "GRU"]
    with pytest.raises(SweepFailed) as failure:
        run_sweep(_with_device(runs, "GRU-s1", "cuda"), sweep,
                  executor=SubmititExecutor(sweep, cluster="local", progress=False), figures=False, progress=False)
    message = str(failure.value)
    assert "1 of 2 runs failed" in message and "GRU-s1: TaskFailed" in message and "CUDA is not available" in message
    log = Path(message.split("(log: ")[1].split(")")[0])
    assert log.parent == sweep / "logs" and "CUDA is not available" in log.read_text()
    assert not RunFolder(sweep / "GRU-s1").has("checkpoint")  # the device was checked before training began
    assert RunFolder(sweep / "GRU-s0").ended
    kept = (sweep / "GRU-s0" / "metrics.json").read_bytes()
    before = set(_job_logs(sweep))

    run_sweep(runs, sweep, resume=True, executor=SubmititExecutor(sweep, cluster="local", progress=False),
              figures=False, progress=False)
    new = [run_id for name, run_id in _job_logs(sweep).items() if name not in before]
    assert new == ["GRU-s1"]  # only the failed run was submitted again
    assert (sweep / "GRU-s0" / "metrics.json").read_bytes() == kept
    assert_same_results(local_sweep, sweep, ["GRU-s0", "GRU-s1"])


@no_cuda
def test_ray_failed_run_is_named_with_its_log_and_resume_redoes_only_it(local_sweep, tmp_path, ray_cluster):
    sweep, runs = tmp_path / "ray", [run for run in RUNS if run.model.mode == "GRU"]
    with pytest.raises(SweepFailed, match=r"GRU-s1: TaskFailed: ValueError: run GRU-s1 on .*CUDA is not available"):
        run_sweep(_with_device(runs, "GRU-s1", "cuda"), sweep, executor=RayExecutor(sweep, progress=False),
                  figures=False, progress=False)
    assert "CUDA is not available" in (sweep / "logs" / "GRU-s1.log").read_text()
    kept = (sweep / "GRU-s0" / "metrics.json").read_bytes()
    (sweep / "logs" / "GRU-s0.log").unlink()
    run_sweep(runs, sweep, resume=True, executor=RayExecutor(sweep, progress=False), figures=False, progress=False)
    assert not (sweep / "logs" / "GRU-s0.log").exists()  # not run again
    assert (sweep / "GRU-s0" / "metrics.json").read_bytes() == kept
    assert_same_results(local_sweep, sweep, ["GRU-s0", "GRU-s1"])


@pytest.mark.slow
def test_submitit_job_killed_mid_run_is_named_with_its_log(tmp_path):
    pytest.importorskip("submitit")
    sweep = tmp_path / "submitit"
    long_run = replace(RUNS[0], train=replace(RUNS[0].train, epochs=10_000))
    executor = SubmititExecutor(sweep, cluster="local", progress=False)

    def kill() -> None:  # what the out-of-memory killer or a lost node does to a job: no warning, no result
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for log in (sweep / "logs").glob("*_log.out") if (sweep / "logs").exists() else []:
                started = [line for line in log.read_text().splitlines() if line.startswith(f"run {long_run.run_id}")]
                if started:
                    os.kill(int(started[0].split("(pid ")[1].split(")")[0]), signal.SIGKILL)
                    return
            time.sleep(0.1)

    thread = threading.Thread(target=kill)
    thread.start()
    with pytest.raises(SweepFailed, match=rf"{long_run.run_id}: TaskFailed: job \d+ ended without a result "
                                          r"\(its process was killed.*\(log: .*_log\.err\)"):
        run_sweep([long_run], sweep, executor=executor, figures=False, progress=False)
    thread.join()
    assert not RunFolder(sweep / long_run.run_id).ended


def _compare_cells(argv):
    return load_script("compare_cells").main(argv)


#: ``python -c NO_SLURM script args``: runs a script with submitit's Slurm engine out of reach, so that its
#: local executor runs the jobs even where Slurm is installed (tests/test_slurm.py sends jobs to Slurm).
NO_SLURM = ("import runpy, sys; from submitit.slurm import slurm; "
            "slurm.SlurmExecutor.affinity = classmethod(lambda cls: -1); "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["detach", "cancel"])
def test_interrupted_submitit_sweep_detaches_or_cancels_and_resume_waits(tmp_path, capsys, choice):
    pytest.importorskip("submitit")
    argv = ["--dataset", "distance", "--dry-run", "--cells", "GRU", "--out", str(tmp_path), "--no-progress",
            "--name", "s"]
    sweep = tmp_path / "s-dry-run"
    driver_log = tmp_path / "driver.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(driver_log, "w") as log:  # a file, not a pipe: detached jobs keep the driver's streams open
        driver = subprocess.Popen([sys.executable, "-c", NO_SLURM, str(REPO / "experiments" / "compare_cells.py"),
                                   *argv, "--executor", "submitit", "--on-interrupt", choice], stdout=log,
                                  stderr=log, env=env, cwd=tmp_path, preexec_fn=ctrl_c_reaches_it)
    deadline = time.monotonic() + 120
    while not (sweep / RECORD_FILE).exists():
        assert driver.poll() is None and time.monotonic() < deadline, driver_log.read_text()
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)  # what Ctrl-C sends the driver (here to it alone)
    assert driver.wait(timeout=60) != 0
    said = driver_log.read_text()
    if choice == "detach":
        assert "left 1 runs running on local: GRU-s0 (job" in said and RECORD_FILE in said
        assert list(live_jobs(sweep)) == ["GRU-s0"]
        with pytest.raises(SystemExit) as refused:
            _compare_cells([*argv, "--resume"])  # the same sweep, finished here: refused while the job runs
        assert refused.value.code == 2 and "GRU-s0 (process" in capsys.readouterr().err
    else:
        assert "cancelled 1 submitted runs: GRU-s0 (job" in said
    while live_jobs(sweep):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert RunFolder(sweep / "GRU-s0").ended == (choice == "detach")  # a detached run finished by itself
    assert _compare_cells([*argv, "--resume"]) == 0
    assert RunFolder(sweep / "GRU-s0").ended


@pytest.mark.parametrize("argv, complaint", [
    (["--executor", "ray", "--on-interrupt", "detach"], "Ray stops a driver's tasks"),
    (["--on-interrupt", "detach"], "needs --executor submitit"),
    (["--partition", "gpu"], "--partition applies to --executor submitit, not local"),
    (["--executor", "ray", "--time-limit", "5"], "--time-limit applies to --executor submitit, not ray"),
    (["--executor", "submitit", "--workers", "2"], "--workers is for --executor local"),
    (["--executor", "submitit", "--sbatch", "account"], "write KEY=VALUE"),
    (["--executor", "submitit", "--gpus-per-task", "-1"], "--gpus-per-task must be >= 0"),
])
def test_executor_flags_are_checked_before_anything_runs(tmp_path, capsys, argv, complaint):
    with pytest.raises(SystemExit) as exit_:
        _compare_cells(["--dataset", "distance", "--dry-run", "--out", str(tmp_path), *argv])
    assert exit_.value.code == 2 and complaint in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_missing_engine_names_the_extra_to_install():
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'gradlab\[slurm\]'"):
        require_engine("gradlab_engine_that_is_not_installed", "slurm")


def test_slurm_script_carries_every_option(tmp_path, monkeypatch):
    """The sbatch script submitit writes for these options (no Slurm here: only the script is checked, not sent)."""
    pytest.importorskip("submitit")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun before it writes scripts
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = SubmititExecutor(tmp_path / "sweep", cluster="slurm", partition="gpu", time_limit=120, cpus_per_task=4,
                                gpus_per_task=1, mem_gb=8, array_parallelism=32, sbatch={"account": "lab"})
    engine = executor._engine()
    script = engine._executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in ("--partition=gpu", "--time=120", "--cpus-per-task=4", "--gpus-per-node=1", "--mem=8GB",
                 "--account=lab", f"--output={tmp_path / 'sweep' / 'logs'}/", "--signal=USR2@0"):
        assert f"#SBATCH {line}" in script, line
    assert engine._executor.parameters["array_parallelism"] == 32


class _RecordingEngine:
    """Stands in for submitit's AutoExecutor: records the time limit each job array was submitted with."""

    cluster = "local"

    def __init__(self) -> None:
        self.parameters: dict = {}
        self.arrays: list[tuple[int, list[tuple[str, ...]]]] = []

    def update_parameters(self, **parameters) -> None:
        self.parameters.update(parameters)

    def map_array(self, function, tasks):
        self.arrays.append((self.parameters["timeout_min"], [task.run_ids for task in tasks]))
        return [_FinishedJob(f"{len(self.arrays)}_{index}", task) for index, task in enumerate(tasks)]


class _FinishedJob:
    def __init__(self, job_id: str, task) -> None:
        self.job_id, self.task, self.state = job_id, task, "COMPLETED"

    def done(self) -> bool:
        return True

    def exception(self):
        return None

    def result(self):
        return [{"run_id": run_id, "status": "finished"} for run_id in self.task.run_ids]


def test_submitit_time_limit_is_per_run_so_an_ensembles_job_gets_one_for_each_member(tmp_path, monkeypatch):
    """--time-limit says minutes each run may take: a job that holds an ensemble of 3 runs gets 3 times as long."""
    pytest.importorskip("submitit")
    tasks = [RunTask(f"GRU-s{seed}", {}, str(tmp_path / f"GRU-s{seed}")) for seed in range(4)]
    ensemble, single = EnsembleTask(tuple(tasks[:3])), tasks[3]
    executor = SubmititExecutor(tmp_path / "sweep", cluster="local", time_limit=7, progress=False)
    engine = _RecordingEngine()
    monkeypatch.setattr(executor, "_engine", lambda: engine)
    reported = []
    executor.run([ensemble, single], lambda task, metrics, error: reported.append((task.run_ids, error)))
    assert engine.arrays == [(21, [("GRU-s0", "GRU-s1", "GRU-s2")]), (7, [("GRU-s3",)])]
    assert reported == [(("GRU-s0", "GRU-s1", "GRU-s2"), None), (("GRU-s3",), None)]
    assert executor.job_time_limit(32) == 7 * 32


@pytest.mark.parametrize("text, minutes", [("infinite", None), ("UNLIMITED", None), ("30", 30), ("30:59", 30),
                                           ("1:00:00", 60), ("2-12", 3600), ("1-02:30", 1590), ("1-00:00:00", 1440)])
def test_slurm_time_limits_read_as_minutes(text, minutes):
    assert submitit_executor.slurm_minutes(text) == minutes


def test_ensembles_are_cut_so_that_each_job_fits_the_partitions_time_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(submitit_executor, "partition_time_limit", lambda partition: {"short": 100}.get(partition))
    assert SubmititExecutor(tmp_path, partition="short", time_limit=30).members_that_fit(32) == 3  # 3 x 30 <= 100
    assert SubmititExecutor(tmp_path, partition="short", time_limit=30).members_that_fit(2) == 2
    assert SubmititExecutor(tmp_path, partition="long", time_limit=30).members_that_fit(32) == 32  # no cap
    assert SubmititExecutor(tmp_path, cluster="local", partition="short", time_limit=30).members_that_fit(32) == 32
    with pytest.raises(ValueError, match=r"--time-limit 120 is more than Slurm partition short allows a job "
                                         r"\(100 min\); give at most --time-limit 100"):
        SubmititExecutor(tmp_path, partition="short", time_limit=120).members_that_fit(32)


def test_plan_shows_each_jobs_runs_and_time_limit(tmp_path, capsys):
    argv = ["--dataset", "distance", "--cells", "GRU", "--seeds", "0,1,2", "--ensemble-max", "2", "--plan",
            "--out", str(tmp_path), "--executor", "submitit", "--time-limit", "5"]
    assert _compare_cells(argv) == 0
    said = capsys.readouterr().out
    assert "2 jobs (time limit: --time-limit for each of their runs)" in said
    assert "job 1: 2 runs, time limit 10 min: GRU-s0, GRU-s1" in said
    assert "job 2: 1 run, time limit 5 min: GRU-s2" in said
    assert not list(tmp_path.iterdir())


@no_cuda
def test_plan_names_the_executor_and_leaves_the_device_to_the_workers(tmp_path, capsys):
    argv = ["--dataset", "distance", "--cells", "GRU", "--seeds", "0", "--device", "cuda", "--plan", "--out",
            str(tmp_path)]
    assert _compare_cells([*argv, "--executor", "submitit"]) == 0  # no GPU here, but the run's node may have one
    assert "executed as submitit jobs" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _compare_cells(argv)  # run here: checked here
    assert "CUDA is not available" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
