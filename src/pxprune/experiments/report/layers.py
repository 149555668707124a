"""Each cell's per-layer density, read back from its folder (``layers.csv``, else its masks), and
its mean over seeds per method and sparsity: the data of ``report_layers.png``."""

from __future__ import annotations

import csv
from pathlib import Path

from ...masks import Masks, PruningError
from ..cell_check import MASKS
from ..config import DENSE
from ..sweep.grid import sparsity_label

LAYERS_CSV = "layers.csv"
NEVER_PRUNED = "NOT PRUNED"  # layers.csv's mark of a tensor no method prunes (not Conv/Linear)


def read_layer_table(folder: Path) -> list[dict] | None:
    """The rows of a cell's ``layers.csv`` in the model's order (None without one)."""
    path = folder / LAYERS_CSV
    if not path.exists():
        return None
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def cell_layer_density(folder: Path) -> dict[str, float] | None:
    """Kept fraction of each pruned (or asked-dense) tensor of one cell, in the model's order:
    from ``layers.csv``, else from ``masks.safetensors``; None when the folder has neither."""
    rows = read_layer_table(folder)
    if rows is not None:
        return {r["layer"]: int(r["kept"]) / int(r["total"]) for r in rows
                if not (r.get("warning") or "").startswith(NEVER_PRUNED) and int(r["total"])}
    if not (folder / MASKS).exists():
        return None
    try:
        masks = Masks.load(folder / MASKS)
    except PruningError:  # the cell check reports a damaged masks file
        return None
    return {name: int(m.sum()) / m.numel() for name, m in masks.items()}


def layer_densities(result: dict) -> dict[str, dict[str, dict]]:
    """Per sparsity label and method: the layers (in the first seed's order) and each one's density,
    the mean over the seeds whose folders have it, and how many seeds that is."""
    sweep_dir = Path(result["sweep_dir"])
    per_seed: dict[tuple[str, str], list[dict[str, float]]] = {}
    for cell in result["cells"]:
        if cell["method"] == DENSE:
            continue
        density = cell_layer_density(sweep_dir / cell["folder"])
        if density:
            key = (sparsity_label(cell["sparsity"]), cell["method"])
            per_seed.setdefault(key, []).append(density)
    out: dict[str, dict[str, dict]] = {}
    for (label, method), seeds in per_seed.items():
        layers = list(dict.fromkeys(n for s in seeds for n in s))
        mean = []
        for n in layers:
            values = [s[n] for s in seeds if n in s]
            mean.append(sum(values) / len(values))
        out.setdefault(label, {})[method] = {"layers": layers, "density": mean,
                                             "seeds": len(seeds)}
    return out
