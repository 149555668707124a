"""Training throughput (images/s) of ResNet-20 on CIFAR-sized input, dense and with a 98 % mask.

Runs ``pxprune.train.train`` itself (data order, crop+flip, normalisation, masked SGD step with
the grad hooks and the re-zeroing, AMP on CUDA) on synthetic 32x32 uint8 images, for a few
epochs, and reports the images/s of each epoch after the first (warm-up). Sparse weights are
stored dense, so the mask does not make the convolutions cheaper: the point is to measure the
cost of holding the mask fixed. Results are merged into benchmarks/results/train_throughput.json
under the device kind (cpu / cuda), with device, torch version, git commit and command.

    python benchmarks/train_throughput.py                 # CPU here
    python benchmarks/train_throughput.py --device cuda   # on a GPU (AMP on)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from pxprune.data import ImageDataset
from pxprune.masks import Masks
from pxprune.provenance import device_description, git_commit
from pxprune.recipes import Recipe
from pxprune.train import train

ROOT = Path(__file__).resolve().parents[1]


def build_model() -> torch.nn.Module:
    """ResNet-20 (CIFAR, 10 classes, 1x1-conv shortcuts) from the pxprune model zoo."""
    from pxprune.models import get

    return get("resnet20", num_classes=10)


def random_global_masks(model: torch.nn.Module, sparsity: float, seed: int = 0) -> Masks:
    """Keep exactly round((1-sparsity)*N) prunable weights chosen uniformly at random."""
    ones = Masks.ones(model)
    total = ones.total
    keep = int(round((1 - sparsity) * total))
    g = torch.Generator().manual_seed(seed)
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total, generator=g)[:keep]] = True
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


def measure(device: str, sparsity: float, steps: int, epochs: int, batch: int) -> dict:
    """Train ResNet-20 for ``epochs`` of ``steps`` batches; images/s of every epoch."""
    torch.manual_seed(0)
    model = build_model()
    masks = random_global_masks(model, sparsity) if sparsity > 0 else None
    train_set = synthetic_cifar(steps * batch, seed=1)
    test_set = synthetic_cifar(batch, seed=2)
    recipe = Recipe(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, epochs=epochs,
                    batch_size=batch, schedule="onecycle", milestones=(), amp=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(model, masks, train_set, test_set, recipe, out_dir=tmp, device=device,
              progress=False, log=None)
        wall = time.perf_counter() - t0
        lines = [json.loads(s) for s in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    per_epoch = [r["images_per_s"] for r in lines]
    timed = per_epoch[1:] or per_epoch
    if masks is not None:
        zero = all(torch.count_nonzero(p.detach()[~masks[n].to(p.device)]) == 0
                   for n, p in model.named_parameters() if n in masks)
    else:
        zero = True
    return {
        "sparsity": sparsity,
        "density": masks.density() if masks is not None else 1.0,
        "images_per_s": sum(timed) / len(timed),
        "images_per_s_per_epoch": per_epoch,
        "steps_per_epoch": steps,
        "epochs": epochs,
        "wall_seconds": wall,
        "pruned_weights_zero_after": bool(zero),
    }


def interleaved_steps(device: str, sparsity: float, rounds: int, batch: int) -> dict:
    """Median time of one SGD step, dense and masked, alternating so that load hits both alike.

    The masked step is the one train() takes: gradient hooks from ``Masks.attach`` plus the
    cached re-zeroing after the optimiser step.
    """
    from pxprune.train import _Rezero

    dev = torch.device(device)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    setups = {}
    for kind in ("dense", "masked"):
        torch.manual_seed(0)
        model = build_model().to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
        rezero = None
        if kind == "masked":
            masks = random_global_masks(model, sparsity)
            masks.attach(model)
            rezero = _Rezero(model, masks)
        setups[kind] = (model, opt, rezero)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")

    def step(kind: str) -> float:
        model, opt, rezero = setups[kind]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if rezero is not None:
            rezero()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"dense": [], "masked": []}
    for kind in ("dense", "masked"):  # warm-up
        step(kind)
    for _ in range(rounds):
        for kind in ("dense", "masked"):
            times[kind].append(step(kind))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {
        "rounds": rounds,
        "median_step_seconds": med,
        "images_per_s": {k: batch / v for k, v in med.items()},
        "masked_over_dense": med["dense"] / med["masked"],
        "step_seconds": times,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and merge the result into the JSON file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None, help="batches per epoch")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs (the first is warm-up); default 2 on CPU, 3 on CUDA")
    ap.add_argument("--sparsity", type=float, default=0.98)
    ap.add_argument("--rounds", type=int, default=None, help="interleaved dense/masked steps")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/train_throughput.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = args.steps or (6 if device.type == "cpu" else 100)
    args.rounds = args.rounds or (8 if device.type == "cpu" else 50)

    load_before = os.getloadavg()
    epochs = args.epochs or (2 if device.type == "cpu" else 3)
    results = {}
    for sp in (0.0, args.sparsity):
        r = measure(str(device), sp, steps, epochs, args.batch_size)
        results["dense" if sp == 0 else f"sparse_{sp:g}"] = r
        print(f"{device.type} sparsity {sp:g}: {r['images_per_s']:.1f} images/s "
              f"(epochs {[round(v, 1) for v in r['images_per_s_per_epoch']]})", flush=True)
    dense, sparse = results["dense"]["images_per_s"], results[f"sparse_{args.sparsity:g}"][
        "images_per_s"]
    steps_only = interleaved_steps(str(device), args.sparsity, args.rounds, args.batch_size)
    print(f"interleaved step: dense {steps_only['images_per_s']['dense']:.1f}, masked "
          f"{steps_only['images_per_s']['masked']:.1f} images/s", flush=True)
    entry = {
        "benchmark": "ResNet-20 training throughput, 32x32 input, via pxprune.train.train",
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "device": device_description(device),
        "device_type": device.type,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "amp": device.type == "cuda",
        "batch_size": args.batch_size,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_1_5_15_before": list(load_before),
        "load_average_1_5_15_after": list(os.getloadavg()),
        "results": results,
        "sparse_over_dense": sparse / dense,
        "interleaved_step": steps_only,
        "note": "results: images/s of train() averaged over epochs after the first (training "
        "step, data pipeline crop+flip+normalise and mask upkeep included, evaluation "
        "excluded). interleaved_step: median of alternating dense/masked model steps on one "
        "fixed batch, the fairer comparison on a shared, loaded machine. Masks are applied to "
        "dense tensors, so no speed-up from sparsity is expected.",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault("runs", {})[device.type] = entry
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"sparse/dense {entry['sparse_over_dense']:.3f}; wrote {out}")
    return entry


if __name__ == "__main__":
    main()
