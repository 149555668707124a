"""Arguments of the torch operations the path copies rewrite, bound by name, never by position.

A model may call ``F.conv2d(x, w, b, 1, 1)`` or ``F.conv2d(x, weight=w, padding=1)``; an
:class:`OpCall` reads and replaces ``weight``, ``bias`` or ``eps`` the same way in both cases and
calls the operation back with every argument in the slot it came in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAXPOOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_INPLACE = ("input", "inplace")

SIGNATURES: dict[str, tuple[str, ...]] = {
    "conv1d": _CONV, "conv2d": _CONV, "conv3d": _CONV,
    "linear": ("input", "weight", "bias"),
    "batch_norm": ("input", "running_mean", "running_var", "weight", "bias", "training",
                   "momentum", "eps"),
    "instance_norm": ("input", "running_mean", "running_var", "weight", "bias",
                      "use_input_stats", "momentum", "eps"),
    "layer_norm": ("input", "normalized_shape", "weight", "bias", "eps"),
    "group_norm": ("input", "num_groups", "weight", "bias", "eps"),
    "relu": _INPLACE, "relu_": ("input",), "relu6": _INPLACE,
    "leaky_relu": ("input", "negative_slope", "inplace"),
    "leaky_relu_": ("input", "negative_slope"),
    "hardtanh": ("input", "min_val", "max_val", "inplace"),
    "hardtanh_": ("input", "min_val", "max_val"),
    **{name: _MAXPOOL for name in ("max_pool1d", "max_pool2d", "max_pool3d",
                                   "max_pool1d_with_indices", "max_pool2d_with_indices",
                                   "max_pool3d_with_indices")},
    # smooth activations (gated like a ReLU by the bound's approximate_unsupported=True)
    "gelu": ("input", "approximate"),
    **{name: _INPLACE for name in ("silu", "hardswish", "hardsigmoid", "mish", "selu")},
    **{name: ("input", "alpha", "inplace") for name in ("elu", "celu")},
    **{name: ("input",) for name in ("sigmoid", "sigmoid_", "tanh", "tanh_", "silu_",
                                     "hardswish_", "elu_", "selu_", "celu_")},
    "softplus": ("input", "beta", "threshold"),
}


class OpCall:
    """One intercepted call with its arguments bound to the operation's parameter names."""

    def __init__(self, name: str, func: Callable, args: tuple, kwargs: dict | None = None):
        if name not in SIGNATURES:
            raise KeyError(f"no signature recorded for {name!r}")
        self.name, self.func = name, func
        self.params = SIGNATURES[name]
        if len(args) > len(self.params):
            raise TypeError(f"{name} called with {len(args)} positional arguments")
        self.args, self.kwargs = list(args), dict(kwargs or {})

    @property
    def input(self) -> Any:
        """The first argument (the tensor the operation transforms)."""
        return self.get("input")

    @property
    def inplace(self) -> bool:
        """Whether the call overwrites its input (``relu_`` or ``inplace=True``)."""
        return self.name.endswith("_") or (
            "inplace" in self.params and bool(self.get("inplace", False)))

    def get(self, key: str, default: Any = None) -> Any:
        """The argument called ``key`` as the model passed it, or ``default``."""
        index = self.params.index(key)
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(key, default)

    def given(self, key: str) -> bool:
        """Whether the model passed ``key`` (positionally or by name)."""
        return self.params.index(key) < len(self.args) or key in self.kwargs

    def with_(self, **changes: Any) -> OpCall:
        """A copy with the named arguments replaced, each in the slot it was given in."""
        out = OpCall(self.name, self.func, tuple(self.args), self.kwargs)
        for key, value in changes.items():
            index = self.params.index(key)
            if index < len(out.args):
                out.args[index] = value
            else:
                out.kwargs[key] = value
        return out

    def __call__(self) -> Any:
        """Run the operation with the (possibly replaced) arguments."""
        return self.func(*self.args, **self.kwargs)
