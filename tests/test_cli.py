"""The generated command line: one source of defaults, grids from comma lists, checks before writing."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import load_script

from gradlab.cli import base_config, option_values
from gradlab.config import CONFIG_PARTS, DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.nn.models import RNNModel
from gradlab.sweep.plan import count_parameters, hidden_for_params, plan_runs

REPO = Path(__file__).resolve().parents[1]


compare_cells = load_script("compare_cells")


def _values(argv):
    return option_values(compare_cells.build_parser().parse_args(argv))


def test_every_config_option_has_a_flag_whose_default_is_the_configs():
    parser = compare_cells.build_parser()
    flags = {action.dest for action in parser._actions}
    for cls in CONFIG_PARTS.values():
        for item in dataclasses.fields(cls):
            if item.metadata.get("cli", True):
                assert item.name in flags, item.name
    values, grid = _values([])
    assert grid == {}
    assert base_config(values, grid, "LSTM") == RunConfig(model=ModelConfig("LSTM"), data=DataConfig(),
                                                          train=TrainConfig())


def test_comma_lists_become_grid_axes_and_single_values_do_not():
    values, grid = _values(["--lr", "0.001,0.003", "--clip-grad-norm", "none,1", "--hidden-size", "16",
                            "--record-every", "0", "--forget-bias", "2", "--jacobian-every", "3",
                            "--words", "one,two", "--no-diagnostics"])
    assert grid == {"lr": [0.001, 0.003], "clip_grad_norm": [None, 1.0]}
    assert values["hidden_size"] == 16 and values["record_every"] is None and values["words"] == ("one", "two")
    assert values["forget_bias"] == 2.0 and values["jacobian_every"] == 3 and values["diagnostics"] is False
    base = base_config({**values, "dataset": "distance"}, grid, "GRU")
    runs = plan_runs(base, modes=["GRU"], seeds=[0, 1], grid=grid)
    assert [run.run_id for run in runs] == [
        "GRU-lr0.001-clipnone-s0", "GRU-lr0.001-clipnone-s1", "GRU-lr0.001-clip1-s0", "GRU-lr0.001-clip1-s1",
        "GRU-lr0.003-clipnone-s0", "GRU-lr0.003-clipnone-s1", "GRU-lr0.003-clip1-s0", "GRU-lr0.003-clip1-s1",
    ]
    assert [(run.train.lr, run.train.clip_grad_norm, run.train.seed) for run in runs[2:4]] == [(0.001, 1.0, 0),
                                                                                                (0.001, 1.0, 1)]


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", ["none", "separate", "interleaved"])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_formula_equals_the_models(mode, bidirectional, bias):
    for hidden, layers in ((3, 1), (7, 2), (16, 3)):
        model = RNNModel(mode, 20, hidden, layers, bias, 3, bidirectional=bidirectional)
        expected = sum(parameter.numel() for parameter in model.parameters())
        assert count_parameters(mode, 20, hidden, layers, 3, bidirectional=bidirectional, bias=bias) == expected


def test_matched_sizes_come_closest_to_the_target():
    for mode in ("RNN_TANH", "LSTM", "GRU"):
        hidden, count = hidden_for_params(4000, mode, 20, 2, 3)
        neighbours = [count_parameters(mode, 20, h, 2, 3) for h in (hidden - 1, hidden + 1)]
        assert all(abs(count - 4000) <= abs(other - 4000) for other in neighbours)
    base = RunConfig(model=ModelConfig("GRU", num_layers=2), data=DataConfig("distance"))
    runs = plan_runs(base, modes=["RNN_TANH", "LSTM"], seeds=[0], match_params=[4000, 16000], shapes=(20, 3))
    assert [run.run_id for run in runs] == ["RNN_TANH-p4000-s0", "RNN_TANH-p16000-s0", "LSTM-p4000-s0",
                                            "LSTM-p16000-s0"]
    sizes = {run.run_id: run.model.hidden_size for run in runs}
    assert sizes["RNN_TANH-p4000-s0"] > sizes["LSTM-p4000-s0"]  # the LSTM has four gates per unit


def test_plan_prints_every_run_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    assert compare_cells.main(["--dataset", "distance", "--cells", "GRU,RNN_TANH", "--lr", "0.01,0.1",
                               "--seeds", "0,1", "--out", str(out), "--plan", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "8 runs" in printed and "GRU-lr0.01-s1: mode=GRU, lr=0.01, seed=1" in printed
    assert "RNN_TANH-lr0.1-s0" in printed and "train.lr" in printed
    assert not out.exists()


CLI_ERRORS = [
    (["--dataset", "adding", "--cells", "RNN_TANH,LSTM", "--init", "forget_bias"],
     "run RNN_TANH-s0: init scheme 'forget_bias' applies to LSTM cells"),
    (["--threads", "-1"], "--threads must be an integer >= 1"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
    (["--workers", "0"], "--workers must be an integer >= 1"),
    (["--name", ""], "sweep name is empty"),
    (["--name", "../x"], "plain folder name"),
    (["--lr", "fast"], "cannot read"),
    (["--init", "orthogonal,forget_bias", "--cells", "GRU"], "forget_bias"),
    # torch cannot seed from 2**64 ("Overflow when unpacking long long"), and int64 tables cannot store 2**63
    (["--seeds", f"0,{2**64}"], "TrainConfig.seed must be an integer in [0, 9223372036854775807]"),
    (["--seeds", f"{2**63}", "--plan"], "TrainConfig.seed must be an integer in [0, 9223372036854775807]"),
    (["--seeds", "-1", "--plan"], "TrainConfig.seed must be an integer in [0,"),
    (["--data-seed", f"{2**64}", "--plan"], "DataConfig.data_seed must be an integer in [0, 9223372036854775807]"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_ERRORS)
def test_bad_options_fail_before_any_folder_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main(["--dataset", "distance", "--out", str(out), "--no-progress", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not out.exists() and not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is missing")
def test_a_missing_device_fails_before_the_folder_exists(tmp_path, capsys):
    out = tmp_path / "runs"
    with pytest.raises(SystemExit):
        compare_cells.main(["--dataset", "distance", "--device", "cuda", "--out", str(out), "--no-progress"])
    assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists()


def test_resuming_a_sweep_of_an_older_layout_says_so(tmp_path, capsys):
    sweep = tmp_path / "runs" / "old"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"command": None, "runs": []}))
    with pytest.raises(SystemExit):
        compare_cells.main(["--dataset", "distance", "--out", str(tmp_path / "runs"), "--name", "old", "--resume",
                            "--no-progress"])
    error = capsys.readouterr().err
    assert "layout 1" in error and "--overwrite" in error


def test_config_io_and_analysis_load_no_torch():
    code = ("import sys, gradlab.config, gradlab.store.io, gradlab.analysis, gradlab.store.schema; "
            "loaded = [name for name in ('torch', 'librosa') if name in sys.modules]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_no_module_is_longer_than_400_lines():
    long = {str(path.relative_to(REPO)): n for path in (REPO / "src" / "gradlab").rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 400}
    assert not long, long


def _parsers():
    from gradlab.__main__ import build_parser
    from gradlab.scripts import compare_cells_parser, sequence_length_parser

    commands = next(action for action in build_parser()._actions if action.dest == "command").choices
    return {"ensemble_drift.py": load_script("ensemble_drift").build_parser(),
            "gradlab sweep": compare_cells_parser("gradlab sweep"),
            "gradlab sweep-length": sequence_length_parser("gradlab sweep-length"),
            "gradlab figures": commands["figures"], "gradlab inspect": commands["inspect"]}


@pytest.mark.parametrize("name", ["gradlab sweep", "gradlab sweep-length", "gradlab figures", "gradlab inspect",
                                  "ensemble_drift.py"])
def test_help_states_each_default_once(name):
    text = _parsers()[name].format_help()
    options = re.split(r"\n(?=  -)", text.split("options:", 1)[1])  # one block per option, as --help prints it
    assert len(options) > 2
    for block in options:
        flat = " ".join(block.split())
        assert flat.count("default:") <= 1, flat
        assert "(default " not in flat and "default: none) (default" not in flat, flat


def test_script_defaults_replace_the_fields_stated_default():
    text = " ".join(_parsers()["gradlab sweep-length"].format_help().split())
    assert "training sequences (default: 1000)" in text and "(default: distance)" in text
    assert "stacked layers (default: 1)" in text


def _choice_fields():
    """(config field, its fixed values): every str field whose config check names the allowed values."""
    found = {}
    for part, cls in CONFIG_PARTS.items():
        for item in dataclasses.fields(cls):
            if item.type != "str" or not item.metadata.get("cli", True):
                continue
            try:
                cls(**{item.name: "no-such-value"})
            except ValueError as error:
                if "expected one of" in str(error):
                    found[item.name] = item.metadata.get("choices")
    return found


def test_every_fixed_value_option_is_a_choice_from_the_config_vocabulary():
    from gradlab.cli import FLAG_CHECKS

    fields = _choice_fields()
    assert {"dataset", "optimiser", "readout", "dtype", "bidirectional", "split", "pad"} <= set(fields)
    missing = [name for name, choices in fields.items() if not choices and name not in FLAG_CHECKS]
    assert not missing, f"fixed-value options without choices metadata: {missing}"
    parser = _parsers()["gradlab sweep"]
    usage = parser.format_usage()
    for name, choices in fields.items():
        if choices:
            assert f"--{name.replace('_', '-')} {{{','.join(choices)}}}" in usage
            for value in choices:  # every listed value is one the config accepts
                assert getattr(parser.parse_args([f"--{name.replace('_', '-')}", value]), name) == [value]


@pytest.mark.parametrize(("argv", "message"), [
    (["--optimiser", "adamw"], "unknown optimiser 'adamw'; expected one of ['adam', 'sgd']"),
    (["--dataset", "distance,mnist"], "unknown dataset 'mnist'"),
    (["--dtype", "float16"], "unknown dtype 'float16'"),
    (["--readout", "first"], "unknown readout 'first'"),
    (["--init", "xavier"], "unknown init scheme 'xavier'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--cells", "GRU,TRANSFORMER"], "unknown mode 'TRANSFORMER'"),
    (["--activations", "tanh,swish"], "unknown activation 'swish'"),
])
def test_a_wrong_value_of_a_fixed_value_option_is_refused_with_the_usage(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        _parsers()["gradlab sweep"].parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: gradlab sweep") and f"argument {argv[0]}: {message}" in error


def test_gradlab_help_lists_the_sweep_commands(capsys):
    from gradlab.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert re.search(r"^\s+sweep\s", listed, re.MULTILINE) and re.search(r"^\s+sweep-length\s", listed, re.MULTILINE)
