"""Callbacks that measure and act on the recurrence's dynamics during training (all off by default).

- :class:`LyapunovRecording`: the Lyapunov spectrum of every layer's
  recurrence (:func:`gradlab.instruments.diagnostics.lyapunov_spectrum`) on a few
  validation samples at initialisation, every ``lyapunov_every`` steps and at
  the end (table ``lyapunov``).
- :class:`VanishingGradientRegulariser`: Pascanu et al. (2013)'s Omega, weight
  ``omega_weight``: the state gradients dL/ds_t of each step's own backward
  pass are captured, held constant, and the gradient of weight * Omega is added
  to the parameters' before clipping and the update.
- :class:`GradientFlossing`: Engelken (2023): weight ``floss_weight`` times
  the sum of squared leading ``floss_k`` Lyapunov exponents of the batch's
  trajectories, added to the loss every ``floss_every`` steps until
  ``floss_until`` (or throughout).

Their values (``omega``, ``floss``) join the training rows of ``history``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from gradlab.instruments.lyapunov import lyapunov_spectrum
from gradlab.instruments.recorder import recurrent_net
from gradlab.instruments.remedies import gradient_flossing_loss, vanishing_gradient_regulariser
from gradlab.nn.unroll import StateKey
from gradlab.training.callbacks import _saved_rows
from gradlab.training.loop import Callback, TrainState
from gradlab.training.table_rows import TableRows


class LyapunovRecording(Callback):
    """The Lyapunov spectrum at step 0, every ``every`` steps, and after the last step."""

    def __init__(self, every: int, k: int | None) -> None:
        self.every, self.k = every, k
        self.rows = TableRows("lyapunov")
        self.last_step = -1

    def record(self, state: TrainState) -> None:
        samples = state.data.validation.x[: state.config.train.diagnostics_batch]
        self.rows.add(lyapunov_spectrum(state.model, samples, self.k, run_info=state.run_info,
                                             step=state.step, epoch=state.epoch))
        self.last_step = state.step

    def on_validation(self, state: TrainState, loss: float, accuracy: float) -> None:
        if state.step == 0:
            self.record(state)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self.record(state)

    def on_fit_end(self, state: TrainState) -> None:
        if state.diverged_step is None and self.last_step != state.step:
            self.record(state)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"lyapunov": self.rows.frame()}

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "rows": self.rows.state_dict()}

    def load_state_dict(self, saved: dict[str, Any], state: TrainState) -> None:
        if "rows" in saved:
            self.rows.load_state_dict(saved["rows"])
        else:
            self.rows.replace(_saved_rows(state, "lyapunov"))
        self.last_step = saved.get("last_step", -1)


class VanishingGradientRegulariser(Callback):
    """Adds the gradient of ``weight`` * Omega (Pascanu et al. 2013) to each step's gradients."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.value = float("nan")

    @contextlib.contextmanager
    def _capture(self, state: TrainState) -> Iterator[None]:
        net = recurrent_net(state.model)
        found: dict[tuple[int, str, str], dict[int, Tensor]] = {}

        def keep(key: StateKey, grad: Tensor) -> None:
            found.setdefault((key.layer, key.direction, key.state), {})[key.timestep] = grad.detach()

        handle = net.add_gradient_observer(keep)
        try:
            yield
        finally:
            handle.remove()
        x = state.batch[0]
        steps = x.shape[1]
        gradients = {}
        for layer in range(net.num_layers):
            for direction in net.directions:
                parts = [found[(layer, direction, name)] for name in ("h", "c") if (layer, direction, name) in found]
                gradients[(layer, direction)] = torch.cat(
                    [torch.stack([part[t] for t in range(steps)], dim=1) for part in parts], dim=2)
        omega = vanishing_gradient_regulariser(state.model, x, gradients)
        (self.weight * omega).backward()  # accumulates into the task loss's gradients
        self.value = float(omega.detach())

    def step_context(self, state: TrainState) -> contextlib.AbstractContextManager:
        return self._capture(state)

    def extra_values(self, state: TrainState) -> dict[str, float]:
        return {"omega": self.value}


class GradientFlossing(Callback):
    """Adds ``weight`` times the squared leading Lyapunov exponents to the loss, on a schedule."""

    def __init__(self, weight: float, k: int, every: int, until: int | None) -> None:
        self.weight, self.k, self.every, self.until = weight, k, every, until
        self.value = float("nan")

    def extra_loss(self, state: TrainState, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        self.value = float("nan")
        if state.step % self.every or (self.until is not None and state.step >= self.until):
            return None
        floss = gradient_flossing_loss(state.model, x, self.k)
        self.value = float(floss.detach())
        return self.weight * floss

    def extra_values(self, state: TrainState) -> dict[str, float]:
        return {"floss": self.value}
