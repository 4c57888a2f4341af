"""Per-timestep gradient norms through backprop-through-time, as tidy rows.

cuDNN's one-kernel ``nn.LSTM`` cannot say how much gradient
reaches step t from a loss at step T. gradlab's networks can:
:meth:`gradlab.nn.models.RecurrentNet.add_gradient_observer` hands every state's
*total* gradient dL/dh_t (and dL/dc_t for the LSTM cell state), through the
recurrence and through the layers above, to an observer during backward,
whichever unroll runs (the plain autograd one through tensor hooks, the hand-written
one from inside its backward loop). :class:`GradientRecorder` attaches such
an observer from the outside, only for the steps it records. Cells know
nothing of this.

Usage in a training loop::

    import tempfile
    from pathlib import Path

    import torch
    import torch.nn.functional as F

    from gradlab import GradientRecorder, RNNModel
    from gradlab.store.io import write_table

    model = RNNModel("LSTM", input_size=3, hidden_size=8, output_size=2)
    optimiser = torch.optim.Adam(model.parameters())
    batches = [(torch.randn(4, 5, 3), torch.randint(0, 2, (4,))) for _ in range(20)]
    recorder = GradientRecorder(model, every=10, run_info={"run_id": "r0", "seed": 0})
    for step, (x, y) in enumerate(batches):
        with recorder.maybe_record(step, epoch=0):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    frame = recorder.frame()  # steps 0 and 10: 2 steps x 2 states (h, c) x 5 timesteps = 20 rows
    write_table(frame, Path(tempfile.mkdtemp()) / "gradients.parquet", kind="gradients")

For one forward and backward pass of any model, ``torch.nn.LSTM`` included,
:func:`gradlab.instruments.measure.record_gradients` does all of this in one call.

What one recorded step produces (table :data:`gradlab.store.schema.GRADIENTS`):
one row per layer, direction, state and timestep, so
``num_layers * num_directions * states * T`` rows, with ``states`` 2 for the
LSTM (``h`` and ``c``) and 1 otherwise. Conventions, all from
:mod:`gradlab.store.schema`:

- ``grad_norm`` is the L2 norm of dL/dh_t over the whole (B, H) tensor, where
  L is the mean-reduced loss (so it carries the loss's 1/B);
  ``grad_norm_per_sample`` is the mean over samples of each sample's own L2
  norm times B, i.e. the norm of the gradient of that sample's own loss.
- ``timestep`` is input time for both directions: the backward direction's
  state at ``timestep == t`` is the one computed after reading ``x_t``, so its
  last state is at ``timestep == 0``.
- ``ratio_to_last`` is ``grad_norm`` over the same layer/direction/state's
  ``grad_norm`` at that direction's last state (T-1 forward, 0 backward):
  Pascanu et al. (2013)'s ratio, comparable across runs. It is ``inf``/``nan``
  if the last state receives no gradient.
- For the LSTM, dL/dh_t holds c_t fixed, while dL/dc_t is the total
  derivative with respect to the cell state, *including* the path through
  h_t = o_t * tanh(c_t): the usual "delta c" of LSTM backprop, which also
  carries the gradient on to c_{t-1} through the forget gate.
- The plain autograd unroll reports no gradient for a state the loss does not
  depend on, so such a state has no row (this does not happen with the
  readouts of :class:`gradlab.nn.models.RNNModel`).

Cost and size: nothing is attached outside a recorded step, so unrecorded
steps cost nothing, and recording does not change which unroll runs, so the
parameter gradients are bitwise the same with and without it. A recorded step
adds one small reduction per state (each sample's norm) and one
device-to-host copy at the end of the step; see
``benchmarks/bench_recording.py``. Each recorded step
stores layers x directions x states x T rows; ``benchmarks/bench_recording.py``
prints what a row costs on disk and what a long Speech Commands run stores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradlab.instruments.parameters import unit_memory, unit_parameter_gradients
from gradlab.nn.models import RecurrentNet, StateKey
from gradlab.store import schema

RUN_KEYS: tuple[str, ...] = ("run_id", "cell", "activation", "seed")

#: What :class:`GradientRecorder` writes for a ``run_id`` or ``seed`` it was not
#: given (the schema's columns cannot be empty; -1 is no seed anyone draws from).
DEFAULT_RUN_INFO: dict[str, object] = {"run_id": "unnamed", "seed": -1}


def recurrent_net(model: nn.Module) -> RecurrentNet:
    """The :class:`RecurrentNet` inside ``model`` (an ``RNNModel``) or ``model`` itself.

    Raises:
        TypeError: if ``model`` is neither.
    """
    if isinstance(model, RecurrentNet):
        return model
    net = getattr(model, "rnn", None)
    if isinstance(net, RecurrentNet):
        return net
    if isinstance(model, nn.RNNBase):
        raise TypeError(
            f"a torch.nn.{type(model).__name__} runs its whole sequence in one kernel, so its per-timestep states "
            "cannot be watched: for one forward and backward pass call gradlab.record_gradients(module, x); to "
            "watch it through training, train gradlab's copy, net = gradlab.nn.network.RecurrentNet.from_torch(module) "
            "(it loads the weights with load_torch_weights), instead of the module"
        )
    raise TypeError(f"expected an RNNModel or a RecurrentNet, got {type(model).__name__}")


def resolve_run_info(model: nn.Module, run_info: Mapping[str, object] | None) -> dict[str, object]:
    """Complete ``run_info`` with the model's ``cell`` and ``activation``.

    ``run_id`` and ``seed`` must be given; ``cell`` and ``activation`` default
    to the model's (and must agree with it when given). Further keys are kept
    and become constant columns after the schema's.

    Raises:
        ValueError: if ``run_id`` or ``seed`` is missing, or ``cell``/``activation``
            contradict the model.
    """
    net = recurrent_net(model)
    info = dict(run_info or {})
    missing = [key for key in ("run_id", "seed") if key not in info]
    if missing:
        raise ValueError(f"run_info is missing {missing}; it needs run_id and seed (cell and activation are optional)")
    for key, value in (("cell", net.mode), ("activation", net.activation)):
        if info.setdefault(key, value) != value:
            raise ValueError(f"run_info[{key!r}] is {info[key]!r} but the model's is {value!r}")
    return info


def with_run_columns(columns: dict[str, object], run_info: Mapping[str, object], rows: int) -> dict[str, object]:
    """Prepend ``run_info`` as constant columns of length ``rows`` to ``columns``."""
    constants = {key: np.full(rows, value, dtype=object if isinstance(value, str) else None)
                 for key, value in run_info.items()}
    return {**constants, **columns}


def typed_strings(columns: dict[str, object], kind: str) -> dict[str, object]:
    """``columns`` with each object column that table ``kind`` stores as ``string`` already of that dtype.

    :func:`gradlab.store.schema.conform` then casts nothing: a DataFrame-level
    cast costs milliseconds per table in pandas' per-column machinery, while a
    column of few distinct values becomes a string array by casting just its
    distinct values and taking them by code (missing values stay missing).
    """
    spec = schema.columns(kind)
    typed = dict(columns)
    for name, values in columns.items():
        if spec.get(name) == "string" and isinstance(values, np.ndarray) and values.dtype == object:
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
            typed[name] = pd.array(np.asarray(uniques, dtype=object), dtype="string").take(codes, allow_fill=True)
    return typed


def safe_norm(x: Tensor, dim: int) -> Tensor:
    """L2 norm along ``dim`` in float64 that neither underflows nor overflows.

    ``torch.linalg.vector_norm`` sums squares in the input's dtype: a float32
    gradient whose entries are below about 1e-19 reads as norm 0, and one above
    about 1e19 as inf, exactly the vanishing and exploding regimes gradlab
    measures. Squares of float32 (or bf16/fp16) values always fit in float64,
    so those are summed there; float64 values are first divided by their
    largest magnitude (as LAPACK's ``nrm2`` does), which keeps every square in
    [0, 1].
    """
    if x.dtype != torch.float64:
        return torch.linalg.vector_norm(x, dim=dim, dtype=torch.float64)
    scale = x.abs().amax(dim=dim, keepdim=True)
    usable = torch.where((scale > 0) & torch.isfinite(scale), scale, torch.ones_like(scale))
    norm = (torch.linalg.vector_norm(x / usable, dim=dim, keepdim=True) * usable).squeeze(dim)
    return torch.where(torch.isinf(scale.squeeze(dim)), scale.squeeze(dim), norm)


def newest_step_frame(chunks: list[dict[str, np.ndarray]], run_info: dict, step: int) -> pd.DataFrame | None:
    """The rows of ``step`` if the newest of ``chunks`` (one per recorded step) holds it, else None."""
    if not chunks or int(chunks[-1]["step"][0]) != step:
        return None
    return gradient_frame(chunks[-1:], run_info)


class GradientRecorder:
    """Records per-timestep norms of dL/dh_t (and dL/dc_t) on chosen training steps.

    Args:
        model: an :class:`gradlab.nn.models.RNNModel` or a :class:`RecurrentNet`
            (a ``torch.nn.LSTM`` cannot be watched: see :func:`recurrent_net`).
        every: record steps ``0, every, 2*every, ...`` (see :meth:`should_record`).
        run_info: the run's constant columns: ``run_id`` and ``seed`` (default
            :data:`DEFAULT_RUN_INFO`), ``cell`` and ``activation`` (default: the
            model's) and any further keys.
        parameters: also record, per unit, the gradient norm of the parameters that set its
            memory (:mod:`gradlab.instruments.parameters`; :meth:`parameter_frame`), read from their
            ``.grad`` at the end of each recorded block. Off by default.

    Recording never changes the gradients: the observer only reads them.
    """

    def __init__(self, model: nn.Module, *, every: int = 10, run_info: Mapping[str, object] | None = None,
                 parameters: bool = False) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.net = recurrent_net(model)
        self.every = every
        self.run_info = resolve_run_info(model, {**DEFAULT_RUN_INFO, **(run_info or {})})
        self._chunks: list[dict[str, np.ndarray]] = []
        self.record_parameters = bool(parameters)
        self._parameter_chunks: list[dict[str, np.ndarray]] = []
        # The step being recorded: empty outside `record`.
        self._handle: RemovableHandle | None = None
        self._sample_norms: dict[StateKey, Tensor] = {}  # (B,) norms of each sample's dL/d(state)
        self._repeated = False

    def should_record(self, step: int) -> bool:
        """Whether optimiser step ``step`` is recorded: every ``every``-th, starting at 0."""
        return step % self.every == 0

    @contextlib.contextmanager
    def record(self, step: int = 0, epoch: int = 0, *, inputs: Tensor | None = None) -> Iterator[None]:
        """Record the gradients of the forward and backward pass run inside the block.

        Run one forward and one ``backward`` (or ``autograd.grad``) of the
        model inside. The gradient observer is removed on exit, also when the
        block raises (then nothing is recorded).

        Args:
            step, epoch: the rows' ``step`` and ``epoch`` (default 0: the model as it is).
            inputs: the block's input batch (B, T, F); with ``parameters=True`` the minGRU/minLSTM units'
                ``memory`` (mean retention) is measured on it after the block (NaN without it).

        Raises:
            RuntimeError: on exit, if no gradient reached the network's states
                (the backward pass ran outside the block), or if a state's
                gradient arrived twice (two backward passes in one block).
        """
        for name, value in (("step", step), ("epoch", epoch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self._handle is not None:
            raise RuntimeError("GradientRecorder.record is already active; blocks cannot nest")
        self._clear_step()
        self._handle = self.net.add_gradient_observer(self._store)
        try:
            yield
        finally:
            self._handle.remove()
            self._handle = None
        self._collect(step, epoch, inputs)

    def maybe_record(self, step: int, epoch: int = 0, *,
                     inputs: Tensor | None = None) -> contextlib.AbstractContextManager[None]:
        """:meth:`record` on recorded steps, an empty context (no cost) otherwise."""
        if self.should_record(step):
            return self.record(step=step, epoch=epoch, inputs=inputs)
        return contextlib.nullcontext()

    def frame(self) -> pd.DataFrame:
        """All recorded steps so far, one row per observation (:data:`gradlab.store.schema.GRADIENTS`)."""
        return gradient_frame(self._chunks, self.run_info)

    def latest_frame(self, step: int) -> pd.DataFrame | None:
        """The rows of recorded step ``step`` if it is the newest recording, else None (cheap: one step's rows)."""
        return newest_step_frame(self._chunks, self.run_info, step)

    def parameter_frame(self) -> pd.DataFrame:
        """Per-unit memory-parameter gradients of the recorded steps (:data:`gradlab.store.schema.PARAMETER_GRADIENTS`).

        Empty unless the recorder was made with ``parameters=True``.
        """
        if not self._parameter_chunks:
            return schema.empty("parameter_gradients")
        columns = {name: np.concatenate([chunk[name] for chunk in self._parameter_chunks])
                   for name in self._parameter_chunks[0]}
        rows = len(columns["step"])
        return schema.conform(typed_strings(with_run_columns(columns, self.run_info, rows), "parameter_gradients"),
                              "parameter_gradients")

    def clear(self) -> None:
        """Forget the recorded steps (for example after saving them)."""
        self._chunks.clear()
        self._parameter_chunks.clear()

    # The gradient observer runs once per state on recorded steps only, so it
    # does as little as possible and never synchronises with the device.

    def _store(self, key: StateKey, grad: Tensor) -> None:
        # Keep each sample's norm (B,), never the gradient: the network may
        # reuse that tensor once we return.
        if key in self._sample_norms:
            self._repeated = True
        self._sample_norms[key] = safe_norm(grad.detach(), dim=1)

    def _clear_step(self) -> None:
        self._sample_norms = {}
        self._repeated = False

    def _collect(self, step: int, epoch: int, inputs: Tensor | None = None) -> None:
        sample_norms, repeated = self._sample_norms, self._repeated
        self._clear_step()
        if not sample_norms:
            raise RuntimeError(
                "no gradient reached the network's states: run the forward (with gradients enabled) "
                "and loss.backward() inside the `record` block"
            )
        if repeated:
            raise RuntimeError(
                "a state's gradient arrived twice in one recorded step; run one forward and one "
                "backward per `record` block"
            )
        stacked = torch.stack(list(sample_norms.values())).to(torch.float64)  # (N, B)
        norms = torch.stack((safe_norm(stacked, dim=1), stacked.sum(dim=1)), dim=1)
        values = norms.cpu().numpy()  # the one device-to-host copy of the step; (N, 2)
        self._chunks.append(gradient_rows(list(sample_norms), values[:, 0], values[:, 1], step=step, epoch=epoch))
        if self.record_parameters:
            # Before the update, so `memory` and the gradients describe the same parameters.
            memory = unit_memory(self.net, inputs)
            self._parameter_chunks.append(unit_parameter_gradients(self.net, step=step, epoch=epoch, memory=memory))


def gradient_rows(
    keys: list[StateKey], grad_norm: np.ndarray, per_sample: np.ndarray, *, step: int, epoch: int
) -> dict[str, np.ndarray]:
    """The columns of one recorded step (no run columns yet), rows in reading order.

    Args:
        keys: the states recorded.
        grad_norm: (N,) L2 norm of each state's dL/d(state) over the batch.
        per_sample: (N,) sum over samples of each sample's own norm (B times the mean).
        step, epoch: the step's coordinates.
    """
    layer = np.fromiter((k.layer for k in keys), dtype=np.int64, count=len(keys))
    direction = np.array([k.direction for k in keys], dtype=object)
    state = np.array([k.state for k in keys], dtype=object)
    timestep = np.fromiter((k.timestep for k in keys), dtype=np.int64, count=len(keys))

    # The last state of each direction: T-1 forward, 0 backward (input time).
    last_time = {"forward": int(timestep.max()), "backward": 0}
    last_norm = {
        (k.layer, k.direction, k.state): grad_norm[i]
        for i, k in enumerate(keys)
        if k.timestep == last_time[k.direction]
    }
    denominator = np.array([last_norm.get((k.layer, k.direction, k.state), np.nan) for k in keys])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = grad_norm / denominator

    rows = len(keys)
    # Rows in reading order: layer, forward before backward, h before c, time.
    order = np.lexsort((timestep, state == "c", direction == "backward", layer))
    return {
        "epoch": np.full(rows, epoch, dtype=np.int64),
        "step": np.full(rows, step, dtype=np.int64),
        "layer": layer[order],
        "direction": direction[order],
        "state": state[order],
        "timestep": timestep[order],
        "grad_norm": grad_norm[order],
        "grad_norm_per_sample": per_sample[order],
        "ratio_to_last": ratio[order],
    }


def gradient_frame(chunks: list[dict[str, np.ndarray]], run_info: Mapping[str, object]) -> pd.DataFrame:
    """Recorded steps (from :func:`gradient_rows`) as one table with ``run_info`` columns."""
    if not chunks:
        frame = schema.empty("gradients")
        for key, value in run_info.items():
            if key not in frame.columns:
                frame[key] = pd.Series([], dtype=object if isinstance(value, str) else None)
        return frame
    columns = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
    rows = len(columns["step"])
    return schema.conform(typed_strings(with_run_columns(columns, run_info, rows), "gradients"), "gradients")
