"""Sweeps with ``--ensemble auto`` write the same run folders as ``--ensemble off``.

Each test trains the same runs both ways and compares every run's metrics and
tables (history, gradients, gates, Jacobian, predictions): float64 within
1e-9 relative (batched and single matmuls round differently), float32 losses
within 1e-4. Wall times, which no two runs share, are left out.
"""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from data_helpers import fsdd_recordings
from train_helpers import assert_runs_match, load_script, relative_difference

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.store.io import RunFolder
from gradlab.sweep import SweepFailed, plan_runs, run_sweep
from gradlab.sweep.execute import EnsembleTask, RunTask
from gradlab.training import callbacks, train_run
from gradlab.training.ensemble.grouping import ENSEMBLE_MODES, ensemble_blocker, group_runs
from gradlab.training.ensemble_run import EnsembleFit, train_ensemble

BASE = RunConfig(
    model=ModelConfig("LSTM", hidden_size=8, num_layers=2),
    data=DataConfig("distance", seq_len=12, n_train=48, n_validation=16, n_test=16),
    train=TrainConfig(epochs=2, batch_size=16, dtype="float64", record_every=2, clip_grad_norm=1.0, val_every=2,
                      diagnostics_batch=4, jacobian_batch=2, lyapunov_every=3, lyapunov_k=2),
)


def _runs(mode: str, *, lrs=(0.003, 0.03), seeds=(0, 1, 2), base: RunConfig = BASE, **train) -> list[RunConfig]:
    base = replace(base, train=replace(base.train, **train))
    return plan_runs(base, modes=(mode,), seeds=seeds, grid={"lr": list(lrs)})


def _sweep(runs, path: Path, ensemble: str, **options) -> Path:
    # Ensembles of any size, as on a GPU: these tests check what ensembles compute, not when they pay on a CPU.
    options.setdefault("min_members", 2)
    run_sweep(runs, path, ensemble=ensemble, figures=False, progress=False, **options)
    return path


@pytest.fixture
def sweeps(tmp_path):
    def both(runs, **options):
        return (_sweep(runs, tmp_path / "off", "off", **options), _sweep(runs, tmp_path / "auto", "auto", **options))
    return both


@pytest.mark.parametrize("mode", ENSEMBLE_MODES)
def test_ensemble_sweep_equals_one_by_one_in_float64(mode, sweeps, monkeypatch):
    runs = _runs(mode)
    measured_alone = []  # the runs that measured their own gates
    gate_columns = callbacks.gate_columns
    monkeypatch.setattr(callbacks, "gate_columns", lambda model, x: measured_alone.append(x) or gate_columns(model, x))
    off, auto = sweeps(runs)
    # one by one: each run at step 0 and after each of 2 epochs; the ensemble measured all its members at once
    assert len(measured_alone) == 3 * len(runs)
    ids = [run.run_id for run in runs]
    assert_runs_match(off, auto, ids)
    assert {RunFolder(auto / run_id).metrics()["ensemble_size"] for run_id in ids} == {6}  # one ensemble trained them
    assert {RunFolder(off / run_id).metrics()["ensemble_size"] for run_id in ids} == {1}
    lrs = {run_id: RunFolder(auto / run_id).table("history").query("metric == 'lr'")["value"].unique().tolist()
           for run_id in ids}
    assert lrs == {run.run_id: [run.train.lr] for run in runs}  # each member its own learning rate
    assert all(len(RunFolder(auto / run_id).table(kind)) for run_id in ids for kind in ("gates", "jacobian", "lyapunov"))
    gradients = RunFolder(auto / ids[1]).table("gradients")
    assert set(gradients["run_id"]) == {ids[1]} and set(gradients["seed"]) == {1}


def test_members_may_differ_in_clipping_and_init_too(tmp_path):
    base = replace(BASE, train=replace(BASE.train, lr=0.03))
    runs = plan_runs(base, modes=("LSTM",), seeds=(0, 1), grid={"clip_grad_norm": [None, 0.05],
                                                                 "init": ["default", "chrono", "forget_bias"]})
    assert [len(unit) for unit in group_runs(runs)] == [12]
    off, auto = (_sweep(runs, tmp_path / mode, mode) for mode in ("off", "auto"))
    assert_runs_match(off, auto, [run.run_id for run in runs])
    assert {RunFolder(auto / run.run_id).metrics()["ensemble_size"] for run in runs} == {12}
    twins = [run for run in runs if run.train.seed == 0 and run.model.init == "default"]  # clipped or not
    losses = [RunFolder(auto / run.run_id).table("history").query("metric == 'loss'")["value"].to_numpy()
              for run in twins]
    norms = RunFolder(auto / twins[1].run_id).table("history").query("metric == 'grad_norm'")["value"]
    assert twins[1].train.clip_grad_norm == 0.05 and (norms > 0.05).all()  # the limit acted at every step
    assert losses[0][0] == losses[1][0] and relative_difference(losses[1], losses[0]) > 1e-3  # then they part


def test_a_diverging_member_is_frozen_and_marked_while_the_others_train_on(sweeps):
    runs = _runs("RNN_RELU", lrs=(0.003, 1e16), seeds=(0, 1), clip_grad_norm=None)
    off, auto = sweeps(runs)
    assert_runs_match(off, auto, [run.run_id for run in runs])
    status = {run.run_id: RunFolder(auto / run.run_id).metrics() for run in runs}
    for run in runs:
        expected = "diverged" if run.train.lr == 1e16 else "finished"
        assert status[run.run_id]["status"] == expected, run.run_id
    assert {metrics["ensemble_size"] for metrics in status.values()} == {4}  # one ensemble, diverged member and all
    diverged = [metrics for metrics in status.values() if metrics["status"] == "diverged"]
    assert all(metrics["diverged_step"] < metrics["steps"] + 1 for metrics in diverged)
    finished = [metrics for metrics in status.values() if metrics["status"] == "finished"]
    assert all(metrics["epochs"] == 2 and math.isfinite(metrics["test_accuracy"]) for metrics in finished)


def _interrupt_after_first_epoch(monkeypatch):
    original = EnsembleFit.epoch

    def epoch(self, index, bar):
        original(self, index, bar)
        if index == 0:
            raise KeyboardInterrupt  # after every member's epoch checkpoint, as a killed sweep stops

    monkeypatch.setattr(EnsembleFit, "epoch", epoch)


def test_an_interrupted_ensemble_resumes_as_an_ensemble_or_one_by_one(tmp_path, monkeypatch):
    runs = _runs("GRU", seeds=(0, 1))
    reference = _sweep(runs, tmp_path / "reference", "off")
    with monkeypatch.context() as patch:
        _interrupt_after_first_epoch(patch)
        with pytest.raises(KeyboardInterrupt):
            _sweep(runs, tmp_path / "interrupted", "auto", checkpoint_every=0)
    ids = [run.run_id for run in runs]
    assert all(RunFolder(tmp_path / "interrupted" / run_id).has("checkpoint") for run_id in ids)
    assert not any(RunFolder(tmp_path / "interrupted" / run_id).ended for run_id in ids)
    shutil.copytree(tmp_path / "interrupted", tmp_path / "interrupted-off")
    resumed = _sweep(runs, tmp_path / "interrupted", "auto", resume=True)
    resumed_alone = _sweep(runs, tmp_path / "interrupted-off", "off", resume=True)
    assert_runs_match(reference, resumed, ids)
    assert {RunFolder(resumed / run_id).metrics()["ensemble_size"] for run_id in ids} == {4}
    assert_runs_match(reference, resumed_alone, ids)  # an ensemble's checkpoints are single runs' checkpoints


def test_members_at_different_epochs_resume_in_separate_ensembles(tmp_path, monkeypatch):
    runs = _runs("LSTM", lrs=(0.01,), seeds=(0, 1, 2))
    reference = _sweep(runs, tmp_path / "reference", "off")
    folder = tmp_path / "mixed"
    with monkeypatch.context() as patch:
        _interrupt_after_first_epoch(patch)
        with pytest.raises(KeyboardInterrupt):
            # two runs stop after epoch 1; the third has not started
            _sweep(runs[:2], folder, "auto", checkpoint_every=0)
    results = train_ensemble(runs, run_dirs=[folder / run.run_id for run in runs])
    assert [result.status for result in results] == ["finished"] * 3
    assert_runs_match(reference, folder, [run.run_id for run in runs])


@pytest.mark.parametrize("ensemble", ["auto", "off"])
@pytest.mark.parametrize("damaged", [0, 2])
def test_a_damaged_member_checkpoint_fails_that_run_alone(tmp_path, monkeypatch, damaged, ensemble):
    runs = _runs("GRU", lrs=(0.01,), seeds=(0, 1, 2))
    ids = [run.run_id for run in runs]
    reference = _sweep(runs, tmp_path / "reference", "off")
    folder = tmp_path / "sweep"
    with monkeypatch.context() as patch:
        _interrupt_after_first_epoch(patch)
        with pytest.raises(KeyboardInterrupt):
            _sweep(runs, folder, "auto")
    checkpoint = folder / ids[damaged] / "checkpoint.pt"
    checkpoint.write_bytes(bytes(range(256)) * 20)  # not a checkpoint at all
    with pytest.raises(SweepFailed) as failure:
        _sweep(runs, folder, ensemble, resume=True)
    message = str(failure.value)
    assert message.startswith("1 of 3 runs failed"), message
    assert f"{ids[damaged]}: RunFolderError: {checkpoint} is damaged" in message and "delete it" in message
    assert message.count(str(checkpoint)) == 1 and "weights_only" not in message, message
    healthy = [run_id for run_id in ids if run_id != ids[damaged]]
    assert not RunFolder(folder / ids[damaged]).ended
    assert_runs_match(reference, folder, healthy)


def _fail_for(monkeypatch, run_id: str, cls, hook: str, *, after_steps: int = 0):
    original = getattr(cls, hook)

    def failing(self, state, *arguments):
        if state.config.run_id == run_id and state.step >= after_steps:
            raise RuntimeError(f"{hook} broke")
        return original(self, state, *arguments)

    monkeypatch.setattr(cls, hook, failing)


@pytest.mark.parametrize("where", ["callback", "write"])
def test_a_member_whose_callback_or_write_raises_fails_alone(tmp_path, monkeypatch, where):
    from gradlab.training import callbacks, run

    runs = _runs("LSTM", lrs=(0.01,), seeds=(0, 1, 2))
    ids = [run.run_id for run in runs]
    reference = _sweep(runs, tmp_path / "reference", "off")
    with monkeypatch.context() as patch:
        if where == "callback":  # mid-epoch, after the member has trained a step with the others
            _fail_for(patch, ids[1], callbacks.History, "on_train_batch", after_steps=2)
        else:
            original = run.write_json

            def write_json(path, payload):
                if Path(path).parent.name == ids[1]:
                    raise OSError(28, "No space left on device", str(path))
                return original(path, payload)

            patch.setattr(run, "write_json", write_json)
        with pytest.raises(SweepFailed) as failure:
            _sweep(runs, tmp_path / "sweep", "auto")
    message = str(failure.value)
    assert message.startswith("1 of 3 runs failed") and ids[1] in message, message
    assert not RunFolder(tmp_path / "sweep" / ids[1]).ended
    assert_runs_match(reference, tmp_path / "sweep", [ids[0], ids[2]])
    assert {RunFolder(tmp_path / "sweep" / run_id).metrics()["ensemble_size"] for run_id in (ids[0], ids[2])} == {3}
    _sweep(runs, tmp_path / "sweep", "auto", resume=True)  # then --resume trains the failed run alone
    assert_runs_match(reference, tmp_path / "sweep", ids)


def test_float32_ensemble_losses_stay_within_1e4_of_single_runs(sweeps):
    runs = _runs("LSTM", dtype="float32")
    off, auto = sweeps(runs)
    for run in runs:
        histories = [RunFolder(path / run.run_id).table("history").query("metric == 'loss'") for path in (off, auto)]
        assert relative_difference(histories[1]["value"], histories[0]["value"]) <= 1e-4, run.run_id


def test_an_ensemble_on_real_fsdd_recordings_equals_one_by_one(sweeps):
    base = RunConfig(
        model=ModelConfig("RNN_TANH", hidden_size=8, num_layers=1),
        data=DataConfig("fsdd", data_dir=str(fsdd_recordings())),
        train=TrainConfig(epochs=1, batch_size=32, dtype="float64", record_every=3, max_steps_per_epoch=6,
                          max_eval_batches=2, diagnostics_batch=4, jacobian_batch=2),
    )
    runs = plan_runs(base, modes=("RNN_TANH",), seeds=(0, 1), grid={"lr": [0.001, 0.01]})
    off, auto = sweeps(runs)
    assert_runs_match(off, auto, [run.run_id for run in runs])


def test_runs_group_by_everything_but_seed_and_learning_rate():
    from gradlab.nn.bptt import KINDS

    assert set(ENSEMBLE_MODES) == set(KINDS)  # the torch-free list names the cells with a batched backward
    tanh = _runs("RNN_TANH")
    lstm = _runs("LSTM", lrs=(0.01,))
    bidirectional = [replace(run, model=replace(run.model, bidirectional="interleaved")) for run in lstm]
    gelu = [replace(run, model=replace(run.model, mode="RNN_GELU"), run_id=run.run_id + "-gelu") for run in lstm]
    other_clip = [replace(run, train=replace(run.train, clip_grad_norm=5.0), run_id=run.run_id + "-clip")
                  for run in lstm]
    other_batch = [replace(run, train=replace(run.train, batch_size=8), run_id=run.run_id + "-b8") for run in lstm]
    runs = tanh + lstm + other_batch
    assert [len(unit) for unit in group_runs(runs)] == [6, 3, 3]
    assert [len(unit) for unit in group_runs(lstm + other_clip)] == [6]  # clipping may differ within an ensemble
    assert [len(unit) for unit in group_runs(runs, ensemble="off")] == [1] * 12
    assert [len(unit) for unit in group_runs(runs, max_members=4)] == [3, 3, 3, 3]  # equal parts
    assert [len(unit) for unit in group_runs(tanh + tanh[:1], max_members=3)] == [3, 2, 2]
    assert [len(unit) for unit in group_runs(tanh, workers=2)] == [3, 3]  # every worker gets work
    assert [len(unit) for unit in group_runs(bidirectional + gelu)] == [1] * 6
    assert "bidirectional" in ensemble_blocker(bidirectional[0]) and "RNN_GELU" in ensemble_blocker(gelu[0])
    assert "regulariser" in ensemble_blocker(replace(lstm[0], train=replace(lstm[0].train, floss_weight=0.1)))
    with pytest.raises(ValueError, match="--ensemble must be one of auto, off"):
        group_runs(runs, ensemble="on")
    with pytest.raises(ValueError, match="--ensemble-max must be an integer >= 1"):
        group_runs(runs, max_members=0)


def test_ensemble_tasks_name_their_runs():
    tasks = tuple(RunTask(f"GRU-s{seed}", BASE.to_dict(), f"/x/GRU-s{seed}") for seed in range(3))
    task = EnsembleTask(tasks)
    assert task.run_ids == ("GRU-s0", "GRU-s1", "GRU-s2") and task.run_id == "GRU-s0+2"
    assert tasks[0].run_ids == ("GRU-s0",)


def test_train_ensemble_refuses_runs_that_differ_in_shape():
    runs = _runs("LSTM", lrs=(0.01,), seeds=(0, 1))
    wider = replace(runs[1], model=replace(runs[1].model, hidden_size=9))
    with pytest.raises(ValueError, match="differ in more than seed, learning rate, norm clipping and init"):
        train_ensemble([runs[0], wider])


def test_plan_says_how_runs_group_and_bad_flags_are_refused(tmp_path, capsys):
    main = load_script("compare_cells").main
    argv = ["--dataset", "distance", "--seq-len", "12", "--cells", "LSTM,GRU", "--seeds", "0,1,2",
            "--lr", "0.001,0.01", "--out", str(tmp_path)]
    assert main([*argv, "--plan"]) == 0
    assert "2 ensembles (of 6, 6 runs) and 0 single runs" in capsys.readouterr().out
    assert main([*argv, "--plan", "--ensemble", "off"]) == 0
    assert "one run per task" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*argv, "--ensemble-max", "0"])
    assert "--ensemble-max must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_batched_validation_equals_each_members_own():
    """The GPU's validation path (all members at once) gives each member's own evaluate() numbers."""
    from gradlab.data.from_config import load_data
    from gradlab.training.ensemble import EnsembleModel
    from gradlab.training.ensemble_run import evaluate_members, share_parameters
    from gradlab.training.evaluate import evaluate
    from gradlab.training.run import prepare

    runs = _runs("LSTM", lrs=(0.01,), seeds=(0, 1, 2))
    data = load_data(runs[0].data, progress=False)
    states = [prepare(run, data, None, progress=False) for run in runs]
    ensemble = EnsembleModel([state.model for state in states])
    for member, state in enumerate(states):
        share_parameters(ensemble, member, state.model)
    data = states[0].data
    batched = evaluate_members(ensemble, data.validation, data.task, batch_size=5, class_names=data.class_names,
                               max_batches=None)
    for state, (loss, accuracy) in zip(states, batched):
        own = evaluate(state.model, data.validation, data.task, batch_size=5, class_names=data.class_names)
        assert relative_difference([loss, accuracy], list(own)) <= 1e-12
    with torch.no_grad():
        ensemble.fc.weight[1].add_(1.0)  # a member's model is a window onto the ensemble's weights
    assert torch.equal(states[1].model.fc.weight, ensemble.fc.weight[1])


def test_drift_script_measures_per_epoch_differences():
    drift_by_epoch = load_script("ensemble_drift").drift_by_epoch
    runs = _runs("GRU", lrs=(0.01,), seeds=(0, 1))
    alone = [train_run(run) for run in runs]
    together = train_ensemble(runs)
    for single, member in zip(alone, together):
        drift = drift_by_epoch(single, member)
        assert len(drift) == 2 and max(drift) <= 1e-9
    assert max(drift_by_epoch(alone[0], together[1])) > 1e-3  # another seed's run is far away


def test_drift_script_compares_two_sweeps(sweeps, capsys):
    off, auto = sweeps(_runs("RNN_TANH", lrs=(0.01,), seeds=(0, 1)))
    load_script("ensemble_drift").main(["--compare", str(off), str(auto)])
    said = capsys.readouterr().out
    assert "2 of 2 runs within 1e-09 throughout; apart: none" in said
    shutil.rmtree(auto / "RNN_TANH-s1")
    shutil.copytree(off / "RNN_TANH-s0", auto / "RNN_TANH-s1")  # another run in its place
    load_script("ensemble_drift").main(["--compare", str(off), str(auto)])
    assert "1 of 2 runs within 1e-09 throughout; apart: RNN_TANH-s1" in capsys.readouterr().out


def test_a_member_prepared_without_an_optimiser_says_so_if_used_before_its_ensemble_sets_one():
    from gradlab.data.from_config import load_data
    from gradlab.training.run import prepare

    run = _runs("GRU", lrs=(0.01,), seeds=(0,))[0]
    data = load_data(run.data, progress=False)
    alone, member = prepare(run, data, None, progress=False), prepare(run, data, None, progress=False, optimiser=False)
    assert isinstance(alone.optimiser, torch.optim.Adam)
    assert all(torch.equal(a, b) for a, b in zip(alone.model.parameters(), member.model.parameters()))  # same init
    with pytest.raises(RuntimeError, match="optimiser.step: this run's optimiser was left for its caller to set"):
        member.optimiser.step()
    copy.deepcopy(member.optimiser)  # copying a state before its ensemble sets the optimiser still works
