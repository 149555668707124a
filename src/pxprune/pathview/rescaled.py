"""The bound's copy 1 in float32 for networks whose range float32 cannot hold (ResNet-56:
2**370): every conv/linear output is renormalised by a power of two whose exponent travels with
the tensor."""

from __future__ import annotations

import math

from torch import Tensor

from .copies import PathActivationCopy
from .interceptor import KIND


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
        kind = KIND.get(name)
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


