"""How far TF32 moves PX scores on a GPU: float32 CUDA scores with TF32 on and off against the
float64 CPU reference, on ResNet-20 (Kaiming init, seed 0) with 100 CIFAR-10 training images.

Reports the largest score error relative to the largest score, and how many of the weights a
one-shot 98.2 % mask keeps differ from the reference's mask. Needs a CUDA GPU and torch >= 2.9.

    python benchmarks/px_tf32.py --out px_tf32_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from pxprune.data.sampling import pruning_batch
from pxprune.experiments.provenance import device_description, git_commit
from pxprune.experiments.resolve import load_any_dataset
from pxprune.masks import Masks
from pxprune.methods import REGISTRY
from pxprune.methods.spec import parse_method_spec
from pxprune.numerics import exact_float32
from pxprune.schedule import threshold

DENSITY = 1 - 0.98198627


def flat(scores: dict) -> torch.Tensor:
    return torch.cat([scores[n].double().cpu().flatten() for n in sorted(scores)])


def raw_scores(model: torch.nn.Module, method: str, x: torch.Tensor, tf32: bool) -> dict:
    """The method's scores, called below pxprune.score so that TF32 stays as asked."""
    name, options = parse_method_spec(method)
    masks = Masks.ones(model)
    if tf32:
        settings = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
        saved = [s.fp32_precision for s in settings]
        try:
            for s in settings:
                s.fp32_precision = "tf32"
            return REGISTRY[name].score(model, [(x, None)], masks, **options)
        finally:
            for s, value in zip(settings, saved, strict=True):
                s.fp32_precision = value
    with exact_float32():
        return REGISTRY[name].score(model, [(x, None)], masks, **options)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="px_tf32_cuda.json")
    args = ap.parse_args()
    x, _ = pruning_batch(load_any_dataset("cifar10", "train"), per_class=10, seed=0)
    from pxprune.models import get

    torch.manual_seed(0)
    model = get("resnet20").eval()
    ones = Masks.ones(model)
    rows = {}
    for method in ("px", "px[variant=bound]"):
        name, options = parse_method_spec(method)
        reference = REGISTRY[name].score(model, [(x, None)], ones,
                                         **{**options, "precision": "float64"})
        ref_mask = threshold(reference, DENSITY, ones, "global")
        ref_flat = flat(reference)
        gpu_model = get("resnet20").eval()
        gpu_model.load_state_dict(model.state_dict())
        gpu_model.cuda()
        for tf32 in (False, True):
            scores = raw_scores(gpu_model, method, x.cuda(), tf32)
            cpu_scores = {n: s.cpu() for n, s in scores.items()}
            mask = threshold(cpu_scores, DENSITY, ones, "global")
            differ = sum(int((mask[n] != ref_mask[n]).sum()) for n in ref_mask) // 2
            kept = sum(int(m.sum()) for m in ref_mask.values())
            key = f"{method} tf32={'on' if tf32 else 'off'}"
            rows[key] = {
                "max_abs_error_over_max_score": float(
                    (flat(scores) - ref_flat).abs().max() / ref_flat.abs().max()),
                "kept_weights_that_differ_at_98.2": differ, "kept": kept,
            }
            print(f"{key:<28} error {rows[key]['max_abs_error_over_max_score']:.2e}   "
                  f"{differ} of {kept} kept weights differ from the float64 mask")
    result = {"torch": torch.__version__, "python": platform.python_version(),
              "git_commit": git_commit(), "device": device_description("cuda"),
              "command": " ".join(["python", *sys.argv]),
              "images": f"{len(x)} CIFAR-10 training images (JPEG copy), 10 per class",
              "reference": "the same method in float64 on the CPU", "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
