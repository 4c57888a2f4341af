"""Loss terms against vanishing and exploding gradients, for a training loop to add.

- :func:`vanishing_gradient_regulariser`: Pascanu, Mikolov & Bengio (2013),
  "On the difficulty of training recurrent neural networks", eq. 9:

      Omega = sum_k ( ||dL/ds_{k+1} . ds_{k+1}/ds_k|| / ||dL/ds_{k+1}|| - 1 )^2,

  which asks every step of the recurrence to carry the loss gradient back
  with its norm intact. As in the paper, the incoming gradients dL/ds_{k+1}
  are constants (:func:`loss_state_gradients` measures them; a gradient
  observer can capture them during the training step's own backward for
  free); only the one-step Jacobians are differentiated, through a double
  backward of one cell step on the plain-autograd trajectory. So it works
  with either unroll: the hand-written BPTT (``handwritten_bptt=True``) may
  still run the training loss.
- :func:`gradient_flossing_loss`: Engelken (2023), "Gradient flossing":
  the sum of the squares of the k leading Lyapunov exponents of every layer's
  recurrence (:mod:`gradlab.instruments.lyapunov`), differentiated through the QR method,
  which pushes them towards zero, where gradients neither vanish nor explode.

Each is ``(model, x, ...) -> scalar Tensor``: a callback adds ``weight *
term`` to the loss (or calls ``backward`` on it) every N steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradlab.instruments.lyapunov import lyapunov_exponents
from gradlab.instruments.recorder import recurrent_net
from gradlab.nn.unroll import LayerTrajectory, StateKey

Key = tuple[int, str]


def loss_state_gradients(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> dict[Key, Tensor]:
    """dL/ds_t for every layer, direction and t, with L = ``loss_fn(model(x), target)``.

    ``model`` must be an ``RNNModel`` (something whose output the loss reads).
    Parameter gradients (``.grad``) are left untouched.

    Returns:
        ``{(layer, direction): (B, T, n)}`` detached, in input time; n = H, or
        2H for the LSTM (dL/dh_t then dL/dc_t).
    """
    net = recurrent_net(model)
    found: dict[tuple[int, str, str], list[Tensor | None]] = {}
    steps = x.shape[1]

    def keep(key: StateKey, grad: Tensor) -> None:
        found.setdefault((key.layer, key.direction, key.state), [None] * steps)[key.timestep] = grad.detach().clone()

    handle = net.add_gradient_observer(keep)
    try:
        with torch.enable_grad():
            loss = loss_fn(model(x), target)
            parameters = [p for p in net.parameters() if p.requires_grad]
            torch.autograd.grad(loss, parameters, allow_unused=True)
    finally:
        handle.remove()
    result = {}
    for layer in range(net.num_layers):
        for direction in net.directions:
            parts = [found[(layer, direction, name)] for name in ("h", "c") if (layer, direction, name) in found]
            if not parts or any(g is None for part in parts for g in part):
                raise ValueError(f"the loss does not reach every state of layer {layer} {direction}")
            result[(layer, direction)] = torch.cat([torch.stack(part, dim=1) for part in parts], dim=2)
    return result


def vanishing_gradient_regulariser(model: nn.Module, x: Tensor, state_gradients: dict[Key, Tensor]) -> Tensor:
    """Pascanu et al.'s Omega, summed over steps and layers, averaged over samples.

    For each layer and direction, every step k after the first in reading
    order contributes (||v_k J_k|| / ||v_k|| - 1)^2 per sample, with v_k the
    constant dL/ds_k from ``state_gradients`` and J_k = ds_k / ds_{k-1} at the
    model's current parameters on its trajectory over ``x``. Terms whose
    v_k is zero are left out. Differentiable with respect to the parameters;
    works with either unroll (module docstring).

    Args:
        model: an ``RNNModel`` or ``RecurrentNet``.
        x: the batch (B, T, F) the gradients were measured on.
        state_gradients: from :func:`loss_state_gradients` (or captured by a
            gradient observer in the same layout).

    Returns:
        A scalar tensor.
    """
    net = recurrent_net(model)
    total = x.new_zeros(())
    with torch.enable_grad():
        for key, trajectory in net.trajectories(x).items():
            total = total + _omega(trajectory, state_gradients[key])
    return total


def _omega(trajectory: LayerTrajectory, incoming: Tensor) -> Tensor:
    cell = trajectory.cell
    batch, steps, _ = trajectory.h.shape
    if tuple(incoming.shape) != (batch, steps, cell.state_size):
        raise ValueError(f"state gradients of shape {tuple(incoming.shape)} do not fit a trajectory of "
                         f"shape {(batch, steps, cell.state_size)} (batch, time, state size)")
    first = steps - 1 if trajectory.reverse else 0
    keep = torch.arange(steps, device=incoming.device) != first  # the first step reads the fixed initial state
    previous = trajectory.previous()[:, keep].reshape(-1, cell.state_size)  # (B*(T-1), n)
    if not previous.requires_grad:
        previous = previous.detach().requires_grad_()
    x_proj = cell.project_input(trajectory.inputs)[:, keep].reshape(previous.shape[0], -1)  # (B*(T-1), G*H)
    v = incoming.to(previous)[:, keep].reshape(-1, cell.state_size)  # (B*(T-1), n)
    # Omega is scale-free in v: rescale each row by its largest entry so tiny gradients don't underflow.
    scale = v.abs().amax(dim=1, keepdim=True)
    live = scale.squeeze(1) > 0
    v = torch.where(scale > 0, v / scale.clamp_min(torch.finfo(v.dtype).tiny), v)
    moved = cell.pack_state(cell.step(x_proj, cell.unpack_state(previous)))
    (carried,) = torch.autograd.grad(moved, previous, v, create_graph=True)  # v J per row
    ratio = carried[live].norm(dim=1) / v[live].norm(dim=1)
    return (ratio - 1).pow(2).sum() / batch


def gradient_flossing_loss(
    model: nn.Module,
    x: Tensor,
    k: int = 1,
    *,
    warmup: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Engelken's gradient-flossing term: sum of squared leading Lyapunov exponents.

    For each layer and direction, each sample's k leading exponents along
    the trajectory ``x`` drives (:func:`gradlab.instruments.lyapunov.lyapunov_exponents`)
    are squared and summed; samples are averaged and layers summed. Its
    gradient moves the exponents towards zero.

    Args:
        model: an ``RNNModel`` or ``RecurrentNet``.
        x: a batch (B, T, F).
        k: exponents per layer and direction (Engelken floss 1 to a few).
        warmup: see :func:`gradlab.instruments.lyapunov.lyapunov_exponents`.
        generator: randomness of the starting basis (a fixed seed when None).

    Returns:
        A scalar tensor.
    """
    net = recurrent_net(model)
    total = x.new_zeros(())
    with torch.enable_grad():
        for trajectory in net.trajectories(x).values():
            exponents = lyapunov_exponents(trajectory, k, warmup=warmup, generator=generator)  # (B, k)
            total = total + exponents.pow(2).sum(dim=1).mean()
    return total
