"""PX's upper bound on the NTK trace of a sparse network, from the two PX copies (docs/px.md §2).

The computation behind :func:`pxprune.analysis.ntk.px_bound`, which validates the masks, puts
the model in eval mode and full float32, and documents what is returned. It lives here because
it is built from the bound variant's copies (:func:`.bound._copy_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import PruningError, PXNumericsError
from ...pathview import (
    GateRecorder,
    OpCall,
    PathActivationCopy,
    PathKernelCopy,
    maxpool_geometry,
    weighted_modules,
)
from .bound import _copy_weights


class _SumPoolKernelCopy(PathKernelCopy):
    """PX copy 2 for the bound: max-pool as a *sum* over its window (every path has factor 1)."""

    def on_maxpool(self, call: OpCall):
        x = call.input
        wants_indices = bool(call.get("return_indices", False))
        kernel, stride, padding, ceil_mode = maxpool_geometry(call, self.current_module)
        squeeze = x.dim() == 3
        if squeeze:  # avg_pool1d has no divisor_override: pool a 1 x L image instead
            x = x.unsqueeze(2)
            kernel, stride, padding = (1, _first(kernel)), (1, _first(stride)), (0, _first(padding))
        pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
        out = pool(x, kernel, stride, padding, ceil_mode, count_include_pad=True,
                   divisor_override=1)
        if squeeze:
            out = out.squeeze(2)
        return (out, None) if wants_indices else out


def _first(v):
    return v[0] if isinstance(v, (tuple, list)) else v


def ntk_trace_bound(
    model: nn.Module,
    x: Tensor,
    masks: Mapping[str, Tensor],
    forward: Callable[[Tensor], Tensor],
    *,
    approximate_unsupported: bool = False,
) -> dict[str, object]:
    """``bound``, ``path_activation``, ``path_kernel``, ``frobenius_product``, ``A`` and ``B``
    of :func:`pxprune.analysis.ntk.px_bound` for a model already in eval mode; ``x`` is on the
    model's device, ``masks`` cover Conv/Linear weights only, and ``forward(x)`` runs the
    sparse network (its ReLU gates and max-pool arg-maxes are replayed in copy 1)."""
    all_weights = weighted_modules(model)
    missing = [n for n in masks if n not in all_weights]
    if missing:
        raise PruningError(f"px_bound needs Conv/Linear weights as prunable, got {missing}")
    copy1, copy2, leaves = _copy_weights(all_weights, masks, None, False, x.device)
    f64 = torch.float64
    with torch.no_grad():
        with GateRecorder(model, approximate_unsupported) as rec:
            forward(x)  # gates of the sparse network
        with PathActivationCopy(model, copy1, rec.recording,
                                approximate_unsupported=approximate_unsupported):
            a = model(x.to(f64).square())
    a = a.reshape(a.shape[0], -1).to(f64)
    ones = torch.ones((1, *x.shape[1:]), dtype=f64, device=x.device)
    with _SumPoolKernelCopy(model, copy2, bn_power=2,
                            approximate_unsupported=approximate_unsupported):
        z2 = model(ones).reshape(-1)
    names = list(leaves)
    b = torch.zeros(z2.numel(), dtype=f64)
    for k in range(z2.numel()):
        grads = torch.autograd.grad(z2[k], [leaves[n] for n in names], retain_graph=True,
                                    allow_unused=True)
        for n, g in zip(names, grads, strict=True):
            if g is not None:
                b[k] += (g * masks[n].to(g.device, f64)).sum().cpu()
    a = a.detach().cpu()
    values = {"bound": float((a * b).sum()), "path_activation": float(a.sum()),
              "path_kernel": float(b.sum())}
    values["frobenius_product"] = values["path_activation"] * values["path_kernel"]
    if not all(math.isfinite(v) for v in values.values()):
        raise PXNumericsError(f"PX bound overflowed float64: {values}")
    return {**values, "A": a, "B": b}
