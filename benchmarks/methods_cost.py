"""Time and peak memory of one scoring round of every method on a CIFAR ResNet-20.

Each method runs in a fresh subprocess (so peak memory is its own): the worker builds the model
and 100 CIFAR-10 training images (the pruning split, 10 per class, from $PXPRUNE_DATA or
../shared/data), does one warm-up round, then times ``repeats`` rounds and reports
the median. Memory is the peak resident set size during one round above the resident size before
it (Linux: the peak is reset through /proc/self/clear_refs; elsewhere a ru_maxrss delta, which
reads 0 when a round stays below the setup's peak). On CUDA, torch.cuda.max_memory_allocated.

    python benchmarks/methods_cost.py [--repeats 5] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "methods_cost.json"

# (label, method, options)
CASES: list[tuple[str, str, dict]] = [
    ("random", "random", {}),
    ("magnitude", "magnitude", {}),
    ("snip", "snip", {}),
    ("grasp", "grasp", {}),
    ("synflow", "synflow", {}),
    ("synflow_l2", "synflow_l2", {}),
    ("ntksap", "ntksap", {}),
    ("px", "px", {}),
    ("px (float64)", "px", {"precision": "float64"}),
    ("px[variant=bound]", "px", {"variant": "bound"}),
    ("px[variant=bound] (float64)", "px", {"variant": "bound", "precision": "float64"}),
]


def cifar_images(per_class: int = 10):
    """The seeded class-balanced pruning split (``per_class`` per class) of CIFAR-10, normalised."""
    from pxprune.data.sampling import pruning_batch
    from pxprune.experiments.resolve import load_any_dataset

    x, y = pruning_batch(load_any_dataset("cifar10", "train"), per_class=per_class, seed=0)
    return x, y, f"CIFAR-10 (JPEG copy) train, pruning split, {per_class} per class"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(label: str, repeats: int, device: str) -> dict:
    """Run one case in this process and return its timings and peak memory."""
    import torch

    import pxprune
    from pxprune.models import get

    method, options = next((m, o) for lab, m, o in CASES if lab == label)
    torch.manual_seed(0)
    model = get("resnet20").to(device)
    x, y, source = cifar_images()
    data = [(x.to(device), y.to(device))]
    pxprune.score(model, method, data, **options)  # warm-up (lazy init, allocator)
    times, peaks = [], []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            exact = _reset_peak()
            base = _status_kb("VmRSS") if exact else resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        pxprune.score(model, method, data, **options)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if device == "cuda":
            peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20)
        else:
            peak = _status_kb("VmHWM") if exact else resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss
            peaks.append(max(0, peak - base) / 1024)
    return {"method": method, "options": options, "seconds": statistics.median(times),
            "seconds_all": times, "peak_mb": statistics.median(peaks), "data": source}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", nargs="*", default=None, help="labels of cases to run")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.repeats, args.device)))
        return

    rows = []
    for label, _, _ in CASES:
        if args.only and label not in args.only:
            continue
        cmd = [sys.executable, __file__, "--worker", label, "--repeats", str(args.repeats),
               "--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"{label} failed")
        row = {"label": label, **json.loads(done.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"{label:14s} {row['seconds']:8.3f} s {row['peak_mb']:8.1f} MB", file=sys.stderr)

    from pxprune.experiments.provenance import device_description, git_commit

    device = device_description(args.device)
    result = {
        "benchmark": "one scoring round per method, CIFAR ResNet-20 (pxprune.models resnet20), "
                     "100 images 3x32x32, one batch",
        "device": device,
        "threads": args.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "command": "python " + " ".join(shlex.quote(a) for a in
                                        ["benchmarks/methods_cost.py", *(argv or sys.argv[1:])]),
        "repeats": args.repeats,
        "memory": "peak RSS above the pre-round RSS (MB), median over repeats"
                  if args.device == "cpu" else "torch.cuda.max_memory_allocated above the "
                  "pre-round allocation (MB)",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nDevice: {device}, {result['threads']} threads, torch {torch.__version__}\n")
    print("| method | seconds / round | peak memory (MB) |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| {row['label']} | {row['seconds']:.3f} | {row['peak_mb']:.1f} |")


if __name__ == "__main__":
    main()
