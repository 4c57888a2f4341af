"""Training: one run's loop (:mod:`~gradlab.training.loop`), its callbacks, evaluation and assembly.

``train_run(config, run_dir=...)`` trains one :class:`gradlab.config.RunConfig`
and writes its run folder; ``train_ensemble(configs, run_dirs=...)`` trains runs
that differ only in seed, learning rate, clipping or init as one batched model, each writing
the folder its single run would; :func:`fit` is the loop, for code that
assembles its own state and callbacks.
"""

from gradlab.training.callbacks import BestCheckpoint, Diagnostics, Divergence, GradientRecording, History, Progress
from gradlab.training.ensemble_run import train_ensemble
from gradlab.training.epoch_checkpoint import CHECKPOINT_EVERY, EpochCheckpoint
from gradlab.training.evaluate import batch_correct, batch_loss, evaluate, predictions
from gradlab.training.loggers import Logger, TensorBoardLogger
from gradlab.training.loop import Callback, TrainState, fit
from gradlab.training.run import RunResult, build_model, read_run, train_run

__all__ = [
    "BestCheckpoint",
    "CHECKPOINT_EVERY",
    "Callback",
    "Diagnostics",
    "Divergence",
    "EpochCheckpoint",
    "GradientRecording",
    "History",
    "Logger",
    "Progress",
    "RunResult",
    "TensorBoardLogger",
    "TrainState",
    "batch_correct",
    "batch_loss",
    "build_model",
    "evaluate",
    "fit",
    "predictions",
    "read_run",
    "train_ensemble",
    "train_run",
]
