"""The one place that rewrites a model's nonlinearities during a forward pass.

A ``TorchFunctionMode`` sees every call of ``F.relu``, ``torch.relu``, ``Tensor.relu``, the
in-place forms, ``F.leaky_relu``, ``F.hardtanh``/``F.relu6`` (``nn.ReLU6``), ``F.max_pool*``,
``F.batch_norm`` and the conv/linear functions, whichever way the model calls them, without
patching ``torch.nn.functional`` globally. Three interceptors build on it:

- :class:`GateRecorder` runs the real network and records each ReLU's on/off pattern and each
  max-pool's arg-max choice, in call order;
- :class:`PathActivationCopy` replays those patterns on another input with substituted weights,
  BatchNorm as the identity and no biases (PX copy 1);
- :class:`PathKernelCopy` linearises: every ReLU the identity, max-pool as average pooling,
  BatchNorm as a per-channel scale ``|s|**power``, substituted weights and no biases (PX copy 2,
  SynFlow).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

_RELU = {"relu", "relu_"}
_LEAKY = {"leaky_relu", "leaky_relu_"}
_HARDTANH = {"hardtanh", "hardtanh_", "relu6"}
_MAXPOOL = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
            "max_pool2d_with_indices", "max_pool3d_with_indices"}
_BATCHNORM = {"batch_norm"}
_WEIGHTED = {"conv1d", "conv2d", "conv3d", "linear"}
_UNSUPPORTED = {
    "gelu", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardswish", "hardswish_",
    "hardsigmoid", "elu", "elu_", "selu", "selu_", "celu", "celu_", "softplus", "mish",
    "softmax", "log_softmax", "layer_norm", "group_norm", "instance_norm", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "prelu", "rrelu", "glu",
}

_KIND = {}
for _names, _kind in ((_RELU, "relu"), (_LEAKY, "leaky"), (_HARDTANH, "hardtanh"),
                      (_MAXPOOL, "maxpool"), (_BATCHNORM, "batchnorm"),
                      (_WEIGHTED, "weighted"), (_UNSUPPORTED, "unsupported")):
    for _n in _names:
        _KIND[_n] = _kind


class UnsupportedLayerError(ValueError):
    """The model uses an operation that the path view (PX, SynFlow) cannot represent."""


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _is_inplace(name: str, args: tuple, kwargs: dict, index: int) -> bool:
    return name.endswith("_") or bool(_arg(args, kwargs, index, "inplace", False))


def _gate_params(name: str, args: tuple, kwargs: dict) -> tuple[float, float]:
    """(lower, upper) bounds of the open interval where a hardtanh-style unit passes its input."""
    if name == "relu6":
        return 0.0, 6.0
    low = float(_arg(args, kwargs, 1, "min_val", -1.0))
    return low, float(_arg(args, kwargs, 2, "max_val", 1.0))


def maxpool_geometry(args: tuple, kwargs: dict, where: str) -> tuple:
    """(kernel, stride, padding, ceil_mode) of a max-pool call; dilation is refused (a dilated
    window has no average-pool equivalent)."""
    x = args[0]
    kernel = _arg(args, kwargs, 1, "kernel_size")
    stride = _arg(args, kwargs, 2, "stride") or kernel
    padding = _arg(args, kwargs, 3, "padding", 0)
    dilation = _arg(args, kwargs, 4, "dilation", 1)
    if dilation not in (1, (1,) * (x.dim() - 2)):
        raise UnsupportedLayerError(f"dilated max-pool in {where}")
    return kernel, stride, padding, bool(_arg(args, kwargs, 5, "ceil_mode", False))


class Interceptor(TorchFunctionMode):
    """Routes recognised calls to ``on_<kind>`` methods while tracking the executing module."""

    def __init__(self, model: nn.Module, approximate_unsupported: bool = False):
        super().__init__()
        self.model = model
        self.approximate_unsupported = approximate_unsupported
        self._module_names = {m: n for n, m in model.named_modules()}
        self._stack: list[nn.Module] = []
        self._hooks: list = []

    # -- module tracking (for error messages and weight lookup) ----------------------------
    def __enter__(self):
        # two process-wide hooks for the life of the context (official torch API, removed on
        # exit) instead of two per module: registering ~150 hooks per copy cost 10 % of a PX
        # round; modules of other models are ignored by _push/_pop
        self._hooks.append(register_module_forward_pre_hook(self._push))
        self._hooks.append(register_module_forward_hook(self._pop))
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._stack.clear()
        return super().__exit__(*exc)

    def _push(self, module, _inputs):
        if module in self._module_names:
            self._stack.append(module)

    def _pop(self, module, _inputs, _output):
        if self._stack and self._stack[-1] is module:
            self._stack.pop()

    @property
    def current_module(self) -> str:
        if not self._stack:
            return "<model>"
        name = self._module_names.get(self._stack[-1], "?")
        return f"{name or '<root>'} ({type(self._stack[-1]).__name__})"

    # -- dispatch --------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        kind = _KIND.get(name)
        if kind is None:
            return func(*args, **kwargs)
        if kind == "unsupported" and self.approximate_unsupported:
            kind = "approx"
        return getattr(self, f"on_{kind}")(name, func, args, kwargs)

    def on_unsupported(self, name, func, args, kwargs):
        raise UnsupportedLayerError(
            f"{name} in module {self.current_module} has no path decomposition: PX and SynFlow "
            "need piecewise-linear units (ReLU, LeakyReLU, ReLU6, max-pool). Pass "
            "approximate_unsupported=True to treat it as a ReLU gate (x > 0)."
        )

    def on_approx(self, name, func, args, kwargs):
        return self.on_relu(name, func, args, kwargs)

    def on_relu(self, name, func, args, kwargs):
        return func(*args, **kwargs)

    def on_leaky(self, name, func, args, kwargs):
        return func(*args, **kwargs)

    def on_hardtanh(self, name, func, args, kwargs):
        return func(*args, **kwargs)

    def on_maxpool(self, name, func, args, kwargs):
        return func(*args, **kwargs)

    def on_batchnorm(self, name, func, args, kwargs):
        return func(*args, **kwargs)

    def on_weighted(self, name, func, args, kwargs):
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Recording the real network
# ---------------------------------------------------------------------------------------------
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


class GateRecorder(Interceptor):
    """Runs the real network unchanged and records each gate and each conv/linear call."""

    def __init__(self, model: nn.Module, approximate_unsupported: bool = False):
        super().__init__(model, approximate_unsupported)
        self.recording = Recording()

    def _gate(self, x: Tensor, mask: Tensor, negative: float = 0.0) -> None:
        # ``mask`` is a fresh comparison result: no copy needed, even before an in-place ReLU
        self.recording.gates.append(Gate("gate", mask.detach(), negative))

    def on_relu(self, name, func, args, kwargs):
        x = args[0]
        self._gate(x, x > 0)
        return func(*args, **kwargs)

    def on_approx(self, name, func, args, kwargs):
        return self.on_relu(name, func, args, kwargs)

    def on_leaky(self, name, func, args, kwargs):
        x = args[0]
        slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
        self._gate(x, x > 0, slope)
        return func(*args, **kwargs)

    def on_hardtanh(self, name, func, args, kwargs):
        x = args[0]
        lo, hi = _gate_params(name, args, kwargs)
        self._gate(x, (x > lo) & (x < hi))
        return func(*args, **kwargs)

    def on_maxpool(self, name, func, args, kwargs):
        kwargs = dict(kwargs)
        wants_indices = bool(_arg(args, kwargs, 6, "return_indices", False))
        if len(args) > 6:
            args = args[:6]
        kwargs["return_indices"] = True
        out, indices = func(*args, **kwargs)
        self.recording.gates.append(Gate("maxpool", indices=indices))
        return (out, indices) if wants_indices else out

    def on_weighted(self, name, func, args, kwargs):
        if self._stack:
            self.recording.weighted_calls.append(self._module_names.get(self._stack[-1], ""))
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Copies with substituted weights
# ---------------------------------------------------------------------------------------------
class _WeightSubstitution(Interceptor):
    """Replaces conv/linear weights by ``weights[id(parameter)]`` and drops every bias."""

    def __init__(self, model: nn.Module, weights: Mapping[int, Tensor], **kw):
        super().__init__(model, **kw)
        self.weights = weights

    def on_weighted(self, name, func, args, kwargs):
        weight = _arg(args, kwargs, 1, "weight")
        replacement = self.weights.get(id(weight))
        if replacement is None and self._stack:
            replacement = self.weights.get(id(getattr(self._stack[-1], "weight", None)))
        if replacement is None:
            raise UnsupportedLayerError(
                f"{name} in module {self.current_module} uses a weight that is not a parameter "
                "of a Conv/Linear module; the path view cannot substitute it"
            )
        rest = list(args[2:])
        kwargs = {k: v for k, v in kwargs.items() if k not in ("weight", "bias")}
        if rest:
            rest[0] = None  # bias
        else:
            kwargs["bias"] = None
        return func(args[0], replacement, *rest, **kwargs)

    def _require_running_stats(self, args, kwargs) -> Tensor:
        """The BatchNorm call's running variance; an error when it has none."""
        var = _arg(args, kwargs, 2, "running_var")
        if var is None:
            raise UnsupportedLayerError(
                f"BatchNorm in module {self.current_module} has no running statistics "
                "(track_running_stats=False); the path view needs eval-mode BatchNorm"
            )
        return var

    def _bn_scale(self, args, kwargs) -> tuple[Tensor, Tensor]:
        x = args[0]
        var = self._require_running_stats(args, kwargs)
        weight = _arg(args, kwargs, 3, "weight")
        eps = float(_arg(args, kwargs, 7, "eps", 1e-5))
        scale = 1.0 / torch.sqrt(var.to(torch.float64) + eps)
        if weight is not None:
            scale = scale * weight.detach().to(torch.float64)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x, scale.to(x.dtype).view(shape)


class PathActivationCopy(_WeightSubstitution):
    """PX copy 1: the recorded gates replayed, BatchNorm as the identity, no biases."""

    def __init__(self, model: nn.Module, weights: Mapping[int, Tensor], recording: Recording,
                 **kw):
        super().__init__(model, weights, **kw)
        self.gates = recording.gates
        self._next = 0

    def _take(self, kind: str, x: Tensor) -> Gate:
        if self._next >= len(self.gates):
            raise RuntimeError(
                f"the model called more nonlinearities than were recorded "
                f"(at {self.current_module}); "
                "is its forward pass data-dependent?"
            )
        gate = self.gates[self._next]
        self._next += 1
        if gate.kind != kind or (gate.mask is not None and gate.mask.shape != x.shape):
            raise RuntimeError(f"recorded gate does not match the replay at {self.current_module}")
        return gate

    def _apply_gate(self, name, args, kwargs, inplace_index):
        x = args[0]
        gate = self._take("gate", x)
        # a uint8 view of the bool mask: x * uint8 keeps x's dtype and runs about 3x faster
        # than x * bool on CPU (the bool operand takes a slow conversion path), with no copy
        factor = gate.mask.view(torch.uint8)
        if gate.negative:
            factor = gate.mask.to(x.dtype) + (~gate.mask).to(x.dtype) * gate.negative**2
        if _is_inplace(name, args, kwargs, inplace_index):
            return x.mul_(factor)
        return x * factor

    def on_relu(self, name, func, args, kwargs):
        return self._apply_gate(name, args, kwargs, 1)

    def on_approx(self, name, func, args, kwargs):
        return self._apply_gate(name, args, kwargs, 99)

    def on_leaky(self, name, func, args, kwargs):
        return self._apply_gate(name, args, kwargs, 2)

    def on_hardtanh(self, name, func, args, kwargs):
        return self._apply_gate(name, args, kwargs, 1 if name == "relu6" else 3)

    def on_maxpool(self, name, func, args, kwargs):
        x = args[0]
        gate = self._take("maxpool", x)
        idx = gate.indices
        out = x.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
        if bool(_arg(args, kwargs, 6, "return_indices", False)):
            return out, idx
        return out

    def on_batchnorm(self, name, func, args, kwargs):
        self._require_running_stats(args, kwargs)
        return args[0]


class PathKernelCopy(_WeightSubstitution):
    """PX copy 2 / SynFlow: linearised network, BatchNorm as ``|s|**bn_power``, no biases."""

    def __init__(self, model: nn.Module, weights: Mapping[int, Tensor], bn_power: int = 2,
                 maxpool_as: str = "avg", **kw):
        super().__init__(model, weights, **kw)
        self.bn_power = bn_power
        self.maxpool_as = maxpool_as

    def on_relu(self, name, func, args, kwargs):
        return args[0]

    on_leaky = on_hardtanh = on_approx = on_relu

    def on_maxpool(self, name, func, args, kwargs):
        x = args[0]
        wants_indices = bool(_arg(args, kwargs, 6, "return_indices", False))
        if self.maxpool_as == "max":
            return func(*args, **kwargs)
        kernel, stride, padding, ceil_mode = maxpool_geometry(args, kwargs, self.current_module)
        pool: Callable = {3: F.avg_pool1d, 4: F.avg_pool2d, 5: F.avg_pool3d}[x.dim()]
        out = pool(x, kernel, stride, padding, ceil_mode, count_include_pad=False)
        return (out, None) if wants_indices else out

    def on_batchnorm(self, name, func, args, kwargs):
        x, scale = self._bn_scale(args, kwargs)
        return x * scale.abs() ** self.bn_power


def weighted_modules(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every Conv/Linear weight of ``model`` by parameter name (pruned or not, all take part)."""
    out = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            out[f"{module_name}.weight" if module_name else "weight"] = module.weight
    return out
