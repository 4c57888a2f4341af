"""Hand-built gradlab tables and a fake runs directory for the analysis tests.

The fake gradient norms follow a known geometric profile,
``grad_norm(t) = scale * FACTOR[cell, state] ** (T - 1 - t)``, so the
first-to-last ratio of every run is exactly ``FACTOR ** (T - 1)`` whatever the
seed, and tests can check measured values against that closed form.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gradlab.store import schema

#: Per-step gradient factor of each (cell, state): tanh vanishes fastest.
FACTOR: dict[tuple[str, str], float] = {
    ("RNN_TANH", "h"): 0.5,
    ("RNN_RELU", "h"): 0.8,
    ("LSTM", "h"): 0.7,
    ("LSTM", "c"): 0.95,
    ("GRU", "h"): 0.9,
    # modern cells: DIAGONAL keeps the most, MINGRU loses faster than any classic cell, MINLSTM matches the GRU
    ("DIAGONAL", "h"): 0.99,
    ("MINGRU", "h"): 0.4,
    ("MINLSTM", "h"): 0.9,
}
#: Base test accuracy of each cell; seed s adds 0.01 * s.
ACCURACY: dict[str, float] = {"RNN_TANH": 0.40, "RNN_RELU": 0.50, "LSTM": 0.80, "GRU": 0.90, "DIAGONAL": 0.95,
                              "MINGRU": 0.30, "MINLSTM": 0.90}
#: Slope of each modern cell's per-unit parameter-gradient norm in its memory (sign: grows or shrinks with it).
MEMORY_SLOPE: dict[str, float] = {"DIAGONAL": 4.0, "MINGRU": -4.0, "MINLSTM": 0.0}
MEMORY_PARAMETER: dict[str, str] = {"DIAGONAL": "weight_hh", "MINGRU": "z", "MINLSTM": "f"}
GATES: dict[str, tuple[str, ...]] = {"LSTM": ("i", "f", "g", "o"), "GRU": ("r", "z", "n")}
CELLS: tuple[str, ...] = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
STEPS: tuple[int, ...] = (0, 4, 8, 12)
EPOCHS = 3
STEPS_PER_EPOCH = 4
NUM_CLASSES = 10
#: Validation and test examples of the fake dataset.
N_EXAMPLES = 100


def activation(cell: str) -> str:
    return cell[4:].lower() if cell.startswith("RNN_") else "tanh"


def states(cell: str) -> tuple[str, ...]:
    return ("h", "c") if cell == "LSTM" else ("h",)


def _keys(run_id: str, cell: str, seed: int) -> dict[str, object]:
    return {"run_id": run_id, "cell": cell, "activation": activation(cell), "seed": seed}


def gradients_frame(run_id: str, cell: str, seed: int, *, seq_len: int = 6, steps=STEPS, num_layers: int = 1,
                    jitter: float = 0.0) -> pd.DataFrame:
    """``jitter`` > 0 scales the per-step factor by (1 - jitter * seed): ratios then differ between seeds."""
    rows = []
    for step in steps:
        epoch = max(step - 1, 0) // STEPS_PER_EPOCH
        for layer in range(num_layers):
            for state in states(cell):
                factor = FACTOR[(cell, state)] * (1 - jitter * seed)
                for t in range(seq_len):
                    norm = 0.1 * (1 + 0.1 * seed) * (1 + step / 10) * factor ** (seq_len - 1 - t)
                    rows.append({**_keys(run_id, cell, seed), "epoch": epoch, "step": step, "layer": layer,
                                 "direction": "forward", "state": state, "timestep": t, "grad_norm": norm,
                                 "grad_norm_per_sample": norm * 8, "ratio_to_last": factor ** (seq_len - 1 - t)})
    return schema.conform(pd.DataFrame(rows), "gradients")


def gates_frame(run_id: str, cell: str, seed: int, *, seq_len: int = 6, steps=STEPS) -> pd.DataFrame:
    rows = []
    for step in steps:
        for gate in GATES.get(cell, ("h",)):
            for t in range(seq_len):
                for stat, value in (("mean", 0.5 + 0.01 * t), ("saturated", 0.1 * seed + 0.01 * step)):
                    rows.append({**_keys(run_id, cell, seed), "epoch": 0, "step": step, "layer": 0,
                                 "direction": "forward", "timestep": t, "gate": gate, "stat": stat, "value": value})
    return schema.conform(pd.DataFrame(rows), "gates")


def jacobian_frame(run_id: str, cell: str, seed: int, *, seq_len: int = 6, steps=STEPS) -> pd.DataFrame:
    rows = []
    for step in steps:
        for t in range(seq_len):
            distance = seq_len - 1 - t
            rows.append({**_keys(run_id, cell, seed), "epoch": 0, "step": step, "layer": 0, "direction": "forward",
                         "timestep": t, "distance": distance, "spectral_norm": FACTOR[(cell, "h")] ** distance})
    return schema.conform(pd.DataFrame(rows), "jacobian")


def validation_accuracy(cell: str, seed: int, epoch: int) -> float:
    """Rises linearly to the cell's final test accuracy at the last epoch."""
    return ACCURACY[cell] * (epoch + 1) / EPOCHS + 0.01 * seed


def history_frame(run_id: str, cell: str, seed: int) -> pd.DataFrame:
    rows = [{**_keys(run_id, cell, seed), "step": 0, "epoch": 0, "split": "validation", "metric": "accuracy",
             "value": 1 / 3, "wall_time": 0.0}]
    for epoch in range(EPOCHS):
        for k in range(1, STEPS_PER_EPOCH + 1):
            step = epoch * STEPS_PER_EPOCH + k
            # Training loss per step; its epoch mean is 1 / (epoch + 1) + 0.1 * seed.
            loss = 1 / (epoch + 1) + 0.1 * seed + (0.05 if k % 2 else -0.05)
            rows.append({**_keys(run_id, cell, seed), "step": step, "epoch": epoch, "split": "train",
                         "metric": "loss", "value": loss, "wall_time": float(step)})
        rows.append({**_keys(run_id, cell, seed), "step": (epoch + 1) * STEPS_PER_EPOCH, "epoch": epoch,
                     "split": "validation", "metric": "accuracy", "value": validation_accuracy(cell, seed, epoch),
                     "wall_time": float(epoch)})
    return schema.conform(pd.DataFrame(rows), "history")


def summary_row(run_id: str, cell: str, seed: int, **config) -> dict[str, object]:
    accuracy = ACCURACY[cell] + 0.01 * seed
    row = {**_keys(run_id, cell, seed), "dataset": "fake_digits", "bidirectional": "none", "readout": "last",
           "normalise": True, "hidden_size": 8, "num_layers": 1, "seq_len": 6, "status": "finished",
           "diverged_step": None, "best_val_accuracy": accuracy, "best_epoch": EPOCHS - 1,
           "test_accuracy": accuracy, "final_test_accuracy": accuracy - 0.02,
           "n_params": {"RNN_TANH": 100, "RNN_RELU": 100, "LSTM": 400, "GRU": 300}.get(cell, 200),
           "num_classes": NUM_CLASSES, "n_validation": N_EXAMPLES, "n_test": N_EXAMPLES,
           "time_per_epoch": {"RNN_TANH": 1.0, "RNN_RELU": 1.0, "LSTM": 3.0, "GRU": 2.0}.get(cell, 1.5)}
    row.update(config)
    return row


def parameter_gradients_frame(run_id: str, cell: str, seed: int, *, units: int = 8, steps=STEPS) -> pd.DataFrame:
    """Per-unit rows: memory spread over (0.1, 0.99), log10 grad_norm = MEMORY_SLOPE * memory plus a seed wobble;
    classic cells have ``weight_hh`` rows without a memory (NaN), as runs write them."""
    rows = []
    for step in steps:
        for unit in range(units):
            memory = 0.1 + 0.89 * unit / (units - 1) if cell in MEMORY_SLOPE else float("nan")
            wobble = 0.05 * ((unit * 7 + seed * 3) % 5 - 2)
            log_norm = MEMORY_SLOPE.get(cell, 0.0) * (0.0 if memory != memory else memory) + wobble
            rows.append({**_keys(run_id, cell, seed), "epoch": 0, "step": step, "layer": 0, "direction": "forward",
                         "parameter": MEMORY_PARAMETER.get(cell, "weight_hh"), "unit": unit,
                         "grad_norm": 10.0 ** (log_norm - 3), "memory": memory})
    return schema.conform(pd.DataFrame(rows), "parameter_gradients")


def predictions_frame(run_id: str, cell: str, seed: int, *, examples: int = N_EXAMPLES) -> pd.DataFrame:
    """Validation and test predictions: exactly ``round(accuracy * examples)`` correct, the rest off by one class."""
    rows = []
    accuracy = ACCURACY[cell] + 0.01 * seed
    for split in ("validation", "test"):
        correct = round(accuracy * examples)
        for example in range(examples):
            label = example % NUM_CLASSES
            # Which examples are right depends on the seed, as with real runs.
            right = (example + 7 * seed) % examples < correct
            predicted = label if right else (label + 1) % NUM_CLASSES
            probabilities = [0.5 / (NUM_CLASSES - 1)] * NUM_CLASSES
            probabilities[predicted] = 0.5
            rows.append({**_keys(run_id, cell, seed), "split": split, "example": example, "label": label,
                         "predicted": predicted, "correct": right, "label_probability": probabilities[label],
                         "probabilities": probabilities})
    return schema.conform(pd.DataFrame(rows), "predictions")


def run_id_of(cell: str, seed: int, seq_len: int | None = None) -> str:
    return f"{cell.lower()}-s{seed}" + (f"-T{seq_len}" if seq_len is not None else "")


def all_frames(cells=CELLS, seeds=(0, 1, 2), *, seq_len: int = 6, num_layers: int = 1) -> dict[str, pd.DataFrame]:
    """Every table of a sweep over ``cells`` x ``seeds``, concatenated, without a sweep column."""
    runs = [(run_id_of(cell, seed), cell, seed) for cell in cells for seed in seeds]
    return {
        "gradients": pd.concat([gradients_frame(*run, seq_len=seq_len, num_layers=num_layers) for run in runs], ignore_index=True),
        "gates": pd.concat([gates_frame(*run, seq_len=seq_len) for run in runs], ignore_index=True),
        "jacobian": pd.concat([jacobian_frame(*run, seq_len=seq_len) for run in runs], ignore_index=True),
        "history": pd.concat([history_frame(*run) for run in runs], ignore_index=True),
        "summary": schema.conform(pd.DataFrame([summary_row(*run, seq_len=seq_len) for run in runs]), "summary"),
    }


def write_sweep(
    root: Path,
    name: str = "sweep",
    *,
    cells=CELLS,
    seeds=(0, 1),
    seq_lens=(6,),
    tables=("history", "gradients", "gates", "jacobian", "predictions"),
    summary_parquet: bool = True,
    summary: dict | None = None,
    jitter: float = 0.0,
) -> Path:
    """Write a fake sweep in the documented layout and return its folder.

    With ``summary_parquet=False`` the summary exists only as each run's metrics.json. ``summary`` adds or
    replaces summary columns of every run (``{"dataset": "distance"}``); ``jitter``: see :func:`gradients_frame`.
    """
    extra = dict(summary or {})
    sweep = root / name
    sweep.mkdir(parents=True)
    (sweep / schema.SWEEP_FILES["sweep"]).write_text(json.dumps({"cells": list(cells), "seeds": list(seeds)}))
    rows = []
    for seq_len in seq_lens:
        for cell in cells:
            for seed in seeds:
                run_id = run_id_of(cell, seed, seq_len if len(seq_lens) > 1 else None)
                run = sweep / run_id
                run.mkdir()
                (run / schema.RUN_FILES["config"]).write_text(json.dumps({"cell": cell, "seed": seed, "layout": 2}))
                makers = {
                    "history": lambda: history_frame(run_id, cell, seed),
                    "gradients": lambda: gradients_frame(run_id, cell, seed, seq_len=seq_len, jitter=jitter),
                    "parameter_gradients": lambda: parameter_gradients_frame(run_id, cell, seed),
                    "gates": lambda: gates_frame(run_id, cell, seed, seq_len=seq_len),
                    "jacobian": lambda: jacobian_frame(run_id, cell, seed, seq_len=seq_len),
                    "predictions": lambda: predictions_frame(run_id, cell, seed),
                }
                for kind in tables:
                    makers[kind]().to_parquet(run / schema.RUN_FILES[kind])
                row = summary_row(run_id, cell, seed, seq_len=seq_len, **extra)
                (run / schema.RUN_FILES["metrics"]).write_text(json.dumps(row))
                rows.append(row)
    if summary_parquet:
        schema.conform(pd.DataFrame(rows), "summary").to_parquet(sweep / schema.SWEEP_FILES["summary"])
    return sweep
