"""Numerics of scoring: full float32 (no TensorFloat-32 on CUDA) and NaN/inf checks that do
not stall the device once per tensor.

PyTorch lets cuDNN run float32 convolutions in TF32 (10-bit mantissa) by default on Ampere and
later GPUs. A pruning score computed that way carries relative errors near 1e-3, enough to
reorder weights near the keep threshold, so every score is computed with TF32 switched off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


def _new_api() -> bool:
    """Whether this torch has the per-operator ``fp32_precision`` settings (torch >= 2.9)."""
    return hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def _precision_settings() -> list[tuple[object, str]]:
    """(object, attribute) pairs that choose TF32 or IEEE float32, for this torch version.

    Only the new settings are written where they exist: torch refuses to read the legacy
    ``cudnn.allow_tf32`` once the new ones say "ieee", so it is never read here either."""
    if _new_api():
        return [(torch.backends.cudnn.conv, "fp32_precision"),
                (torch.backends.cuda.matmul, "fp32_precision")]
    return [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]


def _ieee_value(attribute: str) -> object:
    return "ieee" if attribute == "fp32_precision" else False


def tf32_allowed() -> bool:
    """Whether a float32 CUDA convolution or matrix product may run in TF32 right now."""
    if not _new_api():
        return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
    inherited = {"none": torch.backends.fp32_precision}  # "none": the global setting decides
    conv = torch.backends.cudnn.conv.fp32_precision
    conv = inherited.get(conv, conv)
    matmul = torch.backends.cuda.matmul.fp32_precision
    matmul = inherited.get(matmul, matmul)
    return "tf32" in (conv, matmul)


@contextmanager
def exact_float32() -> Iterator[None]:
    """Switch TF32 off for CUDA convolutions and matrix products, and restore it afterwards."""
    settings = _precision_settings()
    saved = [getattr(obj, attr) for obj, attr in settings]
    try:
        for obj, attr in settings:
            setattr(obj, attr, _ieee_value(attr))
        yield
    finally:
        for (obj, attr), value in zip(settings, saved, strict=True):
            setattr(obj, attr, value)


def first_nonfinite(named: Iterable[tuple[str, Tensor]]) -> str | None:
    """The name of a tensor holding NaN or inf (the first such on its device, devices in order
    of first appearance), or None when all are finite.

    One device synchronisation per device on the usual all-finite path (a per-tensor
    ``bool(isfinite(t).all())`` would stall a GPU once per tensor, ~150 times a PX round on
    ResNet-20); the offender is looked up only when one exists."""
    by_device: dict[torch.device, list[tuple[str, Tensor]]] = {}
    for name, t in named:
        if t.is_floating_point() or t.is_complex():
            by_device.setdefault(t.device, []).append((name, t))
    for group in by_device.values():
        flags = torch.stack([torch.isfinite(t).all() for _, t in group])
        if not bool(flags.all()):
            return group[flags.tolist().index(False)][0]
    return None
