"""Checking a device name before anything runs on it: cpu, cuda, cuda:N, mps, where present."""

from __future__ import annotations

import torch

from .errors import DeviceError

SUPPORTED = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def check_device(device: str | torch.device, *, here: bool = True) -> str:
    """The device as torch names it (``cuda:1``), or a one-line DeviceError saying what is
    available here; ``here=False`` (jobs submitted to other machines) checks only the name."""
    text = str(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {text!r} is not a device name: use cpu, cuda, cuda:N or "
                          f"mps") from None
    if dev.type not in SUPPORTED:
        raise DeviceError(f"device {text!r}: pxprune runs on cpu, cuda or mps, not "
                          f"{dev.type}")
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise DeviceError(f"device {text!r}: there is one CPU device; use --device cpu "
                              f"(threads: OMP_NUM_THREADS)")
        return "cpu"
    if not here:
        return str(dev)
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device {text!r}: Apple MPS is not available here; use "
                              f"--device cpu")
        return str(dev)
    if not torch.cuda.is_available():
        why = ("this torch was built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible")
        raise DeviceError(f"device {text!r}: {why}; use --device cpu")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise DeviceError(f"device {text!r}: only {count} CUDA device(s) are visible "
                          f"(cuda:0 to cuda:{count - 1})")
    return str(dev)
