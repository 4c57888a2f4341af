"""Loggers: callbacks that send a run's numbers to an experiment tracker, TensorBoard first.

A :class:`Logger` turns the loop's hooks into three calls a tracker
implements: :meth:`Logger.log_scalar`, :meth:`Logger.log_image` and
:meth:`Logger.close` (and optionally :meth:`Logger.flush`). What it logs, at
the run's step (optimiser updates, as in :mod:`gradlab.store.schema`):

- ``train/<metric>`` at every training step: the values of the ``history``
  table's train rows (``loss``, ``accuracy``, ``grad_norm``, ``lr`` and any
  regulariser's).
- ``validation/loss`` and ``validation/accuracy`` at every validation.
- At every recorded step (:meth:`gradlab.training.Callback.on_record`), at the
  recording's own step: ``gradients/first_to_last/layer<l>_<direction>``,
  |dL/dh| at the direction's first state over its last (forward: t = 0 over
  t = T-1; backward: t = T-1 over t = 0), i.e. the first state's
  ``ratio_to_last`` in the ``gradients`` table; and
  ``gradients/profile/layer<l>``, an image of ``grad_norm`` by timestep (log
  scale), one line per direction and state (h, and c for the LSTM).

:class:`TensorBoardLogger` writes TensorBoard event files with
``torch.utils.tensorboard`` (``pip install 'gradlab[tensorboard]'``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradlab.training.loop import Callback, TrainState

#: Okabe and Ito's colour-blind-safe colours, one per line of a profile image.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: How to install what :class:`TensorBoardLogger` needs.
TENSORBOARD_INSTALL = "pip install 'gradlab[tensorboard]'"


def first_to_last(rows: pd.DataFrame) -> dict[tuple[int, str], float]:
    """|dL/dh| at each layer and direction's first state over its last, from one recorded step's ``rows``.

    The first state is t = 0 for the forward direction and t = T-1 for the
    backward one (timesteps are input time); the value is that row's
    ``ratio_to_last``.
    """
    hidden = rows[rows["state"] == "h"]
    ratios = {}
    for (layer, direction), group in hidden.groupby(["layer", "direction"], sort=True):
        timesteps = group["timestep"]
        first = timesteps.idxmin() if direction == "forward" else timesteps.idxmax()
        ratios[(int(layer), str(direction))] = float(group.at[first, "ratio_to_last"])
    return ratios


def profile_figure(rows: pd.DataFrame, layer: int) -> Any:
    """A figure of ``grad_norm`` by timestep for one layer of one recorded step (a matplotlib ``Figure``).

    One line per direction and state, log-scaled norms. Pure: no pyplot, nothing saved.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.2), dpi=80)
    figure.subplots_adjust(left=0.16, bottom=0.16, right=0.97)  # fixed margins: a layout engine costs more
    axes = figure.add_subplot()
    chosen = rows[rows["layer"] == layer]
    for colour, ((direction, state), group) in zip(COLOURS, chosen.groupby(["direction", "state"], sort=False)):
        group = group.sort_values("timestep")
        axes.plot(group["timestep"], group["grad_norm"], color=colour, label=f"{direction} dL/d{state}")
    axes.set_yscale("log")
    axes.set_xlabel("timestep t")
    axes.set_ylabel("|dL/d state_t|")
    step = int(chosen["step"].iloc[0]) if len(chosen) else -1
    axes.set_title(f"layer {layer}, step {step}")
    axes.legend(fontsize="small")
    return figure


def figure_pixels(figure: Any) -> np.ndarray:
    """A matplotlib figure rendered to an (H, W, 3) uint8 RGB array (with the Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


class Logger(Callback):
    """A callback that logs a run's scalars and gradient images to a tracker (see the module docstring).

    Subclasses implement :meth:`log_scalar`, :meth:`log_image` and
    :meth:`close`; the hooks decide what is logged when. Add a logger after the
    standard callbacks (``train_run(..., callbacks=[logger])``), so that the
    final model's recording reaches it before it closes.

    Args:
        images: log the per-layer gradient profile image at every recorded step
            (rendering costs some tens of milliseconds per layer).
    """

    def __init__(self, *, images: bool = True) -> None:
        self.images = images

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        """Log one number under ``tag`` at ``step``."""
        raise NotImplementedError(f"{type(self).__name__} must implement log_scalar")

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log an (H, W, 3) uint8 RGB image under ``tag`` at ``step``."""
        raise NotImplementedError(f"{type(self).__name__} must implement log_image")

    def flush(self) -> None:
        """Make what was logged so far durable (called at every epoch end)."""

    def close(self) -> None:
        """Finish logging (called when the run's training ends)."""

    def on_train_batch(self, state: TrainState, values: dict[str, float]) -> None:
        for metric, value in values.items():
            self.log_scalar(f"train/{metric}", value, state.step)

    def on_validation(self, state: TrainState, loss: float, accuracy: float) -> None:
        self.log_scalar("validation/loss", loss, state.step)
        if not math.isnan(accuracy):
            self.log_scalar("validation/accuracy", accuracy, state.step)

    def on_record(self, state: TrainState, rows: pd.DataFrame) -> None:
        if rows.empty:
            return
        step = int(rows["step"].iloc[0])
        for (layer, direction), ratio in first_to_last(rows).items():
            self.log_scalar(f"gradients/first_to_last/layer{layer}_{direction}", ratio, step)
        if self.images:
            for layer in sorted(rows["layer"].unique()):
                self.log_image(f"gradients/profile/layer{layer}", figure_pixels(profile_figure(rows, int(layer))),
                               step)

    def on_epoch_end(self, state: TrainState) -> None:
        self.flush()

    def on_fit_end(self, state: TrainState) -> None:
        self.close()


def require_tensorboard() -> None:
    """Raise ``ModuleNotFoundError`` naming the install command unless TensorBoard can be written."""
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it
    except ImportError:
        raise ModuleNotFoundError(f"logging to TensorBoard needs the tensorboard package: {TENSORBOARD_INSTALL}") \
            from None


class TensorBoardLogger(Logger):
    """Logs a run into a TensorBoard log folder (``torch.utils.tensorboard.SummaryWriter``).

    A run that resumes from its checkpoint at step s drops what the folder
    holds after step s (``purge_step``), so the interrupted stretch is not
    shown twice; a run that starts from step 0 replaces the folder's earlier
    events. (A gradient recording of step s made after the checkpoint,
    before the interruption, can appear twice.)

    Args:
        log_dir: the run's log folder (``tensorboard --logdir`` its parent to compare runs).
        images: log the per-layer gradient profile images.

    Raises:
        ModuleNotFoundError: tensorboard is not installed (``pip install 'gradlab[tensorboard]'``).
    """

    def __init__(self, log_dir: str | os.PathLike, *, images: bool = True) -> None:
        super().__init__(images=images)
        require_tensorboard()
        self.log_dir = Path(log_dir)
        self.writer = None

    def on_fit_start(self, state: TrainState) -> None:
        # After EpochCheckpoint's on_fit_start, state.step is where a resumed run goes on.
        self.close()
        self._open(state.step + 1 if state.step else 0)

    def _open(self, purge_step: int | None = None) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        return self.writer

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        self._open().add_scalar(tag, value, global_step=step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self._open().add_image(tag, image, global_step=step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
