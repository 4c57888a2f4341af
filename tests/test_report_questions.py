"""The four answers on speaker folds: numbers equal independent computations on tables with known values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradlab.analysis.load import RunData
from gradlab.analysis.report.answers import (
    answer_choice,
    answer_curves,
    answer_vanishing,
    answers,
    decay_table,
    differences,
)
from gradlab.analysis.report.study import Study
from gradlab.store import schema

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
SEEDS = (0, 1, 2)
T = 8
#: Per-step gradient factor at init of each cell; each speaker fold scales it slightly.
FACTOR = {"RNN_SIGMOID": 0.14, "RNN_TANH": 0.56, "RNN_RELU": 0.41, "RNN_LEAKY_RELU": 0.42, "LSTM": 0.7, "GRU": 0.8}
SLOPE_RMS = {"RNN_SIGMOID": 0.24, "RNN_TANH": 0.96, "RNN_RELU": 0.70, "RNN_LEAKY_RELU": 0.71}
ACCURACY = {"RNN_SIGMOID": 0.35, "RNN_TANH": 0.55, "RNN_RELU": 0.65, "RNN_LEAKY_RELU": 0.66, "LSTM": 0.73,
            "GRU": 0.80}
VOICE = dict(zip(SPEAKERS, (-0.2, -0.05, 0.0, 0.03, 0.06, 0.1)))  # the speaker moves every cell alike


def _factor(cell: str, speaker: str) -> float:
    return FACTOR[cell] * (1 + 0.01 * SPEAKERS.index(speaker))


def _tables():
    summary, gradients, gates, history = [], [], [], []
    for cell in FACTOR:
        for speaker in SPEAKERS:
            for seed in SEEDS:
                run_id = f"{cell}-{speaker}-s{seed}"
                keys = {"sweep": "tuned", "run_id": run_id, "cell": cell, "activation": "tanh", "seed": seed}
                accuracy = ACCURACY[cell] + VOICE[speaker] + 0.005 * seed + 0.01 * (cell == "GRU") * (SPEAKERS.index(speaker) % 3)
                summary.append({**keys, "dataset": "fsdd", "readout": "last", "pad": "end", "delay": 0,
                                "init": "default", "train_fraction": 1.0, "epochs": 30, "seq_len": T,
                                "num_layers": 1, "status": "finished", "test_accuracy": accuracy,
                                "best_val_accuracy": accuracy, "test_speaker": speaker, "clip_grad_norm": np.nan,
                                "param_target": np.nan, "omega_weight": 0.0, "floss_weight": 0.0})
                for step in (0, 60):
                    factor = _factor(cell, speaker) * (0.9 if step else 1.0)
                    for t in range(T):
                        gradients.append({**keys, "epoch": step // 6, "step": step, "layer": 0,
                                          "direction": "forward", "state": "h", "timestep": t,
                                          "grad_norm": factor ** (T - 1 - t), "grad_norm_per_sample": 1.0,
                                          "ratio_to_last": factor ** (T - 1 - t)})
                        if cell in SLOPE_RMS:
                            for stat, value in (("slope_rms", SLOPE_RMS[cell]), ("slope", SLOPE_RMS[cell]),
                                                ("mean", 0.0)):
                                gates.append({**keys, "epoch": step // 6, "step": step, "layer": 0,
                                              "direction": "forward", "timestep": t, "gate": "h", "stat": stat,
                                              "value": value})
                for step in range(1, 31):
                    history.append({**keys, "step": step, "epoch": step - 1, "split": "train", "metric": "grad_norm",
                                    "value": 50.0 if (cell == "RNN_RELU" and step == 25) else 1.0, "wall_time": 0.0})
    frames = {"summary": pd.DataFrame(summary), "gradients": pd.DataFrame(gradients), "gates": pd.DataFrame(gates),
              "history": pd.DataFrame(history)}
    for kind in ("gradients", "gates", "history"):
        frames[kind] = schema.conform(frames[kind], kind).assign(sweep=frames[kind]["sweep"])
    return frames


@pytest.fixture(scope="module")
def folds_study():
    frames = _tables()
    data = RunData(summary=frames["summary"], history=frames["history"], gradients=frames["gradients"],
                   gates=frames["gates"], jacobian=schema.empty("jacobian").assign(sweep=pd.Series(dtype="string")))
    empty = data.select(frames["summary"].iloc[:0][["sweep", "run_id"]])
    return Study(data=data, headline=data, curves=empty, matched=empty, distance=empty, pairs=pd.DataFrame())


def test_decay_table_has_speaker_intervals_and_the_first_principles_prediction(folds_study):
    table = decay_table(folds_study).set_index("cell")
    for cell in SLOPE_RMS:
        per_fold = [_factor(cell, speaker) for speaker in SPEAKERS]
        low, high = stats.t.interval(0.95, 5, loc=np.mean(per_fold), scale=stats.sem(per_fold))
        assert table.loc[cell, "decay_init"] == pytest.approx(np.mean(per_fold), rel=1e-9)
        assert (table.loc[cell, "decay_init_low"], table.loc[cell, "decay_init_high"]) == pytest.approx((low, high))
        assert table.loc[cell, "predicted"] == pytest.approx(SLOPE_RMS[cell] / np.sqrt(3), rel=1e-9)
        assert table.loc[cell, "decay_late"] == pytest.approx(0.9 * np.mean(per_fold), rel=1e-9)
        assert table.loc[cell, "speakers"] == 6


def test_question_one_ranks_activations_and_says_where_relu_loses_more(folds_study):
    text = "\n".join(answer_vanishing(folds_study, ["answer1_decay_by_activation.png"]))
    assert text.startswith("![per-step gradient decay by activation")
    assert "Most affected at initialisation (smallest factor per step): RNN sigmoid and RNN relu" in text
    assert "least affected: RNN tanh and RNN leaky_relu" in text
    assert "relu loses more than tanh" in text
    assert "RNN relu: 18 of 18 runs with a spike" in text and "RNN tanh: 0 of 18 runs with a spike" in text
    assert "6 test speakers" in text and "3 seeds per fold" in text


def test_question_four_rests_on_paired_tests_over_speakers(folds_study):
    table = differences(folds_study)
    row = table[(table["first"] == "GRU") & (table["second"] == "LSTM")].iloc[0]
    summary = folds_study.headline.summary
    gru = summary[summary.cell == "GRU"].groupby("test_speaker")["test_accuracy"].mean()
    lstm = summary[summary.cell == "LSTM"].groupby("test_speaker")["test_accuracy"].mean()
    result = stats.ttest_rel(gru, lstm)
    assert row["difference"] == pytest.approx((gru - lstm).mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(result.confidence_interval()))
    text = "\n".join(answer_choice(folds_study))
    assert "paired test of the difference (95% t interval over test speakers" in text
    assert "use the GRU; it beats the LSTM by +8.0 [" in text
    # Each cell's accuracy with the speaker as the unit: the t interval of the six fold means.
    interval = stats.ttest_1samp(gru, 0).confidence_interval()
    gru_row = next(line for line in text.splitlines() if line.startswith("| GRU | "))
    assert gru_row.startswith(f"| GRU | {100 * gru.mean():.1f}% [{100 * interval.low:.1f}%, "
                              f"{100 * interval.high:.1f}%] | 6 | {len(summary[summary.cell == 'GRU'])} (0 diverged)")
    # The Holm column: each row's p times the number of comparisons ranked at or above it (running maximum),
    # computed here from the rows' own p-values.
    # Rows without a p (no spread over speakers) are left out of the family.
    ps = table["p"].to_numpy()
    tested = np.flatnonzero(np.isfinite(ps))
    order = tested[np.argsort(ps[tested])]
    expected = np.minimum(1, np.maximum.accumulate(ps[order] * (len(order) - np.arange(len(order)))))
    holm_of_row = dict(zip(order, expected))
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and " - " in line]
    assert len(rows) == len(ps) and len(order) >= 2
    for index, cells in enumerate(rows):
        held = holm_of_row.get(index, np.nan)
        assert cells[5] == ("p n/a" if np.isnan(held) else "p < 0.001" if held < 0.001 else f"p = {held:.2g}")
    assert "of the table (the Holm p column)" in text and f"over all {len(order)} comparisons" in text


def test_answers_without_data_say_so_and_keep_the_order(folds_study):
    text = "\n".join(answers(folds_study))
    assert [line for line in text.splitlines() if line.startswith("### ")] == [
        "### 1. What are vanishing gradients, why do they occur, and which activations suffer more or less?",
        "### 2. Why do LSTMs help with vanishing gradients, compared with a vanilla RNN?",
        "### 3. Which training curve is the RNN, which the LSTM and which the GRU, and why?",
        "### 4. When would you use each?"]
    assert "No long training curves were recorded" in "\n".join(answer_curves(folds_study))


def test_question_three_labels_unlabelled_curves_blind_and_names_the_coursework_letters():
    from test_analysis_curves import SHAPES, _history

    history, summary = _history(SHAPES)
    summary = summary.assign(sweep="curves", dataset="fsdd", epochs=100, lr=0.003, status="finished")
    history = history.assign(sweep="curves")
    none = {kind: schema.empty(kind).assign(sweep=pd.Series(dtype="string"))
            for kind in ("gradients", "gates", "jacobian")}
    data = RunData(summary=summary, history=history, **none)
    empty = data.select(summary.iloc[:0][["sweep", "run_id"]])
    study = Study(data=data, headline=empty, curves=data, matched=empty, distance=empty, pairs=pd.DataFrame())
    text = "\n".join(answer_curves(study))
    assert "| shared | 15 of 15 |" in text  # every held-out triple labelled right
    assert "Rule 1: the RNN's curve levels out lowest" in text and "Rule 2: of the gated pair, the GRU rises sooner" in text
    assert "C is the RNN; A, the one that reaches the shared level sooner, is the GRU and B the LSTM" in text


def test_the_check_family_holds_each_measurement_once():
    from gradlab.analysis.compare import compare
    from gradlab.analysis.report import distinct_checks
    from gradlab.analysis.report.evidence import Check

    same = compare(np.array([0.8, 0.82, 0.81]), np.array([0.7, 0.71, 0.72]), claim="greater")
    other = compare(np.array([0.8, 0.83, 0.81]), np.array([0.7, 0.71, 0.72]), claim="greater")
    checks = [Check("tuned", "a GRU is more accurate", "test accuracy", same),
              Check("lyapunov", "a GRU is more accurate", "test accuracy", same),  # the same runs again
              Check("matched", "a GRU is more accurate", "test accuracy", other)]
    assert [check.where for check in distinct_checks(checks)] == ["tuned", "matched"]


def test_the_evidence_table_names_diverged_runs(tmp_path):
    from analysis_helpers import write_sweep

    from gradlab.analysis import load_runs
    from gradlab.analysis.report import build_findings

    sweep = write_sweep(tmp_path / "runs", "hot", cells=("RNN_RELU", "GRU"), seeds=(0, 1, 2, 3, 4, 5),
                        tables=("history",))
    summary = pd.read_parquet(sweep / schema.SWEEP_FILES["summary"])
    summary.loc[(summary["cell"] == "RNN_RELU") & (summary["seed"] < 5), "status"] = "diverged"
    summary.to_parquet(sweep / schema.SWEEP_FILES["summary"])
    report = build_findings(load_runs(sweep, "all"), n_resamples=20).main()
    row = next(line for line in report.splitlines() if line.startswith("| hot "))
    assert "**5 of 6 diverged** (most: not a trained configuration)" in row
    assert row.count("diverged") == 1  # the GRU column names none


def test_distance_role_keeps_init_variants_and_leaves_out_one_epoch_runs():
    from gradlab.analysis.report.study import study

    rows = []
    for sweep, init, epochs, regulariser in (("dist", "default", 50, 0.0), ("dist-init", "chrono", 50, 0.0),
                                             ("dist-lyapunov", "default", 1, 0.0), ("remedy", "default", 50, 1.0)):
        for seed in (0, 1):
            rows.append({"sweep": sweep, "run_id": f"LSTM-{init}-s{seed}", "cell": "LSTM", "activation": "tanh",
                         "seed": seed, "dataset": "distance", "init": init, "epochs": epochs, "seq_len": 50,
                         "omega_weight": regulariser, "floss_weight": 0.0, "test_accuracy": 0.5})
    summary = pd.DataFrame(rows)
    data = RunData(summary=summary, gradients=schema.empty("gradients").assign(sweep=pd.Series(dtype="string")))
    kept = study(data).distance.summary
    assert sorted(set(kept["sweep"])) == ["dist", "dist-init"] and len(kept) == 4


def test_distance_verdict_tests_each_lstm_init_against_the_tanh_rnn():
    from gradlab.analysis.report.answers.lstm import _distance_verdict

    level = {("RNN_TANH", "default"): 0.8, ("LSTM", "default"): 0.45, ("LSTM", "forget_bias"): 0.78,
             ("LSTM", "chrono"): 0.97}
    rows = [{"cell": cell, "init": init, "seq_len": 200, "test_accuracy": value + 0.01 * (seed % 3)}
            for (cell, init), value in level.items() for seed in range(6)]
    rows += [{"cell": "LSTM", "init": "default", "seq_len": 50, "test_accuracy": 1.0}]  # another T: not read
    text = " ".join(_distance_verdict(pd.DataFrame(rows), 200))
    default = [0.45 + 0.01 * (seed % 3) for seed in range(6)]
    tanh = [0.8 + 0.01 * (seed % 3) for seed in range(6)]
    interval = stats.ttest_ind(default, tanh, equal_var=False).confidence_interval()
    assert (f"the LSTM at default init is behind the tanh RNN (-35.0 [{100 * interval.low:+.1f}, "
            f"{100 * interval.high:+.1f}] points") in text
    assert "the LSTM at forget_bias init is behind" in text and "the LSTM at chrono init is ahead of" in text
    assert "chrono init changes the LSTM by +52.0 [" in text and "forget gates are open" in text
    # Where the default LSTM is not behind, the explanation is not given.
    level[("LSTM", "default")] = 0.8
    rows = [{"cell": cell, "init": init, "seq_len": 200, "test_accuracy": value + 0.01 * (seed % 3)}
            for (cell, init), value in level.items() for seed in range(6)]
    assert "forget gates are open" not in " ".join(_distance_verdict(pd.DataFrame(rows), 200))


def test_the_answers_leave_the_modern_cells_to_their_own_section():
    """study() keeps the classic cells only: a minGRU among the tuned runs appears in no answer."""
    from gradlab.analysis.report.study import study

    frames = _tables()
    modern = {kind: frame[frame["cell"] == "GRU"].assign(
        cell="MINGRU", run_id=lambda part: part["run_id"].str.replace("GRU", "MINGRU"))
        for kind, frame in frames.items()}
    modern["summary"] = modern["summary"].assign(test_accuracy=0.99, best_val_accuracy=0.99)
    both = {kind: pd.concat([frames[kind], modern[kind]], ignore_index=True) for kind in frames}
    for kind in ("gradients", "gates", "history"):
        both[kind] = schema.conform(both[kind], kind).assign(sweep=both[kind]["sweep"])
    data = RunData(summary=both["summary"], history=both["history"], gradients=both["gradients"],
                   gates=both["gates"], jacobian=schema.empty("jacobian").assign(sweep=pd.Series(dtype="string")))
    split = study(data)
    assert set(split.headline.summary["cell"].astype(str)) == set(FACTOR)
    assert "MINGRU" not in set(split.data.gradients["cell"].astype(str))
    text = "\n".join(answers(split))
    assert "minGRU" not in text and "MINGRU" not in text
    assert "| GRU |" in text  # the classic cells are still answered
