"""``report_curves.png``: test accuracy and train loss per epoch (mean over seeds) for each
method, one row of panels per sparsity with the dense run in each, from the cells'
``metrics.jsonl``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..config import DENSE
from ..sweep.grid import sparsity_label
from .figure import network_title, save_figure
from .names import display_name, line_style
from .statistics import pruning_methods

METRICS_FILE = "metrics.jsonl"
# where a cell's training wrote its epochs: a run; a transfer cell's fine-tuning (pruned, dense)
PLACES = (METRICS_FILE, f"finetune/{METRICS_FILE}", f"finetune_dense/{METRICS_FILE}")
SERIES = ("test_acc", "train_loss")


def read_epochs(folder: Path) -> list[dict]:
    """A cell's per-epoch records (empty when it did not train); a line cut off by a kill, or
    not a record, is skipped."""
    path = next((folder / p for p in PLACES if (folder / p).exists()), None)
    if path is None:
        return []
    epochs = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
            epochs.append(rec)
    return epochs


def _mean_series(runs: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """Epochs and the mean of ``key`` over the runs that recorded it at that epoch."""
    values: dict[int, list[float]] = {}
    for run in runs:
        for rec in run:
            v = rec.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                values.setdefault(rec["epoch"], []).append(float(v))
    epochs = sorted(values)
    return epochs, [sum(values[e]) / len(values[e]) for e in epochs]


def training_curves(result: dict) -> dict[str, dict[str, dict]]:
    """Per sparsity label (``dense`` for the dense runs) and method: the epochs and the mean
    over seeds of each of :data:`SERIES`, and how many seeds trained."""
    sweep_dir = Path(result["sweep_dir"])
    runs: dict[tuple[str, str], list[list[dict]]] = {}
    for cell in result["cells"]:
        epochs = read_epochs(sweep_dir / cell["folder"])
        if epochs:
            label = DENSE if cell["method"] == DENSE else sparsity_label(cell["sparsity"])
            runs.setdefault((label, cell["method"]), []).append(epochs)
    out: dict[str, dict[str, dict]] = {}
    for (label, method), members in runs.items():
        entry: dict = {"seeds": len(members)}
        for key in SERIES:
            entry["epoch_" + key], entry[key] = _mean_series(members, key)
        out.setdefault(label, {})[method] = entry
    return out


def curves_figure(result: dict, title: str | None = None):
    """The figure (None when no cell trained): per sparsity a row of two panels, test accuracy
    and train loss against the epoch, one line per method, the dense run dashed in black."""
    data = result["curves"] if "curves" in result else training_curves(result)
    dense = data.get(DENSE, {}).get(DENSE)
    labels = [sparsity_label(s) for s in sorted(result["sparsities"], reverse=True)
              if sparsity_label(s) in data] or ([DENSE] if dense else [])
    if not labels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(labels), 2, figsize=(9.0, 3.0 * len(labels)), dpi=150,
                             squeeze=False)
    for row, label in zip(axes, labels, strict=True):
        methods = {} if label == DENSE else data[label]
        for ax, key in zip(row, SERIES, strict=True):
            _draw_series(ax, methods, dense, key, pruning_methods(result))
            where = "dense" if label == DENSE else f"{label[1:]} % sparsity"
            ax.set_title(f"{'Test accuracy (%)' if key == 'test_acc' else 'Train loss'}, "
                         f"{where}", fontsize=9)
    fig.suptitle(f"Training curves: {title or network_title(result)}", fontsize=10)
    fig.tight_layout()
    return fig


def _draw_series(ax, methods: dict[str, dict], dense: dict | None, key: str,
                 order: list[str]) -> None:
    """One line per method (mean over seeds) and the dense one, against the epoch."""
    shown = [m for m in order if m in methods] + [m for m in methods if m not in order]
    for m in shown:
        color, style = line_style(m, shown)
        ax.plot(methods[m]["epoch_" + key], methods[m][key], lw=1.4, color=color, ls=style,
                label=display_name(m))
    if dense is not None:
        ax.plot(dense["epoch_" + key], dense[key], lw=1.2, color="black", ls="--",
                label="Dense")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")
    ax.grid(alpha=0.3)
    if key == SERIES[-1] and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))


def plot_curves(result: dict, path: str | Path, title: str | None = None) -> bool:
    """Write :func:`curves_figure` to ``path`` atomically; False (nothing written) without
    any trained cell."""
    fig = curves_figure(result, title)
    if fig is None:
        return False
    save_figure(fig, path)
    return True
