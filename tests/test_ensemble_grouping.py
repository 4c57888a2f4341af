"""When ``--ensemble auto`` groups runs: never where a worker would idle or an ensemble would be too small to pay."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.sweep.execute import LocalExecutor, ensemble_min_members
from gradlab.sweep.plan import plan_runs
from gradlab.training.ensemble.grouping import CPU_MIN_MEMBERS, DEFAULT_MIN_MEMBERS, finish_time, group_runs

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


def test_ensembles_are_split_until_no_worker_idles():
    ten = _runs(["RNN_TANH", "RNN_RELU", "LSTM", "GRU"], range(10))
    assert _sizes(group_runs(ten, workers=2, min_members=4)) == [10, 10, 10, 10]  # 20 runs a worker, as one by one
    three_groups = _runs(["RNN_TANH", "LSTM", "GRU"], range(8))
    units = group_runs(three_groups, workers=2, min_members=4)
    assert _sizes(units) == [4, 4, 8, 8]  # 4+8 and 4+8: 12 runs a worker, as one by one (not 16 and 8)
    assert finish_time(_sizes(units), 2) == finish_time([1] * 24, 2)
    # halves below the fewest members train one by one instead
    assert _sizes(group_runs(_runs(["GRU"], range(6)), workers=4, min_members=4)) == [1] * 6
    assert _sizes(group_runs(_runs(["GRU"], range(6)), workers=2, min_members=3)) == [3, 3]
    assert _sizes(group_runs(_runs(["GRU"], range(6)), workers=7, min_members=2)) == [1] * 6
    # every unit set keeps each run exactly once
    assert sorted(run.run_id for unit in units for run in unit) == sorted(run.run_id for run in three_groups)


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
