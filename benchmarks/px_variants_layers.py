"""Per-layer densities and collapsed layers of every method spec in a sweep (from prune.json).

Usage: python benchmarks/px_variants_layers.py SWEEP_DIR OUT.json
Prints a markdown table per sparsity (>= 95 %): per-layer density (mean over seeds, %) of the PX
specs, and the number of collapsed (0 %) layers of every method, per seed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pxprune.experiments.sweep.grid import method_folder, sparsity_label
from pxprune.methods.spec import parse_method_spec


def collect(sweep: Path) -> dict:
    """{method: {sparsity label: {seed: prune.json}}} for every finished cell."""
    record = json.loads((sweep / "sweep.json").read_text())
    out: dict = {}
    for method in record["methods"]:
        if method == "dense":
            continue
        for s in record["sparsities"]:
            for seed in record["seeds"]:
                path = sweep / method_folder(method) / sparsity_label(s) / f"seed{seed}"
                if (path / "prune.json").exists() and (path / "summary.json").exists():
                    info = json.loads((path / "prune.json").read_text())
                    acc = json.loads((path / "summary.json").read_text())["final_test_acc"]
                    info["final_test_acc"] = acc
                    out.setdefault(method, {}).setdefault(sparsity_label(s), {})[seed] = info
    return out


def short(layer: str) -> str:
    """``layer3.0.conv1.weight`` -> ``3.0.c1``; ``shortcut.0`` -> ``sc``."""
    name = layer.removesuffix(".weight").replace("layer", "").replace("shortcut.0", "sc")
    return name.replace("conv", "c")


def markdown(data: dict, label: str) -> str:
    """Per-layer density table of the PX specs and the collapsed-layer counts of all methods."""
    px_specs = [m for m in data if parse_method_spec(m)[0] == "px" and label in data[m]]
    lines = []
    if px_specs:
        layers = list(next(iter(data[px_specs[0]][label].values()))["layer_density"])
        lines.append("| layer | " + " | ".join(px_specs) + " |")
        lines.append("|---|" + "---:|" * len(px_specs))
        for layer in layers:
            vals = []
            for m in px_specs:
                ds = [c["layer_density"][layer] for c in data[m][label].values()]
                vals.append(f"{100 * sum(ds) / len(ds):.2f}")
            lines.append(f"| {short(layer)} | " + " | ".join(vals) + " |")
        lines.append("")
    lines.append("| method | collapsed layers per seed | final acc per seed |")
    lines.append("|---|---|---|")
    for m, by_label in data.items():
        if label not in by_label:
            continue
        cells = by_label[label]
        counts = ", ".join(str(len(cells[k]["collapsed_layers"])) for k in sorted(cells))
        accs = ", ".join(f"{cells[k]['final_test_acc']:.1f}" for k in sorted(cells))
        lines.append(f"| {m} | {counts} | {accs} |")
    return "\n".join(lines)


def main() -> None:
    """Collect, write the JSON and print the markdown tables."""
    sweep, out = Path(sys.argv[1]), Path(sys.argv[2])
    data = collect(sweep)
    slim = {m: {lab: {str(seed): {"layer_density": c["layer_density"],
                                  "collapsed_layers": c["collapsed_layers"],
                                  "density": c["density"], "final_test_acc": c["final_test_acc"],
                                  "prune_seconds": round(c["prune_seconds"], 2)}
                      for seed, c in cells.items()}
                for lab, cells in by_label.items()}
            for m, by_label in data.items()}
    out.write_text(json.dumps({"sweep": str(sweep), "cells": slim}, indent=1) + "\n")
    labels = sorted({lab for by in data.values() for lab in by})
    for label in labels:
        if float(label[1:]) >= 95:
            print(f"\n### {label[1:]} % sparsity\n\n{markdown(data, label)}")


if __name__ == "__main__":
    main()
