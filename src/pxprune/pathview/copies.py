"""Copies of a network with substituted weights: PX's copy 1 (replayed gates) and the
linearised copy 2 / SynFlow network.

- :class:`PathActivationCopy` replays recorded gates on another input with substituted weights,
  BatchNorm as the identity and no biases (the bound's copy 1);
- :class:`PathKernelCopy` linearises: every ReLU the identity, max-pool as average pooling,
  BatchNorm as a per-channel scale ``|s|**power``, substituted weights and no biases (the
  bound's copy 2, SynFlow).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .interceptor import Interceptor, UnsupportedLayerError, maxpool_geometry
from .op_args import OpCall
from .record import Gate, Recording


class WeightSubstitution(Interceptor):
    """Replaces conv/linear weights by ``weights[id(parameter)]`` and drops every bias."""

    def __init__(self, model: nn.Module, weights: Mapping[int, Tensor], **kw):
        super().__init__(model, **kw)
        self.weights = weights

    def on_weighted(self, call: OpCall):
        replacement = self.weights.get(id(call.get("weight")))
        if replacement is None and self.current is not None:
            replacement = self.weights.get(id(getattr(self.current, "weight", None)))
        if replacement is None:
            raise UnsupportedLayerError(
                f"{call.name} in module {self.current_module} uses a weight that is not a "
                "parameter of a Conv/Linear module; the path view cannot substitute it")
        return call.with_(weight=replacement, bias=None)()

    def _require_running_stats(self, call: OpCall) -> Tensor:
        """The BatchNorm call's running variance; an error when it has none."""
        var = call.get("running_var")
        if var is None:
            raise UnsupportedLayerError(
                f"BatchNorm in module {self.current_module} has no running statistics "
                "(track_running_stats=False); the path view needs eval-mode BatchNorm")
        return var


class PathActivationCopy(WeightSubstitution):
    """PX copy 1 (bound): the recorded gates replayed, BatchNorm as the identity, no biases."""

    def __init__(self, model: nn.Module, weights: Mapping[int, Tensor], recording: Recording,
                 **kw):
        super().__init__(model, weights, **kw)
        self.gates = recording.gates
        self.batch_bn = bool(recording.bn_vars)  # gates from batch statistics: none needed
        self._next = 0

    def _take(self, kind: str, x: Tensor) -> Gate:
        if self._next >= len(self.gates):
            raise RuntimeError(
                f"the model called more nonlinearities than were recorded "
                f"(at {self.current_module}); is its forward pass data-dependent?")
        gate = self.gates[self._next]
        self._next += 1
        if gate.kind != kind or (gate.mask is not None and gate.mask.shape != x.shape):
            raise RuntimeError(f"recorded gate does not match the replay at {self.current_module}")
        return gate

    def _apply_gate(self, call: OpCall):
        x = call.input
        gate = self._take("gate", x)
        # a uint8 view of the bool mask: x * uint8 keeps x's dtype and runs about 3x faster
        # than x * bool on CPU (the bool operand takes a slow conversion path), with no copy
        factor = gate.mask.view(torch.uint8)
        if gate.negative:
            factor = gate.mask.to(x.dtype) + (~gate.mask).to(x.dtype) * gate.negative**2
        return x.mul_(factor) if call.inplace else x * factor

    on_relu = on_leaky = on_hardtanh = _apply_gate

    def on_maxpool(self, call: OpCall):
        x = call.input
        idx = self._take("maxpool", x).indices
        out = x.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
        return (out, idx) if call.get("return_indices", False) else out

    def on_batchnorm(self, call: OpCall):
        if not self.batch_bn:
            self._require_running_stats(call)
        return call.input


class PathKernelCopy(WeightSubstitution):
    """PX copy 2 (bound) / SynFlow: linearised network, BatchNorm as ``|s|**bn_power``, no
    biases; ``bn_vars`` (per BatchNorm call, in order) replace the running variances."""

    def __init__(self, model: nn.Module, weights: Mapping[int, Tensor], bn_power: int = 2,
                 maxpool_as: str = "avg", bn_vars: list[Tensor] | None = None, **kw):
        super().__init__(model, weights, **kw)
        self.bn_power = bn_power
        self.maxpool_as = maxpool_as
        self.bn_vars = bn_vars
        self._bn_next = 0

    def on_relu(self, call: OpCall):
        return call.input

    on_leaky = on_hardtanh = on_relu

    def on_maxpool(self, call: OpCall):
        if self.maxpool_as == "max":
            return call()
        x = call.input
        kernel, stride, padding, ceil_mode = maxpool_geometry(call, self.current_module)
        pool: Callable = {3: F.avg_pool1d, 4: F.avg_pool2d, 5: F.avg_pool3d}[x.dim()]
        out = pool(x, kernel, stride, padding, ceil_mode, count_include_pad=False)
        return (out, None) if call.get("return_indices", False) else out

    def bn_scale(self, call: OpCall) -> Tensor:
        """``gamma / sqrt(var + eps)`` per channel, shaped to broadcast over the input."""
        x = call.input
        if self.bn_vars is not None:
            if self._bn_next >= len(self.bn_vars):
                raise RuntimeError(f"more BatchNorm calls than recorded variances at "
                                   f"{self.current_module}")
            var = self.bn_vars[self._bn_next]
            self._bn_next += 1
        else:
            var = self._require_running_stats(call)
        scale = 1.0 / torch.sqrt(var.to(torch.float64) + float(call.get("eps", 1e-5)))
        weight = call.get("weight")
        if weight is not None:
            scale = scale * weight.detach().to(torch.float64)
        return scale.to(x.dtype).view((1, -1) + (1,) * (x.dim() - 2))

    def on_batchnorm(self, call: OpCall):
        return call.input * self.bn_scale(call).abs() ** self.bn_power
