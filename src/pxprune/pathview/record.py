"""Recording the real network: each gate's on/off pattern, each max-pool's choice, in call order."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .interceptor import Interceptor, UnsupportedLayerError
from .op_args import OpCall

BN_SOURCES = ("running", "batch")


@dataclass
class Gate:
    """One nonlinearity call: ``mask`` multiplies the input (``indices`` pick max-pool inputs)."""

    kind: str
    mask: Tensor | None = None  # bool pass pattern
    negative: float = 0.0  # factor applied where mask is False (leaky slope)
    indices: Tensor | None = None  # max-pool arg-max


@dataclass
class Recording:
    gates: list[Gate] = field(default_factory=list)
    weighted_calls: list[str] = field(default_factory=list)  # module names, in call order
    bn_vars: list[Tensor] = field(default_factory=list)  # batch variances (``bn="batch"`` only)


def gate_bounds(call: OpCall) -> tuple[float, float]:
    """(lower, upper) bounds of the open interval where a hardtanh-style unit passes its input."""
    if call.name == "relu6":
        return 0.0, 6.0
    return float(call.get("min_val", -1.0)), float(call.get("max_val", 1.0))


class GateRecorder(Interceptor):
    """Runs the real network and records each gate and each conv/linear call.

    ``bn="running"`` runs BatchNorm as the model does (eval mode: running statistics);
    ``bn="batch"`` normalises with the statistics of the batch instead, leaving the running
    statistics untouched, and records each BatchNorm's (biased) batch variance per channel in
    float64, so that the gates and the scales come from the same forward.
    """

    def __init__(self, model: nn.Module, approximate_unsupported: bool = False,
                 bn: str = "running"):
        super().__init__(model, approximate_unsupported)
        if bn not in BN_SOURCES:
            raise UnsupportedLayerError(f"bn must be one of {BN_SOURCES}, got {bn!r}")
        self.bn = bn
        self.recording = Recording()
        self._weight_names = {id(p): n for n, p in model.named_parameters()
                              if n == "weight" or n.endswith(".weight")}

    def _gate(self, mask: Tensor, negative: float = 0.0) -> None:
        # ``mask`` is a fresh comparison result: no copy needed, even before an in-place ReLU
        self.recording.gates.append(Gate("gate", mask.detach(), negative))

    def on_relu(self, call: OpCall):
        self._gate(call.input > 0)
        return call()

    def on_leaky(self, call: OpCall):
        self._gate(call.input > 0, float(call.get("negative_slope", 0.01)))
        return call()

    def on_hardtanh(self, call: OpCall):
        lo, hi = gate_bounds(call)
        self._gate((call.input > lo) & (call.input < hi))
        return call()

    def on_maxpool(self, call: OpCall):
        out, indices = call.with_(return_indices=True)()
        self.recording.gates.append(Gate("maxpool", indices=indices))
        return (out, indices) if call.get("return_indices", False) else out

    def on_weighted(self, call: OpCall):
        # the module owning the weight, found by the parameter itself (a model may call
        # F.conv2d with a submodule's weight from its own forward)
        name = self._weight_names.get(id(call.get("weight")))
        if name is not None:
            self.recording.weighted_calls.append(name.rpartition(".")[0])
        elif self.current is not None:
            self.recording.weighted_calls.append(self._module_names.get(self.current, ""))
        return call()

    def on_batchnorm(self, call: OpCall):
        if self.bn == "running":
            return call()
        x = call.input
        dims = [d for d in range(x.dim()) if d != 1]
        self.recording.bn_vars.append(x.detach().to(torch.float64).var(dims, unbiased=False))
        return F.batch_norm(x, None, None, call.get("weight"), call.get("bias"), True, 0.0,
                            float(call.get("eps", 1e-5)))
