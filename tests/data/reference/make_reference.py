"""Write the reference runs that ``tests/test_reference_runs.py`` compares against.

Run once from the repository root (``python tests/data/reference/make_reference.py``)
with the code whose results the references pin. Each case's ``config.json``
spells out every option, so later changes of defaults cannot move them; the
test adds only the options that did not exist when the references were made,
set to their old behaviour.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FSDD = HERE.parents[2].parent / "shared" / "data" / "fsdd"

#: Tiny float64 runs covering the three cell families, two layers, both
#: bidirectional designs, clipping, SGD, step-wise validation, gradient
#: recording, gate statistics and Jacobian norms, synthetic and audio data.
CASES = {
    "lstm-distance": {
        "model": {"mode": "LSTM", "hidden_size": 4, "num_layers": 2, "bidirectional": "none", "readout": "last",
                  "init": "forget_bias", "forget_bias": 1.0, "bias": True},
        "data": {"dataset": "distance", "seq_len": 12, "distance": 9, "n_train": 40, "n_validation": 20,
                 "n_test": 20, "data_seed": 3, "noise_std": 0.0},
        "train": {"epochs": 2, "batch_size": 10, "lr": 0.01, "optimiser": "adam", "weight_decay": 0.0,
                  "clip_grad_norm": 0.5, "seed": 7, "record_every": 2, "val_every": 3, "jacobian_every": 1},
    },
    "gru-distance-interleaved": {
        "model": {"mode": "GRU", "hidden_size": 3, "num_layers": 1, "bidirectional": "interleaved",
                  "readout": "mean", "init": "orthogonal", "forget_bias": 1.0, "bias": True},
        "data": {"dataset": "distance", "seq_len": 8, "distance": 7, "n_train": 30, "n_validation": 10,
                 "n_test": 10, "data_seed": 0, "noise_std": 0.0},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "optimiser": "sgd", "weight_decay": 0.001,
                  "clip_grad_norm": None, "seed": 1, "record_every": 3, "val_every": None, "jacobian_every": None},
    },
    "rnn-tanh-fsdd": {
        "model": {"mode": "RNN_TANH", "hidden_size": 5, "num_layers": 2, "bidirectional": "none", "readout": "last",
                  "init": "default", "forget_bias": 1.0, "bias": True},
        "data": {"dataset": "fsdd", "words": ["one", "two", "three"], "takes": [0, 5, 10, 11], "normalise": True,
                 "n_mfcc": 20, "n_fft": 2048, "hop_length": 512, "amplitude_scale": 1.0, "split": "takes",
                 "pad": "end", "delay": 0, "test_speaker": None},
        "train": {"epochs": 2, "batch_size": 12, "lr": 0.003, "optimiser": "adam", "weight_decay": 0.0,
                  "clip_grad_norm": None, "seed": 0, "record_every": 1, "val_every": 2, "jacobian_every": None},
    },
}

#: Options every case shares; written into each config.json in full.
COMMON_TRAIN = {"device": "cpu", "amp": False, "dtype": "float64", "deterministic": False, "diagnostics": True,
                "diagnostics_batch": 6, "jacobian_batch": 3, "jacobian_max_len": 128, "max_steps_per_epoch": None,
                "max_eval_batches": None}


def main() -> None:
    import torch

    from gradlab.config import RunConfig
    from gradlab.training import train_run

    torch.set_num_threads(1)
    cache = Path(tempfile.mkdtemp())
    for name, case in CASES.items():
        values = json.loads(json.dumps(case))
        values["train"].update(COMMON_TRAIN)
        if values["data"]["dataset"] == "fsdd":
            values["data"]["data_dir"] = str(FSDD)
            values["data"]["cache_dir"] = str(cache)
        config = RunConfig.from_dict({**values, "run_id": name})
        out = HERE / name
        shutil.rmtree(out, ignore_errors=True)
        work = Path(tempfile.mkdtemp()) / name
        result = train_run(config, run_dir=work)
        out.mkdir()
        full = config.to_dict()
        full["data"]["data_dir"] = None  # machine-specific; the test points it at the FSDD folder
        full["data"]["cache_dir"] = None
        (out / "config.json").write_text(json.dumps(full, indent=2) + "\n")
        for kind in ("history", "gradients", "gates", "jacobian"):
            getattr(result, kind).to_parquet(out / f"{kind}.parquet", index=False)
        (out / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
        print(name, result.metrics["status"], result.metrics["test_accuracy"], file=sys.stderr)
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
