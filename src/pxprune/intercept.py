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

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from .errors import PxpruneError

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


class UnsupportedLayerError(PxpruneError):
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
    bn_vars: list[Tensor] = field(default_factory=list)  # batch variances (``bn="batch"`` only)


BN_SOURCES = ("running", "batch")


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

    def on_batchnorm(self, name, func, args, kwargs):
        if self.bn == "running":
            return func(*args, **kwargs)
        x = args[0]
        weight, bias = _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
        eps = float(_arg(args, kwargs, 7, "eps", 1e-5))
        dims = [d for d in range(x.dim()) if d != 1]
        self.recording.bn_vars.append(x.detach().to(torch.float64).var(dims, unbiased=False))
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)

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

    bn_vars: list[Tensor] | None = None  # per-call variances replacing the running ones
    _bn_next = 0

    def _bn_scale(self, args, kwargs) -> tuple[Tensor, Tensor]:
        x = args[0]
        if self.bn_vars is not None:
            if self._bn_next >= len(self.bn_vars):
                raise RuntimeError(f"more BatchNorm calls than recorded variances at "
                                   f"{self.current_module}")
            var = self.bn_vars[self._bn_next]
            self._bn_next += 1
        else:
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
        self.batch_bn = bool(recording.bn_vars)  # gates from batch statistics: none needed
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
        if not self.batch_bn:
            self._require_running_stats(args, kwargs)
        return args[0]


class RangeError(ArithmeticError):
    """The rescaled copy met an operation whose operands it cannot align (see below)."""


_EXP = "_pxprune_exp"  # attribute holding a tensor's power-of-two exponent in the rescaled copy
_ALIGN = {"add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__",
          "__rsub__", "__isub__", "cat", "concat", "concatenate", "stack"}
_MULTIPLY = {"mul", "mul_", "__mul__", "__rmul__", "__imul__"}
_DIVIDE = {"div", "div_", "__truediv__", "__itruediv__"}


def tensor_exponent(t: Tensor) -> int | None:
    """The power of two a tensor of the rescaled copy is to be multiplied by (None: plain)."""
    return getattr(t, _EXP, None)


def with_exponent(t: Tensor, exponent: int) -> Tensor:
    """Mark ``t`` as holding values to be multiplied by ``2**exponent``; returns ``t``."""
    setattr(t, _EXP, exponent)
    return t


def _tensors(args, kwargs) -> list[Tensor]:
    out = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, Tensor))
    return out


def _mark(result, exponent: int):
    """Set ``exponent`` on every tensor a call returned."""
    if isinstance(result, Tensor):
        with_exponent(result, exponent)
    elif isinstance(result, (list, tuple)):
        for r in result:
            if isinstance(r, Tensor):
                with_exponent(r, exponent)
    return result


class RescaledPathActivationCopy(PathActivationCopy):
    """PX copy 1 in float32 for networks whose range float32 cannot hold (ResNet-56: 2**370).

    Copy 1 is linear in its input once the gates are fixed (no biases, BatchNorm the identity),
    so exact power-of-two factors can be moved around freely: every conv/linear output is
    divided by the power of two nearest its peak and the exponent travels with the tensor
    (:func:`tensor_exponent`); operands with different exponents are aligned before they are
    added or concatenated (residual connections), exponents add under multiplication. Scaling by
    powers of two is exact, so float32 rounds exactly as it would with unlimited range. An
    operation it cannot align (a scaled tensor plus a non-zero constant, two differently scaled
    operands of any other call) raises :class:`RangeError`; the caller then falls back to
    float64.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        kind = _KIND.get(name)
        if kind == "weighted":
            exponent = tensor_exponent(args[0]) or 0
            return self._renormalised(super().__torch_function__(func, types, args, kwargs),
                                      exponent)
        if kind is not None:  # gates, max-pool, BatchNorm: the exponent of their input
            exponent = tensor_exponent(args[0]) if isinstance(args[0], Tensor) else None
            result = super().__torch_function__(func, types, args, kwargs)
            return result if exponent is None else _mark(result, exponent)
        tensors = _tensors(args, kwargs)
        exponents = [tensor_exponent(t) for t in tensors]
        if all(e is None for e in exponents):
            return func(*args, **kwargs)
        if name in _MULTIPLY or name in _DIVIDE:
            a, b = (args + (None, None))[:2]
            ea = tensor_exponent(a) or 0 if isinstance(a, Tensor) else 0
            eb = tensor_exponent(b) or 0 if isinstance(b, Tensor) else 0
            return _mark(func(*args, **kwargs), ea + eb if name in _MULTIPLY else ea - eb)
        known = {e for e in exponents if e is not None}
        if name in _ALIGN:
            return self._aligned(func, name, args, kwargs, tensors)
        if len(known) == 1 and None not in exponents:
            return _mark(func(*args, **kwargs), known.pop())
        raise RangeError(f"{name} in module {self.current_module} mixes operands of different "
                         "scales")

    @staticmethod
    def _renormalised(out: Tensor, exponent: int) -> Tensor:
        """``out`` divided by the power of two at its peak, the exponent raised to match."""
        peak = float(out.detach().abs().amax()) if out.numel() else 0.0
        if peak == 0.0:
            return with_exponent(out, exponent)
        if not math.isfinite(peak):
            raise RangeError("a conv/linear output overflowed even after rescaling")
        shift = math.frexp(peak)[1]  # peak = m * 2**shift, 0.5 <= m < 1
        if abs(shift) > 100:  # 2**-shift itself would leave float32's normal range: two steps
            out.mul_(2.0 ** -(shift // 2))
            return with_exponent(out.mul_(2.0 ** -(shift - shift // 2)), exponent + shift)
        return with_exponent(out.mul_(2.0**-shift), exponent + shift)

    def _aligned(self, func, name, args, kwargs, tensors):
        """A sum or concatenation with every operand brought to the largest exponent."""
        if any(isinstance(a, (int, float)) and a != 0 for a in args[1:2]):
            raise RangeError(f"{name} in module {self.current_module} adds a constant to a "
                             "rescaled tensor")
        top = max(tensor_exponent(t) or 0 for t in tensors)

        def to_top(t):
            if not isinstance(t, Tensor):
                return t
            shift = (tensor_exponent(t) or 0) - top
            return t if shift == 0 else t * 2.0**max(shift, -149)

        if name.endswith("_") and not name.startswith("__") or name.startswith("__i"):
            self_shift = (tensor_exponent(args[0]) or 0) - top
            if self_shift:
                args[0].mul_(2.0**max(self_shift, -149))
            rest = tuple(to_top(a) for a in args[1:])
            return _mark(func(args[0], *rest, **kwargs), top)
        if isinstance(args[0], (list, tuple)):  # cat / stack
            args = (type(args[0])(to_top(t) for t in args[0]), *args[1:])
        else:
            args = tuple(to_top(a) for a in args)
        return _mark(func(*args, **kwargs), top)


class PathKernelCopy(_WeightSubstitution):
    """PX copy 2 / SynFlow: linearised network, BatchNorm as ``|s|**bn_power``, no biases."""

    def __init__(self, model: nn.Module, weights: Mapping[int, Tensor], bn_power: int = 2,
                 maxpool_as: str = "avg", bn_vars: list[Tensor] | None = None, **kw):
        super().__init__(model, weights, **kw)
        self.bn_power = bn_power
        self.maxpool_as = maxpool_as
        self.bn_vars = bn_vars
        self._bn_next = 0

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
