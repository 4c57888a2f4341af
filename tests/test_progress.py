"""Progress output: a bar with the run's loss and accuracy on a terminal, one plain line per epoch (or run) in a log."""

from __future__ import annotations

import io

import pandas as pd

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.sweep import plan_runs, run_sweep
from gradlab.training import Callback, Progress, train_run
from gradlab.training.progress import ProgressBar


class Terminal(io.StringIO):
    """Captured output that says it is a terminal, as a TTY's standard error does."""

    def isatty(self) -> bool:
        return True


def tiny(epochs: int = 3) -> RunConfig:
    return RunConfig(
        model=ModelConfig("GRU", hidden_size=6, num_layers=1),
        data=DataConfig("distance", seq_len=8, n_train=48, n_validation=16, n_test=16),
        train=TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, record_every=None, val_every=None,
                          diagnostics=False),
        run_id="GRU-s0",
    )


def _mean(history: pd.DataFrame, epoch: int, metric: str) -> float:
    rows = history[(history["split"] == "train") & (history["metric"] == metric) & (history["epoch"] == epoch)]
    return float(rows["value"].mean())


def test_a_log_gets_one_line_per_epoch_and_no_carriage_returns():
    log = io.StringIO()
    result = train_run(tiny(), callbacks=[Progress(stream=log)])
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3
    history = result.history
    validation = history[(history["split"] == "validation") & (history["metric"] == "accuracy")]
    for epoch, line in enumerate(lines):
        assert line.startswith(f"GRU-s0: epoch {epoch + 1}/3, step {3 * (epoch + 1)}, ")
        assert f"loss {_mean(history, epoch, 'loss'):.4g}" in line
        assert f"accuracy {_mean(history, epoch, 'accuracy'):.4g}" in line
        last_validation = validation[validation["step"] == 3 * (epoch + 1)]["value"].item()
        assert f"validation accuracy {last_validation:.4g}" in line


class Peek(Callback):
    """Reads the bar's postfix after each step (it comes after Progress in the list)."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.postfixes = progress, []

    def on_step_end(self, state) -> None:
        self.postfixes.append((state.step, self.progress.bar.bar.postfix))


def test_a_terminal_gets_a_bar_whose_postfix_shows_loss_and_accuracy():
    terminal = Terminal()
    progress = Progress(stream=terminal)
    peek = Peek(progress)
    result = train_run(tiny(epochs=2), callbacks=[progress, peek])
    text = terminal.getvalue()
    assert "\r" in text and "epoch 1/" not in text  # a bar, not lines
    history = result.history.set_index(["split", "metric", "step"])["value"]
    assert [step for step, _ in peek.postfixes] == list(range(1, 7))
    for step, postfix in peek.postfixes:
        validated = 3 * ((step - 1) // 3)  # validation at step 0 and at each epoch end
        assert postfix == (f"loss={history['train', 'loss', step]:.4g}, acc={history['train', 'accuracy', step]:.4g}, "
                           f"val_loss={history['validation', 'loss', validated]:.4g}, "
                           f"val_acc={history['validation', 'accuracy', validated]:.4g}")


def test_a_disabled_bar_writes_nothing():
    for stream in (io.StringIO(), Terminal()):
        with ProgressBar(total=3, desc="x", unit="step", stream=stream, enabled=False) as bar:
            bar.update(1)
            bar.line("epoch 1")
        assert stream.getvalue() == ""


def test_a_sweep_in_a_log_writes_a_line_per_run_and_per_epoch(tmp_path, capsys):
    runs = plan_runs(tiny(epochs=2), modes=("GRU", "RNN_TANH"), seeds=(0,))
    log = io.StringIO()
    run_sweep(runs, tmp_path / "sweep", figures=False, progress=True, ensemble="off", stream=log)
    sweep_lines = [line for line in log.getvalue().splitlines() if line.startswith("sweep: ")]
    assert "\r" not in log.getvalue()
    assert [line.split(" (")[0] for line in sweep_lines] == ["sweep: 1/2 runs ended", "sweep: 2/2 runs ended"]
    run_lines = capsys.readouterr().err  # each run's Progress writes to standard error (captured: not a terminal)
    assert "\r" not in run_lines
    for run in runs:
        assert [line.split(",")[0] for line in run_lines.splitlines() if line.startswith(run.run_id + ":")] == \
            [f"{run.run_id}: epoch 1/2", f"{run.run_id}: epoch 2/2"]
