"""Does ``--precision auto`` pick the faster training precision for the model? (issue 23 item 2)

For ResNet-20, ResNet-56 (CIFAR, 32 px) and EfficientNet-Lite0 (64 px), on ONE thread, batch 64,
channels-last: training steps (forward, backward, SGD step) in fp32 and in bf16 autocast,
alternated in rounds inside one process so that both see the same machine load; the ratio is
the median over rounds of bf16 img/s / fp32 img/s. ``auto`` is what
:func:`pxprune.training.precision.precision_choice` resolves for the model on this CPU.

On a CPU without native bf16 (no ``avx512_bf16``/``amx_bf16``) autocast bf16 is emulated and far
slower for every model, and ``auto`` is fp32 for all three; the depthwise rule (fp32 for Lite0,
bf16 for the ResNets) only acts on a CPU with native bf16.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision_auto.py
writes ``benchmarks/results/precision_auto.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pxprune import models
from pxprune.training.precision import autocast, cpu_has_bf16, precision_choice

RESULT = Path(__file__).parent / "results" / "precision_auto.json"
MODELS = (("resnet20", 32), ("resnet56", 32), ("efficientnet_lite0", 64))


def steps_per_s(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, precision: str, steps: int) -> tuple[float, float]:
    """(img/s wall, img/s CPU time) of ``steps`` training steps in ``precision``."""
    dev = torch.device("cpu")
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        with autocast(dev, precision):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    n = steps * x.shape[0]
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def measure(name: str, size: int, batch: int, steps: int, rounds: int) -> dict:
    """Alternated fp32 / bf16 rounds for one model; auto's choice and whether it is the faster."""
    torch.manual_seed(0)
    model = models.get(name, num_classes=10).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    for p in ("fp32", "bf16"):  # warm-up (oneDNN primitive creation)
        steps_per_s(model, opt, x, y, p, 1)
    runs: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": []}
    for r in range(rounds):
        order = ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")
        for p in order:
            runs[p].append(steps_per_s(model, opt, x, y, p, steps))
    auto, reason = precision_choice("auto", torch.device("cpu"), model=model)
    ratios = [b[0] / a[0] for a, b in zip(runs["fp32"], runs["bf16"], strict=True)]
    ratios_cpu = [b[1] / a[1] for a, b in zip(runs["fp32"], runs["bf16"], strict=True)]
    ratio = statistics.median(ratios)
    faster = "bf16" if ratio > 1 else "fp32"
    row = {
        "model": name, "image_size": size, "batch": batch, "steps_per_round": steps,
        "rounds": rounds,
        "fp32_img_s": round(statistics.median(v[0] for v in runs["fp32"]), 1),
        "bf16_img_s": round(statistics.median(v[0] for v in runs["bf16"]), 1),
        "fp32_img_per_cpu_s": round(statistics.median(v[1] for v in runs["fp32"]), 1),
        "bf16_img_per_cpu_s": round(statistics.median(v[1] for v in runs["bf16"]), 1),
        "bf16_over_fp32": round(ratio, 3),
        "bf16_over_fp32_per_round": [round(v, 3) for v in ratios],
        "bf16_over_fp32_cpu_time": round(statistics.median(ratios_cpu), 3),
        "faster": faster, "auto": auto, "auto_reason": reason, "auto_is_faster": auto == faster,
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    """Measure every model and write the result file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    rows = [measure(n, s, args.batch, args.steps, args.rounds) for n, s in MODELS]
    cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                      .splitlines() if ln.startswith("model name")), "unknown")
    res = {
        "cpu_model": cpu_model,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "device": f"cpu ({platform.machine()}, native bf16: {cpu_has_bf16()})",
        "threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__, "commit": head, "load_average_at_start": os.getloadavg(),
        "memory_format": "channels_last",
        "note": "machine shared with other jobs: absolute img/s are low; the ratio is measured "
                "inside one process with fp32 and bf16 rounds alternated",
        "rows": rows, "auto_is_faster_everywhere": all(r["auto_is_faster"] for r in rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
