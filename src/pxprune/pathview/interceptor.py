"""The one place that sees a model's operations during a forward pass, whatever their spelling.

A ``TorchFunctionMode`` sees every call of ``F.relu``, ``torch.relu``, ``Tensor.relu``, the
in-place forms, ``F.leaky_relu``, ``F.hardtanh``/``F.relu6`` (``nn.ReLU6``), ``F.max_pool*``,
``F.batch_norm`` and the conv/linear functions, without patching ``torch.nn.functional``
globally. :class:`Interceptor` routes each recognised call, its arguments bound by name
(:class:`~pxprune.pathview.op_args.OpCall`), to an ``on_<kind>`` method, and tracks which module
is running (for error messages and weight lookup).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from ..errors import UnsupportedLayerError
from .op_args import OpCall

RELU = {"relu", "relu_"}
LEAKY = {"leaky_relu", "leaky_relu_"}
HARDTANH = {"hardtanh", "hardtanh_", "relu6"}
MAXPOOL = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
           "max_pool2d_with_indices", "max_pool3d_with_indices"}
BATCHNORM = {"batch_norm"}
WEIGHTED = {"conv1d", "conv2d", "conv3d", "linear"}
# smooth activations: no gate; the bound treats them as a ReLU gate only when asked to
SMOOTH = {"gelu", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardswish",
          "hardswish_", "hardsigmoid", "elu", "elu_", "selu", "selu_", "celu", "celu_",
          "softplus", "mish"}
# operations without a path decomposition at all
UNSUPPORTED = {
    "softmax", "log_softmax", "layer_norm", "group_norm", "instance_norm", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "prelu", "rrelu", "glu", "multi_head_attention_forward",
    "scaled_dot_product_attention",
}

KIND: dict[str, str] = {}
for _names, _kind in ((RELU, "relu"), (LEAKY, "leaky"), (HARDTANH, "hardtanh"),
                      (MAXPOOL, "maxpool"), (BATCHNORM, "batchnorm"), (WEIGHTED, "weighted"),
                      (SMOOTH, "smooth"), (UNSUPPORTED, "unsupported")):
    for _n in _names:
        KIND[_n] = _kind


def maxpool_geometry(call: OpCall, where: str) -> tuple:
    """(kernel, stride, padding, ceil_mode) of a max-pool call; dilation is refused (a dilated
    window has no average-pool equivalent)."""
    kernel = call.get("kernel_size")
    stride = call.get("stride") or kernel
    dilation = call.get("dilation", 1)
    if dilation not in (1, (1,) * (call.input.dim() - 2)):
        raise UnsupportedLayerError(f"dilated max-pool in {where}")
    return kernel, stride, call.get("padding", 0), bool(call.get("ceil_mode", False))


class Interceptor(TorchFunctionMode):
    """Routes recognised calls to ``on_<kind>(call)`` while tracking the executing module.

    ``approximate_unsupported=True`` routes smooth activations (GELU, SiLU, ...) to
    ``on_relu``, i.e. treats them as a ReLU gate ``x > 0``; without it they are refused.
    """

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

    @property
    def current(self) -> nn.Module | None:
        """The innermost module of the model that is running, if any."""
        return self._stack[-1] if self._stack else None

    # -- dispatch --------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", None)
        kind = KIND.get(name)
        if kind is None:
            return func(*args, **(kwargs or {}))
        if kind == "unsupported":
            return self.on_unsupported(name)
        if kind == "smooth":
            if not self.approximate_unsupported:
                return self.on_unsupported(name)
            kind = "relu"
        return getattr(self, f"on_{kind}")(OpCall(name, func, args, kwargs))

    def on_unsupported(self, name: str):
        hint = (" Pass approximate_unsupported=True to treat it as a ReLU gate (x > 0)."
                if name in SMOOTH else "")
        raise UnsupportedLayerError(
            f"{name} in module {self.current_module} has no path decomposition: PX's bound and "
            f"SynFlow need piecewise-linear units (ReLU, LeakyReLU, ReLU6, max-pool).{hint}")

    def on_relu(self, call: OpCall):
        return call()

    on_leaky = on_hardtanh = on_maxpool = on_batchnorm = on_weighted = on_relu


def weighted_modules(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every Conv/Linear weight of ``model`` by parameter name (pruned or not, all take part)."""
    out = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            out[f"{module_name}.weight" if module_name else "weight"] = module.weight
    return out
