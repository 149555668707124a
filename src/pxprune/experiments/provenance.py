"""Where a result came from: device, library versions, git commit and command, for results files."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from .. import __version__

_HERE = Path(__file__).resolve().parent


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_description(device: str | torch.device = "cpu") -> str:
    """``GPU: <name> (CUDA x.y)`` or ``CPU: <model> (<cores> logical cores, <n> torch threads)``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(device.index or 0)} (CUDA {torch.version.cuda})"
    return (f"CPU: {cpu_name()} ({os.cpu_count()} logical cores visible, "
            f"{torch.get_num_threads()} torch threads)")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=_HERE,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_commit() -> str | None:
    """HEAD of the checkout pxprune is imported from (None outside a git checkout)."""
    out = _git("rev-parse", "HEAD")
    if out is None:
        return None
    return out.strip() or None


def dirty_files() -> list[str] | None:
    """Tracked files with uncommitted changes (then the commit alone does not describe the code)."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else [line[3:] for line in out.splitlines() if line.strip()]


_CLI_ARGV: list[str] | None = None  # set by pxprune.cli.main for the command being run


def set_cli_argv(argv: list[str] | None) -> None:
    """Record the arguments ``pxprune.cli.main`` was given (``None``: the process's own)."""
    global _CLI_ARGV
    _CLI_ARGV = None if argv is None else list(argv)


def cli_argv() -> list[str]:
    """The pxprune command's arguments: those given to ``cli.main(argv)`` when it was called
    from code (tests, notebooks), else ``sys.argv[1:]``; what config files record."""
    return list(sys.argv[1:]) if _CLI_ARGV is None else list(_CLI_ARGV)


def environment(device: str | torch.device = "cpu") -> dict[str, object]:
    """Device, torch and Python versions, git commit, uncommitted files and the command line."""
    return {
        "device": device_description(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "git_dirty": dirty_files(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def record() -> dict[str, object]:
    """What every ``config.json`` records of where it came from: the command's arguments and
    the pxprune, torch and Python versions."""
    return {"argv": cli_argv(), "pxprune": __version__, "torch": torch.__version__,
            "python": platform.python_version()}
