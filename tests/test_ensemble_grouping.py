"""When ``--ensemble auto`` groups runs: never where a worker would idle or an ensemble would be too small to pay."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.sweep.execute import LocalExecutor, ensemble_min_members
from gradlab.sweep.plan import plan_runs
from gradlab.training.ensemble.grouping import (
    BALANCE_SLACK,
    CPU_MIN_MEMBERS,
    DEFAULT_MIN_MEMBERS,
    finish_time,
    group_runs,
    run_cost,
)

BASE = RunConfig(model=ModelConfig("LSTM", hidden_size=4, num_layers=1),
                 data=DataConfig("distance", seq_len=6, n_train=8, n_validation=4, n_test=4),
                 train=TrainConfig(epochs=1, batch_size=4, device="cpu"))


def _runs(modes, seeds) -> list[RunConfig]:
    return plan_runs(BASE, modes=modes, seeds=seeds)


def _sizes(units) -> list[int]:
    return [len(unit) for unit in units]


def test_finish_time_is_a_process_pools_schedule():
    assert finish_time([1] * 12, 2) == 6
    assert finish_time([3, 3, 3], 2) == 6  # the third unit waits for a worker while the other idles
    assert finish_time([10, 1, 1, 1], 2) == 10
    assert finish_time([2, 5, 1], 1) == 8


def test_the_coursework_shape_trains_one_by_one_on_a_cpu():
    runs = _runs(["RNN_TANH", "RNN_RELU", "LSTM", "GRU"], range(3))  # 4 groups of 3 seeds
    assert _sizes(group_runs(runs, workers=2)) == [3, 3, 3, 3]  # on a GPU, ensembles of 3 pay
    assert _sizes(group_runs(runs, workers=2, min_members=CPU_MIN_MEMBERS)) == [1] * 12


def _modes(units) -> list[tuple[int, str]]:
    return [(len(unit), unit[0].model.mode) for unit in units]


def test_run_cost_weighs_gates_layers_epochs_width_and_length():
    lstm, gru, tanh = _runs(["LSTM", "GRU", "RNN_TANH"], [0])
    assert (run_cost(lstm), run_cost(gru), run_cost(tanh)) == (5 * 4 * 6, 4 * 4 * 6, 2 * 4 * 6)  # hidden 4, T 6
    deeper = replace(lstm, model=replace(lstm.model, num_layers=3, hidden_size=8))
    assert run_cost(deeper) == run_cost(lstm) * 3 * 2
    longer = replace(lstm, data=replace(lstm.data, seq_len=60), train=replace(lstm.train, epochs=2))
    assert run_cost(longer) == run_cost(lstm) * 10 * 2
    both = replace(lstm, model=replace(lstm.model, bidirectional="separate"))
    assert run_cost(both) == 2 * run_cost(lstm)


def test_units_come_longest_first_and_every_worker_takes_a_share_of_each_group():
    ten = _runs(["RNN_TANH", "RNN_RELU", "LSTM", "GRU"], range(10))
    # Whole groups would end unevenly (LSTM 50 + relu 20 against GRU 40 + tanh 20); halves end together.
    assert _modes(group_runs(ten, workers=2, min_members=4)) == [
        (5, "LSTM"), (5, "LSTM"), (5, "GRU"), (5, "GRU"), (5, "RNN_TANH"), (5, "RNN_TANH"), (5, "RNN_RELU"),
        (5, "RNN_RELU")]
    units = group_runs(ten, workers=2, min_members=4)
    assert finish_time([sum(map(run_cost, unit)) for unit in units], 2) == sum(map(run_cost, ten)) / 2  # even
    # one worker: the grid's order, whole groups
    assert _modes(group_runs(ten, workers=1, min_members=4)) == [
        (10, "RNN_TANH"), (10, "RNN_RELU"), (10, "LSTM"), (10, "GRU")]
    # one run at a time, longest first: the last runs a worker takes are the short ones
    singles = group_runs(ten, ensemble="off", workers=2)
    assert [unit[0].model.mode for unit in singles] == ["LSTM"] * 10 + ["GRU"] * 10 + ["RNN_TANH"] * 10 \
        + ["RNN_RELU"] * 10
    three_groups = _runs(["RNN_TANH", "LSTM", "GRU"], range(8))
    units = group_runs(three_groups, workers=2, min_members=4)
    assert _modes(units) == [(4, "LSTM"), (4, "LSTM"), (4, "GRU"), (4, "GRU"), (4, "RNN_TANH"), (4, "RNN_TANH")]
    # every unit set keeps each run exactly once
    assert sorted(run.run_id for unit in units for run in unit) == sorted(run.run_id for run in three_groups)


def test_ensembles_are_split_until_no_worker_idles():
    # a group that cannot be shared out in parts of the fewest members trains one by one instead
    assert _sizes(group_runs(_runs(["GRU"], range(6)), workers=4, min_members=4)) == [1] * 6
    assert _sizes(group_runs(_runs(["GRU"], range(6)), workers=2, min_members=3)) == [3, 3]
    assert _sizes(group_runs(_runs(["GRU"], range(6)), workers=7, min_members=2)) == [1] * 6
    # within BALANCE_SLACK of one by one an ensemble stays whole: LSTM 15 + relu 6 against one by one's 20
    assert _modes(group_runs(_runs(["RNN_TANH", "RNN_RELU", "LSTM", "GRU"], range(3)), workers=2)) == [
        (3, "LSTM"), (3, "GRU"), (3, "RNN_TANH"), (3, "RNN_RELU")]
    assert BALANCE_SLACK < 21 / 20 * 1.1


def test_a_bad_fewest_members_is_refused():
    with pytest.raises(ValueError, match="fewest ensemble members must be an integer >= 1, got 0"):
        group_runs(_runs(["GRU"], range(2)), min_members=0)


def test_the_fewest_members_follow_the_device_runs_train_on():
    cpu = _runs(["GRU"], range(2))
    assert ensemble_min_members(cpu, None) == CPU_MIN_MEMBERS
    assert ensemble_min_members(cpu, LocalExecutor(2)) == CPU_MIN_MEMBERS
    cuda = [replace(run, train=replace(run.train, device="cuda")) for run in cpu]
    assert ensemble_min_members(cuda, None) == DEFAULT_MIN_MEMBERS

    class Cluster:
        name = "cluster"

    assert ensemble_min_members(cpu, Cluster()) == DEFAULT_MIN_MEMBERS  # its machines' devices are not this one's
