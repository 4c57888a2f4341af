"""S recurrent classifiers computed as one batched model.

:class:`EnsembleModel` takes S :class:`gradlab.nn.models.RNNModel` members of the
same shape (built each with its own seed's init generator, so each starts
exactly where its single run would) and stacks every parameter along a new
leading member dimension: ``rnn.cells.{layer}.weight_ih`` (S, G*H, I) and so
on, the single model's names with an ``S`` in front, so member ``s``'s
:meth:`~EnsembleModel.member_state_dict` is that model's ``state_dict``.

Each member reads its own batch: input (S, B, T, F) -> logits (S, B, C). The
layers are :func:`gradlab.nn.bptt.recurrence` with the member dimension, so every
matmul is one batched matmul over members and the hand-written backward is the
single model's (a large ensemble's layers run the same per-step maths step by
step, :mod:`gradlab.training.ensemble.streaming`). Members never mix: every operation
is per member, so a member whose numbers turn non-finite leaves the others'
results untouched.

Supported: modes LSTM, GRU, RNN_TANH, RNN_RELU; any number of layers; with or
without biases; readouts ``last``, ``mean`` and ``sequence``; any init scheme
(it is applied when the members are built); ``bidirectional="none"`` only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradlab.nn.bptt import KINDS, recurrence
from gradlab.nn.models import GradientObserver, RNNModel, StateKey
from gradlab.training.ensemble.streaming import streaming_recurrence, use_streaming

CELL_PARAMETERS: tuple[str, ...] = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
LINEAR_PARAMETERS: tuple[str, ...] = ("weight", "bias")


def _signature(model: RNNModel) -> dict[str, object]:
    net = model.rnn
    return {
        "mode": net.mode, "input_size": net.input_size, "hidden_size": net.hidden_size,
        "num_layers": net.num_layers, "bias": net.bias, "output_size": model.fc.out_features,
        "bidirectional": net.bidirectional, "readout": model.readout,
    }


class _Stacked(nn.Module):
    """Parameters ``names`` of S same-shaped modules, stacked along a new leading dimension."""

    def __init__(self, members: Sequence[nn.Module], names: tuple[str, ...]) -> None:
        super().__init__()
        for name in names:
            values = [getattr(member, name) for member in members]
            if values[0] is None:
                self.register_parameter(name, None)
            else:
                self.register_parameter(name, nn.Parameter(torch.stack([value.detach() for value in values])))


class EnsembleModel(nn.Module):
    """S same-shaped :class:`~gradlab.nn.models.RNNModel` members as one batched model.

    Args:
        members: the S models; they must agree on mode, sizes, layers, bias,
            output size, readout, and have ``bidirectional="none"``. Their
            parameters are copied (stacked); the models are not kept.

    Shapes: input (S, B, T, F) -> logits (S, B, C), or (S, B, T, C) with the
    ``sequence`` readout.

    Raises:
        ValueError: if ``members`` is empty, the members differ in shape, or
            the configuration is not supported (module docstring).
    """

    def __init__(self, members: Sequence[RNNModel]) -> None:
        super().__init__()
        members = list(members)
        if not members or not all(isinstance(member, RNNModel) for member in members):
            raise ValueError("EnsembleModel needs a non-empty list of gradlab.nn.models.RNNModel members")
        signature = _signature(members[0])
        for index, member in enumerate(members[1:], start=1):
            other = _signature(member)
            differing = {key: (signature[key], other[key]) for key in signature if signature[key] != other[key]}
            if differing:
                raise ValueError(
                    f"member {index} differs from member 0 in {differing}; an ensemble's members "
                    "must share every shape (only seeds, initial weights and learning rates may differ)"
                )
        if signature["bidirectional"] != "none":
            raise ValueError(
                f"ensembles support bidirectional='none' only, got {signature['bidirectional']!r}; "
                "train bidirectional models one by one"
            )
        if signature["mode"] not in KINDS:
            raise ValueError(
                f"ensembles support modes {list(KINDS)} (those with a hand-written backward), "
                f"got {signature['mode']!r}; train it one by one"
            )
        self.signature = signature
        self.mode: str = signature["mode"]
        self.hidden_size: int = signature["hidden_size"]
        self.input_size: int = signature["input_size"]
        self.num_layers: int = signature["num_layers"]
        self.readout: str = signature["readout"]
        self.num_members = len(members)
        self.rnn = nn.Module()
        self.rnn.cells = nn.ModuleList(
            _Stacked([member.rnn.cells[layer] for member in members], CELL_PARAMETERS)
            for layer in range(self.num_layers)
        )
        self.fc = _Stacked([member.fc for member in members], LINEAR_PARAMETERS)
        # OrderedDict, not dict: RemovableHandle keeps a weak reference to it.
        self._gradient_observers: OrderedDict[int, GradientObserver] = OrderedDict()

    def add_gradient_observer(self, observer: GradientObserver) -> RemovableHandle:
        """Call ``observer(key, grad)`` during backward with dL/d(state) of every member at once.

        ``grad`` is (S, B, H): member ``s``'s total gradient of its own loss
        with respect to the state at ``key`` is ``grad[s]`` (as
        :meth:`gradlab.nn.models.RecurrentNet.add_gradient_observer` gives it for
        one model). The tensor may be reused once the call returns.

        Returns:
            A handle whose ``remove()`` detaches the observer.
        """
        handle = RemovableHandle(self._gradient_observers)
        self._gradient_observers[handle.id] = observer
        return handle

    def _check_input(self, x: Tensor) -> None:
        expected = (self.num_members, "batch", "time", self.input_size)
        if x.dim() != 4 or x.shape[0] != self.num_members or x.shape[3] != self.input_size:
            raise ValueError(f"expected input of shape {expected} (one batch per member), got {tuple(x.shape)}")
        if x.shape[1] == 0 or x.shape[2] == 0:
            raise ValueError(f"expected a non-empty batch and sequence, got shape {tuple(x.shape)}")

    def _on_grad(self, layer: int):
        if not self._gradient_observers:
            return None

        def on_grad(t: int, name: str, grad: Tensor) -> None:
            key = StateKey(layer, "forward", name, t)
            for observer in list(self._gradient_observers.values()):
                observer(key, grad)

        return on_grad

    def features(self, x: Tensor) -> Tensor:
        """The head's input: (S, B, H), or (S, B, T, H) for the ``sequence`` readout."""
        self._check_input(x)
        members, batch = x.shape[:2]
        layer_input = x.transpose(1, 2).contiguous()  # (S, T, B, F): time-major per member
        for index, cell in enumerate(self.rnn.cells):
            zeros = x.new_zeros(members, batch, self.hidden_size)
            state = (zeros, zeros) if self.mode == "LSTM" else zeros
            parameters = (cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh, state)
            on_grad = self._on_grad(index)
            if use_streaming(layer_input, self.hidden_size):
                # A large ensemble's layers run step by step (gradlab.training.ensemble.streaming).
                layer_input, final = streaming_recurrence(self.mode, layer_input, *parameters, on_grad=on_grad)
            else:
                layer_input, final = recurrence(self.mode, layer_input, *parameters, on_grad=on_grad)
            # layer_input is now this layer's outputs, (S, T, B, H)
        if self.readout == "sequence":
            return layer_input.transpose(1, 2)  # (S, B, T, H)
        if self.readout == "mean":
            return layer_input.mean(dim=1)  # (S, B, H)
        return final[0] if self.mode == "LSTM" else final  # (S, B, H)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (S, B, C) for input (S, B, T, F); (S, B, T, C) with the ``sequence`` readout."""
        features = self.features(x)
        flat = features.flatten(1, -2)  # (S, B or B*T, H)
        logits = torch.baddbmm(self.fc.bias.unsqueeze(1), flat, self.fc.weight.transpose(1, 2))
        return logits.view(*features.shape[:-1], -1)

    def member_state_dict(self, member: int) -> OrderedDict[str, Tensor]:
        """Member ``member``'s weights as the ``state_dict`` of its own :class:`RNNModel` (copies)."""
        self._check_member(member)
        return OrderedDict((name, value[member].detach().clone()) for name, value in self.state_dict().items())

    def load_member_state_dict(self, member: int, state_dict: Mapping[str, Tensor]) -> None:
        """Set member ``member``'s weights from an :class:`RNNModel` ``state_dict`` of the same shape.

        Raises:
            ValueError: on missing or unexpected keys, or a shape that differs.
        """
        self._check_member(member)
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise ValueError(f"member state_dict does not fit: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for name, target in own.items():
                value = state_dict[name]
                if tuple(value.shape) != tuple(target.shape[1:]):
                    raise ValueError(f"{name}: expected shape {tuple(target.shape[1:])}, got {tuple(value.shape)}")
                target[member].copy_(value)

    def member_model(self, member: int, model: RNNModel) -> RNNModel:
        """Load member ``member``'s weights into ``model`` (a same-shaped RNNModel) and return it.

        For what needs a single model: evaluation on shared data, diagnostics.
        """
        model.load_state_dict(self.member_state_dict(member))
        return model

    def _check_member(self, member: int) -> None:
        if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < self.num_members:
            raise ValueError(f"member must be an integer in [0, {self.num_members}), got {member!r}")

    def extra_repr(self) -> str:
        return f"members={self.num_members}, " + ", ".join(f"{key}={value!r}" for key, value in self.signature.items())
