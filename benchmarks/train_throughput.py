"""Training throughput (images/s) of ResNet-20 on 32x32 input for every precision x memory format.

Each combination (CPU: fp32 / bf16 autocast x NCHW / channels_last; CUDA: fp32 / fp16 AMP x the
same) takes the step ``pxprune.training.train.train`` takes: a crop+flip+normalised batch
from the data
pipeline, forward and loss under autocast, backward, SGD Nesterov step, re-zeroing of a 98 %
random mask (gradient hooks from ``Masks.attach``). The combinations and thread counts are
interleaved step by step inside one run (round r: 1 thread fp32 NCHW, 1 thread fp32 NHWC, ...,
2 threads bf16 NHWC), and the median step time of each is reported, so a machine shared with
other work slows every combination alike and the ratios stay fair. Results are merged into
benchmarks/results/train_throughput.json under the device kind, with the CPU model and flags.

    python benchmarks/train_throughput.py                   # CPU, 1 and 2 threads
    python benchmarks/train_throughput.py --device cuda     # on a GPU
    python benchmarks/train_throughput.py --stack 1,2,4,8,16,32 --threads 1   # stacked cells

``--stack K1,K2,...`` measures the stacked trainer instead (pxprune.training.stacked, issue 24):
K ResNet-20 cells, each with its own init, random 98 % mask and data seed, one step of
``train_step`` on batches from ``DeviceImages`` (uint8 data on the device, crop+flip there),
the Ks interleaved round by round; images/s in all and per cell go to
``benchmarks/results/train_throughput_stack_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from pxprune.data import ImageDataset, iterate_batches
from pxprune.data.device import DeviceImages
from pxprune.experiments.provenance import device_description, git_commit
from pxprune.masks import Masks
from pxprune.training.module_engine import Rezero
from pxprune.training.precision import CPU_BF16_FLAGS, autocast, cpu_flags, resolve_precision
from pxprune.training.stacked import StackedModel
from pxprune.training.stacked.engine import train_step
from pxprune.training.stacked.sgd import CellScaler, StackedSGD

ROOT = Path(__file__).resolve().parents[1]


def build_model() -> torch.nn.Module:
    """ResNet-20 (CIFAR, 10 classes) from the pxprune model zoo."""
    from pxprune.models import get

    return get("resnet20", num_classes=10)


def random_global_masks(model: torch.nn.Module, sparsity: float, seed: int = 0) -> Masks:
    """Keep exactly round((1-sparsity)*N) prunable weights chosen uniformly at random."""
    ones = Masks.ones(model)
    keep = int(round((1 - sparsity) * ones.total))
    g = torch.Generator().manual_seed(seed)
    flat = torch.zeros(ones.total, dtype=torch.bool)
    flat[torch.randperm(ones.total, generator=g)[:keep]] = True
    out, i = {}, 0
    for name, m in ones.items():
        out[name] = flat[i : i + m.numel()].reshape(m.shape)
        i += m.numel()
    return Masks(out)


def synthetic_cifar(n: int, seed: int) -> ImageDataset:
    """n random 3x32x32 uint8 images with 10 classes and CIFAR-10 statistics."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageDataset(images, labels, [str(i) for i in range(10)],
                        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "synthetic-cifar")


class Setup:
    """One combination: its own model, optimiser, mask upkeep and endless batch stream."""

    def __init__(self, device: torch.device, precision: str, channels_last: bool,
                 data: ImageDataset, batch: int, sparsity: float):
        torch.manual_seed(0)
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.model = build_model().to(device)
        masks = random_global_masks(self.model, sparsity)
        masks.attach(self.model)
        self.masks, self.rezero = masks, Rezero(self.model, masks)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9,
                                   nesterov=True, weight_decay=5e-4)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.data, self.batch, self.epoch = data, batch, 0
        self.batches = iter(())

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next augmented batch (a new epoch's order when one runs out)."""
        try:
            return next(self.batches)
        except StopIteration:
            self.epoch += 1
            self.batches = iterate_batches(self.data, self.batch, shuffle=True, seed=0,
                                           epoch=self.epoch, augment=True, device=self.device,
                                           drop_last=True)
            return next(self.batches)

    def step(self) -> float:
        """Seconds of one training step, batch preparation included."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        x, y = self.next_batch()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.rezero()
        sync()
        return time.perf_counter() - t0

    def masks_zero(self) -> bool:
        """Pruned weights still exactly zero, weights and momentum still float32."""
        params = dict(self.model.named_parameters())
        zero = all(torch.count_nonzero(params[n].detach()[~m.to(self.device)]) == 0
                   for n, m in self.masks.items())
        fp32 = all(p.dtype == torch.float32 for p in self.model.parameters()) and all(
            t.dtype == torch.float32 for s in self.opt.state.values() for t in s.values()
            if torch.is_tensor(t))
        return zero and fp32


def combinations(device: torch.device) -> list[tuple[str, bool]]:
    """(precision, channels_last) pairs measured on the device."""
    half = "fp16" if device.type == "cuda" else "bf16"
    return [(p, cl) for p in ("fp32", half) for cl in (False, True)]


def label(precision: str, channels_last: bool) -> str:
    return f"{precision} {'channels_last' if channels_last else 'NCHW'}"


def measure(device: torch.device, threads: list[int], rounds: int, batch: int,
            sparsity: float) -> dict:
    """Median step time of every (threads, precision, format), interleaved round by round."""
    data = synthetic_cifar(batch * 8, seed=1)
    setups = {(t, p, cl): Setup(device, p, cl, data, batch, sparsity)
              for t in threads for p, cl in combinations(device)}
    times: dict[tuple, list[float]] = {k: [] for k in setups}
    for _warm in range(2):  # warm-up: oneDNN primitive creation, allocator
        for (t, _p, _cl), s in setups.items():
            torch.set_num_threads(t)
            s.step()
    for r in range(rounds):
        for key, s in setups.items():
            torch.set_num_threads(key[0])
            times[key].append(s.step())
        print(f"round {r + 1}/{rounds}", flush=True)
    out: dict = {}
    for (t, p, cl), ts in times.items():
        med = sorted(ts)[len(ts) // 2]
        out.setdefault(f"{t}_threads", {})[label(p, cl)] = {
            "precision": p, "memory_format": "channels_last" if cl else "contiguous",
            "threads": t, "median_step_seconds": med, "images_per_s": batch / med,
            "step_seconds": ts, "masks_zero_and_fp32_state": setups[(t, p, cl)].masks_zero(),
        }
    for t in threads:
        row = out[f"{t}_threads"]
        base = row[label("fp32", False)]["images_per_s"]
        for v in row.values():
            v["speedup_over_fp32_nchw"] = v["images_per_s"] / base
    return out


class StackSetup:
    """K stacked cells: the stacked trainer's model, optimiser, scaler and device data."""

    def __init__(self, device: torch.device, precision: str, k: int, data: ImageDataset,
                 batch: int, sparsity: float):
        models, masks = [], []
        for i in range(k):
            torch.manual_seed(i)
            models.append(build_model())
            masks.append(random_global_masks(models[-1], sparsity, seed=i))
        pruned = {n: torch.stack([~m[n] for m in masks]).to(device) for n in masks[0]}
        self.stack = StackedModel(models, device)
        self.sgd = StackedSGD(self.stack.params, pruned, 5e-4, nesterov=True, momentum=True)
        self.sgd.rezero(self.stack.params)
        self.scaler = CellScaler(k, device, precision == "fp16")
        self.alive = torch.ones(k, dtype=torch.bool, device=device)
        self.data = DeviceImages(data, device)
        self.device, self.precision, self.k, self.batch = device, precision, k, batch
        self.plans = [self.data.plan(batch, seed, 0, True) for seed in range(k)]
        self.b = 0

    def step(self) -> float:
        """Seconds of one stacked step (K batches gathered, augmented, trained)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        n_batches = len(self.data) // self.batch
        x, y = self.data.batch(self.plans, None, self.batch, self.b % n_batches, True)
        self.b += 1
        train_step(self.stack, self.sgd, self.scaler, x, y, 0.05, 0.9, self.alive, 0.0,
                   self.device, self.precision)
        sync()
        return time.perf_counter() - t0

    def masks_zero(self) -> bool:
        """Every cell's pruned weights still exactly zero, every cell still finite."""
        return bool(self.alive.all()) and all(
            torch.count_nonzero(self.stack.params[n].detach()[p]) == 0
            for n, p in self.sgd.pruned.items())


def measure_stack(device: torch.device, ks: list[int], rounds: int, batch: int,
                  sparsity: float, precision: str) -> dict:
    """Median step time of every stack size K, interleaved round by round."""
    data = synthetic_cifar(batch * 4, seed=1)
    setups: dict = {k: StackSetup(device, precision, k, data, batch, sparsity) for k in ks}
    setups["ordinary"] = Setup(device, precision, False, data, batch, sparsity)  # train()'s step
    times: dict = {k: [] for k in setups}
    for s in setups.values():  # warm-up: oneDNN primitives, allocator
        s.step()
    for r in range(rounds):
        for k, s in setups.items():
            times[k].append(s.step())
        print(f"round {r + 1}/{rounds}", flush=True)
    ordinary = times.pop("ordinary")
    out: dict = {}
    for k, ts in times.items():
        med = sorted(ts)[len(ts) // 2]
        out[f"stack_{k}"] = {"cells": k, "median_step_seconds": med,
                             "images_per_s_all": k * batch / med,
                             "images_per_s_per_cell": batch / med, "step_seconds": ts,
                             "masks_zero": setups[k].masks_zero()}
    med = sorted(ordinary)[len(ordinary) // 2]
    base = batch / med
    for v in out.values():
        v["speedup_over_one_cell_alone"] = v["images_per_s_all"] / base
    out["ordinary_trainer_one_cell"] = {"cells": 1, "median_step_seconds": med,
                                        "images_per_s_all": base, "step_seconds": ordinary}
    return out


def main_stack(args: argparse.Namespace, device: torch.device) -> dict:
    """The ``--stack`` benchmark: measure, print, write its own JSON."""
    ks = [int(k) for k in args.stack.split(",")]
    threads = int(args.threads.split(",")[0])
    if device.type == "cpu":
        torch.set_num_threads(threads)
    precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    rounds = args.rounds or (2 if device.type == "cpu" else 30)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results = measure_stack(device, ks, rounds, args.batch_size, args.sparsity, precision)
    print(f"ordinary trainer, one cell: "
          f"{results['ordinary_trainer_one_cell']['images_per_s_all']:.1f} img/s")
    for v in results.values():
        if "speedup_over_one_cell_alone" in v:
            print(f"K={v['cells']:>3} {v['images_per_s_all']:9.1f} img/s in all "
                  f"{v['images_per_s_per_cell']:8.1f} per cell "
                  f"({v['speedup_over_one_cell_alone']:.2f}x the ordinary trainer's one cell)")
    entry = {
        "benchmark": "stacked ResNet-20 training step (pxprune.training.stacked.train_step): K "
                     "cells, each its own init, random 98 % mask and data seed",
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "device": device_description(device), "cpu_model": cpu_model(),
        "device_type": device.type, "threads": threads if device.type == "cpu" else None,
        "precision": precision, "torch_version": torch.__version__,
        "python": platform.python_version(), "git_commit": git_commit(),
        "batch_size_per_cell": args.batch_size, "sparsity": args.sparsity, "rounds": rounds,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": time.perf_counter() - t0,
        "load_average_1_5_15_before": list(load_before),
        "load_average_1_5_15_after": list(os.getloadavg()),
        "results": results,
        "note": args.note or "Median of the rounds (the slower of two when there are two); "
        "every K and the ordinary trainer's step (train()'s loop: loader batch, forward, "
        "backward, SGD Nesterov, re-zeroing) interleaved step by step in one run, so a shared "
        "machine slows all alike. images_per_s_all = K x batch / step time; the speed-up is "
        "over the ordinary trainer's one cell.",
    }
    out = Path(args.out_stack or ROOT / f"benchmarks/results/train_throughput_stack_"
                                        f"{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(entry, indent=2) + "\n")
    print(f"wrote {out}")
    return entry


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() where unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and merge the result into the JSON file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (CPU)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds (default 15 on CPU, 50 on CUDA)")
    ap.add_argument("--sparsity", type=float, default=0.98)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/train_throughput.json"))
    ap.add_argument("--stack", default=None,
                    help="comma-separated stack sizes K: measure the stacked trainer instead")
    ap.add_argument("--precision", default=None, help="--stack: fp32 (CPU default) or fp16")
    ap.add_argument("--note", default=None, help="--stack: the JSON's note (e.g. the load)")
    ap.add_argument("--out-stack", default=None, help="--stack: the JSON to write")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.stack:
        return main_stack(args, device)
    threads = [int(t) for t in args.threads.split(",")] if device.type == "cpu" else [
        torch.get_num_threads()]
    rounds = args.rounds or (15 if device.type == "cpu" else 50)
    load_before = os.getloadavg()
    results = measure(device, threads, rounds, args.batch_size, args.sparsity)
    for t, row in results.items():
        for name, v in row.items():
            print(f"{t:>10} {name:<20} {v['images_per_s']:7.1f} img/s "
                  f"({v['speedup_over_fp32_nchw']:.2f}x)")
    flags = cpu_flags()
    entry = {
        "benchmark": "ResNet-20 training step (data pipeline, masked SGD step) per precision "
                     "and memory format",
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "device": device_description(device),
        "cpu_model": cpu_model(),
        "cpu_bf16_flags": sorted(flags & set(CPU_BF16_FLAGS)),
        "auto_precision": resolve_precision("auto", device),
        "device_type": device.type,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "batch_size": args.batch_size,
        "sparsity": args.sparsity,
        "rounds": rounds,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_1_5_15_before": list(load_before),
        "load_average_1_5_15_after": list(os.getloadavg()),
        "results": results,
        "note": "Median images/s of one training step (batch from the crop+flip+normalise "
        "pipeline, forward+loss under autocast, backward, SGD Nesterov step, re-zeroing of a "
        "random 98 % mask). All combinations and thread counts were interleaved step by step "
        "in one run on a machine shared with other jobs, so absolute figures vary with the "
        "load but the ratios are fair. Evaluation is excluded (pxprune evaluates in fp32 on "
        "CPU).",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault("runs", {})[device.type] = entry
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")
    return entry


if __name__ == "__main__":
    main()
