"""Full float32 while scoring: no TensorFloat-32 in CUDA convolutions and matrix products.

PyTorch lets cuDNN run float32 convolutions in TF32 (10-bit mantissa) by default on Ampere and
later GPUs. A pruning score computed that way carries relative errors near 1e-3, enough to
reorder weights near the keep threshold, so every score is computed with TF32 switched off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


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
