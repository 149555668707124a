"""Training precision and memory format: what ``auto`` resolves to on a device, and autocast.

CPU: bf16 autocast only where the processor has native bf16 arithmetic (and the model has no
depthwise convolutions, slower in bf16: :func:`precision_choice`), read from the kernel's
CPU flags (x86: ``avx512_bf16`` or ``amx_bf16``; Arm: ``bf16``). torch's own check
(``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is not used: it is true on any AVX-512 CPU,
where oneDNN emulates bf16 without those instructions. Weights, gradients and
the optimiser state stay fp32 (autocast casts only the operations' inputs). CUDA: ``auto`` keeps
the recipe's AMP (``amp``/``amp_dtype``) as before. channels_last (NHWC) is used on CPU, where
the oneDNN convolutions are faster in it (benchmarks/train_throughput.py), and not on CUDA.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from ..errors import TrainingError
from ..user_model import eval_mode
from .recipes import PRECISIONS

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 /proc/cpuinfo "flags"
ARM_BF16_FLAG = "bf16"  # aarch64 /proc/cpuinfo "Features"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty where unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has native bf16 instructions (the flags above) and oneDNN is built."""
    flags = cpu_flags(cpuinfo)
    native = bool(flags & set(CPU_BF16_FLAGS))
    if not native and platform.machine().lower() in ("aarch64", "arm64"):
        native = ARM_BF16_FLAG in flags
    return native and torch.backends.mkldnn.is_available()


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16_cached() -> bool:
    return cpu_has_bf16()


def depthwise_convs(model: torch.nn.Module | None) -> list[str]:
    """Names of the model's depthwise/grouped convolutions (``groups > 1``)."""
    if model is None:
        return []
    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.modules.conv._ConvNd) and m.groups > 1]


def precision_choice(precision: str, device: torch.device, amp: bool = True,
                     amp_dtype: str = "float16",
                     model: torch.nn.Module | None = None) -> tuple[str, str]:
    """(resolved precision, why): :func:`resolve_precision` with the reason recorded in summaries.

    ``auto`` on a CPU with native bf16 is bf16 autocast unless ``model`` has depthwise (grouped)
    convolutions: oneDNN's bf16 depthwise kernels are slower than fp32 on such CPUs, so a network
    built on them trains faster in fp32 (one thread, batch 64, channels-last: EfficientNet-Lite0
    at 64 px 139 img/s fp32 vs 78 bf16; ResNet-56 177 bf16 vs 119 fp32;
    benchmarks/results/precision_auto.json). A rule by layer type rather than a timed probe,
    so that the choice is the same in every run and on resume.
    """
    resolved = resolve_precision(precision, device, amp, amp_dtype, model)
    if precision != "auto":
        return resolved, f"{precision} requested"
    if device.type == "cuda":
        return resolved, "auto on CUDA: the recipe's AMP setting"
    if not _cpu_has_bf16_cached():
        return resolved, "auto on CPU without native bf16 instructions: fp32"
    dw = depthwise_convs(model)
    if dw:
        return resolved, (f"auto on a CPU with native bf16: fp32, because the model has {len(dw)} "
                          "depthwise/grouped convolutions, slower in bf16 than fp32 here")
    return resolved, ("auto on a CPU with native bf16: bf16 autocast (no depthwise/grouped "
                      "convolutions)")


def resolve_precision(precision: str, device: torch.device, amp: bool = True,
                      amp_dtype: str = "float16", model: torch.nn.Module | None = None) -> str:
    """``fp32``, ``bf16`` or ``fp16``: what ``precision`` means on ``device`` for ``model``
    (``auto`` decides; see :func:`precision_choice` for the rule and its reason)."""
    if precision not in PRECISIONS:
        raise TrainingError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise TrainingError("precision fp16 needs CUDA (on CPU use bf16 or fp32)")
        return precision
    if device.type == "cuda":
        return ("fp16" if amp_dtype == "float16" else "bf16") if amp else "fp32"
    if device.type == "cpu" and _cpu_has_bf16_cached() and not depthwise_convs(model):
        return "bf16"
    return "fp32"


def resolve_channels_last(channels_last: bool | None, device: torch.device,
                          precision: str = "bf16") -> bool:
    """The memory format: ``channels_last`` when set, else NHWC for bf16 autocast on CPU (the
    measured fast path) and NCHW elsewhere. Not for fp32 on CPU: torch 2.13's channels-last
    fp32 weight gradient of a 1x1 stride-2 convolution with 6 input channels came out wrong
    (up to 0.9 relative, varying from call to call) on an AVX2 CPU."""
    if channels_last is not None:
        return bool(channels_last)
    return device.type == "cpu" and precision == "bf16"


@torch.no_grad()
def channels_last_works(model: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether the model's own code runs on channels-last tensors (``x.view(n, -1)`` on a
    channels-last activation does not): one eval-mode forward of ``x``, nothing updated; the
    model is left in the usual layout."""
    try:
        with eval_mode(model):
            model.to(memory_format=torch.channels_last)
            model(x.contiguous(memory_format=torch.channels_last))
        return True
    except RuntimeError:
        return False
    finally:
        model.to(memory_format=torch.contiguous_format)


def autocast(device: torch.device, precision: str):
    """An autocast context for a resolved precision (disabled for fp32)."""
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=precision != "fp32")


def memory_format_name(channels_last: bool) -> str:
    """``channels_last`` or ``contiguous`` (as recorded in summaries and checkpoints)."""
    return "channels_last" if channels_last else "contiguous"
