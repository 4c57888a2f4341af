"""One call that measures the per-timestep gradients of any recurrent model.

:func:`record_gradients` runs one forward and one backward pass and returns the
gradient table (:data:`gradlab.store.schema.GRADIENTS`) that
:class:`gradlab.instruments.recorder.GradientRecorder` writes during training.
A ``torch.nn.RNN``/``LSTM``/``GRU`` is measured through gradlab's copy of it
(:meth:`gradlab.nn.network.RecurrentNet.from_torch`), which computes the same
outputs while exposing every state; the module itself is left untouched.

Example::

    import torch
    from torch import nn
    import gradlab

    lstm = nn.LSTM(input_size=3, hidden_size=8, num_layers=2, batch_first=True)
    df = gradlab.record_gradients(lstm, torch.randn(4, 50, 3))
    df.groupby(["layer", "state"]).grad_norm.agg(["first", "last"])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradlab.instruments.recorder import GradientRecorder
from gradlab.nn.models import RecurrentNet, RNNModel, State

#: loss_fn(output, y) -> scalar loss.
LossFunction = Callable[[Tensor, Tensor], Tensor]


def record_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    loss_fn: LossFunction | None = None,
    hx: State | None = None,
    run_info: Mapping[str, object] | None = None,
    step: int = 0,
    epoch: int = 0,
) -> pd.DataFrame:
    """The norm of dL/dh_t (and dL/dc_t) at every timestep, layer and direction of one pass.

    Args:
        model: a gradlab :class:`~gradlab.nn.models.RNNModel` or
            :class:`~gradlab.nn.network.RecurrentNet`, or a ``torch.nn.RNN``,
            ``LSTM`` or ``GRU`` (every layer, both directions, its nonlinearity,
            ``bias`` and ``batch_first`` carry over; see below for what cannot).
        x: the input, in the model's layout: (B, T, F), or (T, B, F) for a
            module or ``RNNModel`` with ``batch_first=False``. A
            ``RecurrentNet`` always reads (B, T, F).
        y: a target. Without it the loss is the sum of the last layer's
            outputs at the last timestep, ``output[:, -1].sum()`` batch-first
            (``output[-1].sum()`` time-major): for a bidirectional model, the
            forward direction's last state and the backward direction's state
            after reading the last input. An ``RNNModel``'s head takes no part.
        loss_fn: with ``y``, the loss is ``loss_fn(output, y)``. ``output`` is
            what the model returns: a torch module's or ``RecurrentNet``'s output
            sequence (the first element of its return value, in its layout), an
            ``RNNModel``'s logits. Default: cross-entropy for an ``RNNModel``
            (class labels (B,), or (B, T) / (T, B) for the ``sequence``
            readout), mean squared error against a ``y`` shaped like the output
            otherwise. Both are mean-reduced, the loss the schema's
            ``grad_norm_per_sample`` assumes.
        hx: an initial state in torch's layout, (layers * directions, B, H)
            (a pair for the LSTM); zeros by default.
        run_info: ``run_id``, ``seed`` and further constant columns (see
            :class:`~gradlab.instruments.recorder.GradientRecorder`; all optional).
        step, epoch: the rows' ``step`` and ``epoch``.

    Returns:
        The gradient table, one row per layer, direction, state and timestep,
        with exactly :data:`gradlab.store.schema.GRADIENTS`'s columns plus any
        extra ``run_info`` keys. ``grad_norm_per_sample`` is, as the schema
        defines it, B times the mean of the per-sample norms (the norm of one
        sample's own loss when the loss is a batch mean); with the default
        summed loss each sample's own norm is that over B.

    The model's parameter ``.grad`` are left as they were: the pass
    differentiates with ``torch.autograd.grad``.

    Raises:
        TypeError: for a model of another kind, or ``loss_fn`` without ``y``.
        ValueError: for an input of the wrong shape, an ``nn.LSTM`` with
            ``proj_size > 0``, a multi-layer torch module with dropout in
            training mode (call ``module.eval()`` or set ``dropout=0``), or a
            ``y`` the default loss cannot use.
    """
    if y is None and loss_fn is not None:
        raise TypeError("loss_fn is called as loss_fn(output, y): pass y too, or neither for the default loss")
    net, batch_first, forward = _network(model)
    _check_input(x, net, batch_first, model)
    inputs = x.detach().requires_grad_(True)  # a leaf to differentiate into, whatever the parameters require
    recorder = GradientRecorder(net, every=1, run_info=run_info)
    with torch.enable_grad(), recorder.record(step, epoch):
        if y is None:
            outputs, _ = net(inputs if batch_first else inputs.transpose(0, 1), hx)  # (B, T, D*H)
            loss = outputs[:, -1].sum()
        else:
            output = forward(inputs, hx)
            loss = (loss_fn or _default_loss(model))(output, y)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {_describe(loss)}")
        # The parameters too, so the backward pass is the one training runs.
        owner = model if isinstance(model, (RNNModel, RecurrentNet)) else net
        wrt = [inputs, *(p for p in owner.parameters() if p.requires_grad)]
        torch.autograd.grad(loss.reshape(()), wrt, allow_unused=True)
    return recorder.frame()


def _network(model: nn.Module) -> tuple[RecurrentNet, bool, Callable[[Tensor, State | None], Tensor]]:
    """(the network whose states are watched, whether it reads batch-first, output(x, hx) -> the model's output)."""
    if isinstance(model, RNNModel):
        return model.rnn, model.batch_first, lambda x, hx: model(x, hx)
    if isinstance(model, RecurrentNet):
        return model, True, lambda x, hx: model(x, hx)[0]
    if isinstance(model, nn.RNNBase):
        if model.training and model.dropout > 0 and model.num_layers > 1:
            raise ValueError(
                f"this {type(model).__name__} drops out {model.dropout} of each layer's outputs in training mode, "
                "which gradlab's layers do not; call module.eval() (or build it with dropout=0) first"
            )
        net = RecurrentNet.from_torch(model)
        if model.batch_first:
            return net, True, lambda x, hx: net(x, hx)[0]
        return net, False, lambda x, hx: net(x.transpose(0, 1), hx)[0].transpose(0, 1)  # (T, B, D*H)
    raise TypeError(
        f"record_gradients measures a gradlab RNNModel or RecurrentNet, or a torch.nn.RNN, LSTM or GRU; "
        f"got {type(model).__name__}"
    )


def _check_input(x: Tensor, net: RecurrentNet, batch_first: bool, model: nn.Module) -> None:
    if isinstance(model, RNNModel):
        model.check_input(x)
    layout = "(batch, time, features)" if batch_first else "(time, batch, features)"
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[2] != net.input_size:
        fix = "give a single sequence a batch dimension" if x.dim() == 2 else "pass the input the model was built for"
        if isinstance(model, nn.RNNBase):
            fix += " (gradlab does not convert unbatched input)"
        raise ValueError(
            f"expected x of shape {layout} with features={net.input_size} (batch_first={batch_first}), "
            f"got shape {tuple(x.shape)}; {fix}"
        )
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}; convert it with x.float()")


def _default_loss(model: nn.Module) -> LossFunction:
    if isinstance(model, RNNModel):
        return _cross_entropy
    return _mean_squared_error


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    if logits.dim() == 3:  # the sequence readout: one prediction per step
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return F.cross_entropy(logits, y)


def _mean_squared_error(output: Tensor, y: Tensor) -> Tensor:
    if not isinstance(y, Tensor) or y.shape != output.shape:
        raise ValueError(
            f"the default loss with y is the mean squared error against a target shaped like the output "
            f"{tuple(output.shape)}, got {_describe(y)}; pass loss_fn=... for any other target"
        )
    return F.mse_loss(output, y)


def _describe(value: object) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
