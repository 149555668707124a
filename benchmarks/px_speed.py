"""One PX scoring round against one plain forward pass, on ResNet-20 with 100 CIFAR-10 images.

All cases are timed in the same process, interleaved, median of ``--repeats`` after a warm-up:
- ``forward``: the real network (float32, eval mode, no grad) over the 100 images;
- ``px``: ``pxprune.score(model, "px", x)``, the default (the authors' 2024 scoring): copy 1
  (the real network, batch-statistics BatchNorm, no grad) and copy 2 (no nonlinearities,
  squared weights) forward + backward over the 100 images, float32 (contiguous on CPU, where
  channels-last copies were not stable across calls with several threads; channels-last on CUDA);
- ``px_float64``: the same in float64 (the reference);
- ``px_bound``: ``"px[variant=bound]"`` (DESIGN §3.2): the gate-recording forward, copy 1 over
  the 100 images in float32 (power-of-two rescaled), copy 2 on one all-ones input in float64;
- ``px_bound_float64``: the bound with both copies in float64;
- ``train_forward`` / ``train_step``: the same network in train mode (batch-statistics
  BatchNorm, as both PX copies run it), a forward without grad and a forward + backward of the
  summed logits: the floor of a PX round is about one ``train_forward`` (copy 1) plus one
  ``train_step`` (copy 2);
- ``px_view``: a default round of the same ResNet-20 behind a forward that first flattens
  its input with ``x.view(n, -1)`` (as a user's model flattening a feature map does): that
  fails on channels-last tensors, so PX scores it in the usual contiguous layout (the
  fallback) instead; ``view_forward`` is that model's plain forward.
Targets (issue 11, 2 threads): the default within 4x of one plain forward (a forward and a
forward-backward over the data: about 4x is the floor of the design), the bound within 3x.
The same on ResNet-56 (``resnet56_*``), whose bound copy 1 (about 2**370) outgrows float32 and
runs as the rescaled float32 copy (per-layer powers of two) instead of float64.

    .venv/bin/python benchmarks/px_speed.py [--repeats 7] [--threads 1,2] [--device cpu|cuda]

Writes benchmarks/results/px_speed.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

import pxprune
from pxprune.data.sampling import pruning_batch
from pxprune.experiments.provenance import device_description, git_commit
from pxprune.experiments.resolve import load_any_dataset
from pxprune.models import get

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "px_speed.json"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def _train_mode(model: torch.nn.Module) -> Iterator[None]:
    """Train mode with the running statistics restored afterwards (the model stays as it was)."""
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        yield
    finally:
        model.eval()
        model.load_state_dict(buffers)


def cases_for(model: torch.nn.Module, x: torch.Tensor, prefix: str) -> dict:
    """The plain forward, a default PX round and a float64 PX round of ``model`` on ``x``."""

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def train_forward() -> None:
        with _train_mode(model), torch.no_grad():
            model(x)

    def train_step() -> None:
        with _train_mode(model):
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()

    return {
        f"{prefix}forward": forward,
        f"{prefix}train_forward": train_forward,
        f"{prefix}train_step": train_step,
        f"{prefix}px": lambda: pxprune.score(model, "px", x),
        f"{prefix}px_float64": lambda: pxprune.score(model, "px", x, precision="float64"),
        f"{prefix}px_bound": lambda: pxprune.score(model, "px[variant=bound]", x),
        f"{prefix}px_bound_float64": lambda: pxprune.score(model, "px[variant=bound]", x,
                                                           precision="float64"),
    }


class ViewFirst(torch.nn.Module):
    """``net`` behind ``x.view(n, -1)``: a forward that only takes contiguous tensors."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(len(x), -1).view(x.shape))


def view_cases(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """The plain forward and a default PX round of ``ViewFirst(model)`` on ``x``."""
    user = ViewFirst(model).eval()

    def forward() -> None:
        with torch.no_grad():
            user(x)

    return {"view_forward": forward, "px_view": lambda: pxprune.score(user, "px", x)}


def _base(case: str) -> str:
    """The plain forward a case is compared with."""
    if case.startswith("resnet56"):
        return "resnet56_forward"
    return "view_forward" if case in ("px_view", "view_forward") else "forward"


def main() -> None:
    """Time the three cases and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", default="", help="torch thread counts to measure, e.g. 1,2 "
                    "(default: torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(RESULT))
    ap.add_argument("--load", default="other work may have run on this 2-core machine: compare "
                    "ratios, which are measured interleaved in one process",
                    help="what else ran on the machine, recorded in the JSON")
    ap.add_argument("--no-float64", action="store_true",
                    help="skip the float64 references (they take most of the time)")
    args = ap.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [
        torch.get_num_threads()]

    dataset = load_any_dataset("cifar10", "train")
    x, _ = pruning_batch(dataset, per_class=10, seed=0)
    x = x.to(args.device)
    cases: dict[str, Callable[[], object]] = {}
    for name, prefix in (("resnet20", ""), ("resnet56", "resnet56_")):
        torch.manual_seed(0)
        model = get(name).to(args.device).eval()
        cases.update({k: v for k, v in cases_for(model, x, prefix).items()
                      if not (args.no_float64 and k.endswith("float64"))})
        if name == "resnet20":
            cases.update(view_cases(model, x))
    runs = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for fn in cases.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, fn in cases.items():
                times[name].append(timed(fn, args.device))
        median = {name: statistics.median(t) for name, t in times.items()}
        fastest = {name: min(t) for name, t in times.items()}  # the cost without interference
        runs[f"{threads}_threads"] = {
            "device": device_description(args.device),
            "median_s": median,
            "min_s": fastest,
            "all_s": times,
            "ratios_to_forward": {
                name: t / median[_base(name)] for name, t in median.items()},
            "min_ratios_to_forward": {
                name: t / fastest[_base(name)] for name, t in fastest.items()},
            "px_to_floor": median["px"] / (median["train_forward"] + median["train_step"]),
            "min_px_to_floor": fastest["px"] / (fastest["train_forward"] + fastest["train_step"]),
        }
        print(f"-- {threads} torch thread(s): median (min) of {args.repeats}")
        for name, t in median.items():
            base = _base(name)
            print(f"{name:<22} {1000 * t:8.1f} ms   {t / median[base]:.2f}x "
                  f"({fastest[name] / fastest[base]:.2f}x) forward")
        run = runs[f"{threads}_threads"]
        print(f"px round / (train_forward + train_step) = {run['px_to_floor']:.2f} "
              f"({run['min_px_to_floor']:.2f})")
    result = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "model": "resnet20 and resnet56 (1x1 shortcuts), Kaiming init, seed 0",
        "images": f"{len(x)} CIFAR-10 training images (JPEG copy), 10 per class",
        "repeats": args.repeats,
        "target_ratio": {"px": 4.0, "px_view": 4.0, "px_bound": 3.0},
        "load": args.load,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
