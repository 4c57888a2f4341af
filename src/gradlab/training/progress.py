"""Progress output: a tqdm bar on a terminal, plain lines in a log.

tqdm redraws its bar with carriage returns. On a terminal that is what a bar
is; in a redirected log (standard error not a TTY) every redraw stays in the
file, and a sweep's nested bars left tens of kilobytes of them per run.
:class:`ProgressBar` therefore draws a bar only where someone watches it (a
terminal, or a Jupyter kernel, where tqdm draws a widget), and elsewhere
writes only the lines it is given, one per epoch or per finished run.
:class:`Progress` is the run's callback built on it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from gradlab.training.loop import Callback, TrainState


def interactive(stream: Any) -> bool:
    """Whether ``stream`` is watched live: a terminal, or standard error inside a Jupyter kernel."""
    if stream is sys.stderr and "ipykernel" in sys.modules:
        return True  # tqdm.auto draws a notebook widget there, which leaves no carriage returns
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class ProgressBar:
    """A tqdm bar on an interactive stream; otherwise only the lines given to :meth:`line`.

    Args:
        total: units of the whole task (steps, runs).
        initial: units already done (a resumed run, a resumed sweep).
        desc: the label; it starts every line written to a log.
        unit: what is counted.
        leave: keep the finished bar on the terminal.
        stream: where to write (default: standard error, read when the bar is made).
        enabled: False shows and writes nothing.
    """

    def __init__(self, *, total: int, initial: int = 0, desc: str, unit: str, leave: bool = False,
                 stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.desc, self.enabled, self.bar = desc, enabled, None
        if enabled and interactive(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=leave, unit=unit, dynamic_ncols=True,
                            file=self.stream)

    def update(self, count: int = 1) -> None:
        """Advance the bar by ``count`` units (nothing in a log)."""
        if self.bar is not None:
            self.bar.update(count)

    def postfix(self, values: dict[str, Any]) -> None:
        """Show ``values`` after the bar (shown at its next redraw; nothing in a log)."""
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def line(self, text: str) -> None:
        """Write ``desc: text`` as one line, in a log only (a terminal has the bar)."""
        if self.enabled and self.bar is None:
            print(f"{self.desc}: {text}", file=self.stream, flush=True)

    def close(self) -> None:
        """Remove (or, with ``leave``, finish) the bar."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _format(value: float) -> str:
    return f"{value:.4g}"


class Progress(Callback):
    """The run's progress: a bar over its steps with the latest loss and accuracy, or one line per epoch in a log.

    On a terminal the bar's postfix shows the last training batch's ``loss``
    and ``acc`` and the last validation's ``val_loss`` and ``val_acc``. In a
    log each epoch gives one line: the mean loss and accuracy of the epoch's
    training batches, then the epoch's last validation, and the seconds the
    epoch took.

    Args:
        stream: where to write (default: standard error).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.bar: ProgressBar | None = None
        self.shown: dict[str, dict[str, str]] = {"train": {}, "validation": {}}  # the postfix's two halves
        self.sums: dict[str, float] = {}
        self.batches = 0
        self.validation: tuple[float, float] | None = None
        self.epoch_start = time.perf_counter()

    def on_fit_start(self, state: TrainState) -> None:
        train = state.config.train
        per_epoch = math.ceil(len(state.data.train) / train.batch_size)
        if train.max_steps_per_epoch is not None:
            per_epoch = min(per_epoch, train.max_steps_per_epoch)
        self.bar = ProgressBar(total=per_epoch * train.epochs, initial=per_epoch * state.epochs_done,
                               desc=state.config.run_id, unit="step", stream=self.stream)
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.sums, self.batches, self.epoch_start = {}, 0, time.perf_counter()

    def on_train_batch(self, state: TrainState, values: dict[str, float]) -> None:
        self.batches += 1
        for metric in ("loss", "accuracy"):
            if metric in values:
                self.sums[metric] = self.sums.get(metric, 0.0) + values[metric]
        self.shown["train"] = {"loss": _format(values["loss"])}
        if "accuracy" in values:
            self.shown["train"]["acc"] = _format(values["accuracy"])

    def on_step_end(self, state: TrainState) -> None:
        self.bar.postfix({**self.shown["train"], **self.shown["validation"]})
        self.bar.update(1)

    def on_validation(self, state: TrainState, loss: float, accuracy: float) -> None:
        self.validation = (loss, accuracy)
        self.shown["validation"] = {"val_loss": _format(loss)}
        if not math.isnan(accuracy):
            self.shown["validation"]["val_acc"] = _format(accuracy)

    def on_epoch_end(self, state: TrainState) -> None:
        parts = [f"epoch {state.epochs_done}/{state.config.train.epochs}", f"step {state.step}"]
        for metric, total in self.sums.items():  # loss, then accuracy where there is one
            parts.append(f"{metric} {_format(total / self.batches)}")
        if self.validation is not None:
            loss, accuracy = self.validation
            parts.append(f"validation loss {_format(loss)}")
            if not math.isnan(accuracy):
                parts.append(f"validation accuracy {_format(accuracy)}")
        parts.append(f"{time.perf_counter() - self.epoch_start:.1f} s")
        self.bar.line(", ".join(parts))
        self._new_epoch()

    def on_fit_end(self, state: TrainState) -> None:
        if state.diverged_step is not None:
            self.bar.line(f"diverged at step {state.diverged_step}")
        self.bar.close()
