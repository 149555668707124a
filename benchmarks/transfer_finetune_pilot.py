"""Dense pilot of the CPU fine-tuning protocol (issue 23): ImageNet EfficientNet-Lite0 on CIFAR-10.

Two phases, both on ONE thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``):

1. ``--sizes 32,48,64``: training-step and evaluation throughput per input side on a few hundred
   images (batch 64, fp32 channels-last: what ``--precision auto`` picks for Lite0), to extrapolate
   the length of a cell (probe features on 60,000 images + E epochs of 50,000 + E tests of 10,000).
2. ``--size S --epochs E``: the real dense fine-tuning on all 50,000 training and 10,000 test
   images, starting from the ridge probe on the dense features (as a transfer cell does), with the
   recipe given (default ``lite0_finetune``); per-epoch accuracy and seconds.

Writes ``benchmarks/results/transfer_finetune_pilot.json`` (merged with what is there):
    PXPRUNE_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \
        benchmarks/transfer_finetune_pilot.py --sizes 32,48,64
    PXPRUNE_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \
        benchmarks/transfer_finetune_pilot.py --size 48 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from pxprune.experiments.config import TransferConfig
from pxprune.experiments.transfer_run import load_pretrained, load_transfer_data
from pxprune.training.recipes import get_recipe
from pxprune.training.train import train
from pxprune.transfer.features import prepare_inputs
from pxprune.transfer.finetune import resize_dataset
from pxprune.transfer.probe import linear_probe

RESULT = Path(__file__).parent / "results" / "transfer_finetune_pilot.json"


def commit() -> str:
    """The checkout's commit (with ``-dirty`` when it has changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def throughput(cfg: TransferConfig, size: int, n: int, batch: int) -> dict:
    """Training-step and eval img/s at ``size`` px (fp32 channels-last, one thread)."""
    data = load_transfer_data(replace(cfg, image_size=size, train_per_class=n // 10 + 1))
    model, _ = load_pretrained(replace(cfg, image_size=size), data)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = prepare_inputs(data.train.images[:n], data.mean, data.std, size)
    x = x.contiguous(memory_format=torch.channels_last)
    y = data.train.labels[:n]
    steps = [(x[i:i + batch], y[i:i + batch]) for i in range(0, n - batch + 1, batch)]
    xb, yb = steps[0]
    F.cross_entropy(model(xb), yb).backward()  # warm-up
    t, c = time.perf_counter(), time.process_time()
    for xb, yb in steps:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    train_ips = len(steps) * batch / (time.perf_counter() - t)
    train_cpu_ips = len(steps) * batch / (time.process_time() - c)
    model.eval()
    with torch.no_grad():
        model(x[:256])
        t, c = time.perf_counter(), time.process_time()
        for i in range(0, n, 256):
            model(x[i:i + 256])
        eval_ips = n / (time.perf_counter() - t)
        eval_cpu_ips = n / (time.process_time() - c)
    return {"size": size, "train_img_s": round(train_ips, 1), "eval_img_s": round(eval_ips, 1),
            "train_img_per_cpu_s": round(train_cpu_ips, 1),
            "eval_img_per_cpu_s": round(eval_cpu_ips, 1), "images": n, "batch": batch}


def estimate(tp: dict, epochs: int, train: int = 50_000, test: int = 10_000) -> float:
    """CPU seconds of a dense cell (one idle core): probe features (train + test) + epochs x
    (train + test), from the CPU-time rates (wall time is inflated on a shared machine)."""
    ev = (train + test) / tp["eval_img_per_cpu_s"]
    return ev + epochs * (train / tp["train_img_per_cpu_s"] + test / tp["eval_img_per_cpu_s"])


def pilot(cfg: TransferConfig, size: int, epochs: int, recipe_name: str, lr: float | None,
          precision: str, out_dir: Path) -> dict:
    """Dense fine-tuning on the full data from the dense probe head; its per-epoch record."""
    cfg = replace(cfg, image_size=size)
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_transfer_data(cfg)
    model, _ = load_pretrained(cfg, data)
    t, c = time.perf_counter(), time.process_time()
    probe = linear_probe(model, data.train, data.test, size=size, install=True)
    probe_s, probe_cpu = time.perf_counter() - t, time.process_time() - c
    print(f"dense probe {100 * probe.test_accuracy:.2f} % ({probe_s:.0f} s)", flush=True)
    recipe = get_recipe(recipe_name, epochs=epochs, precision=precision,
                        **({"lr": lr} if lr else {}))
    cpu: list[float] = [time.process_time()]
    summary = train(model, None, resize_dataset(data.train, size),
                    resize_dataset(data.test, size), recipe, out_dir=out_dir, seed=cfg.seed,
                    progress=False, log=lambda m: print(m, flush=True),
                    callback=lambda _r: cpu.append(time.process_time()))
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    for r, a, b in zip(metrics, cpu, cpu[1:], strict=False):
        r["cpu_seconds"] = round(b - a, 1)
    return {
        "size": size, "epochs": epochs, "recipe": recipe_name, "recipe_fields": recipe.to_dict(),
        "train_images": len(data.train), "test_images": len(data.test),
        "probe_test_acc": round(100 * probe.test_accuracy, 2), "probe_seconds": round(probe_s, 1),
        "probe_cpu_seconds": round(probe_cpu, 1),
        "per_epoch": [{k: r[k] for k in ("epoch", "lr", "train_loss", "train_acc", "test_acc",
                                           "seconds", "cpu_seconds", "images_per_s")}
                      for r in metrics],
        "final_test_acc": summary["final_test_acc"], "precision": summary.get("precision"),
        "memory_format": summary.get("memory_format"),
        "cell_seconds_dense": round(time.perf_counter() - t0, 1),
        "cell_cpu_seconds_dense": round(time.process_time() - c0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the phases asked for and merge them into the result file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="", help="throughput sides, e.g. 32,48,64")
    p.add_argument("--throughput-images", type=int, default=384)
    p.add_argument("--size", type=int, default=None, help="full pilot side")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--recipe", default="lite0_finetune")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--precision", default="fp32", help="fp32: what auto picks for Lite0 here")
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TransferConfig(backbone="efficientnet_lite0", dataset="cifar10", method="dense",
                         sparsity=0.0, mode="finetune", train_per_class=0, test_per_class=0)
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    env = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
           "device": f"cpu ({platform.processor() or platform.machine()})",
           "threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
           "torch": torch.__version__, "commit": commit(),
           "load_average_at_start": os.getloadavg()}
    if args.sizes:
        rows = []
        for s in (int(v) for v in args.sizes.split(",")):
            row = throughput(cfg, s, args.throughput_images, 64)
            row["estimated_dense_cell_seconds"] = {str(e): round(estimate(row, e))
                                                   for e in (1, 2, 3, 4, 6, 8)}
            print(row, flush=True)
            rows.append(row)
        res["throughput"] = {**env, "rows": rows, "precision": "fp32",
                             "memory_format": "channels_last"}
    if args.size:
        with tempfile.TemporaryDirectory() as tmp:
            run = pilot(cfg, args.size, args.epochs, args.recipe, args.lr, args.precision,
                        Path(tmp))
        run.update(env)
        res.setdefault("pilots", []).append(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
