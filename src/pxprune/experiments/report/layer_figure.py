"""``report_layers.png``: the density of each layer for each method (mean over seeds), one
panel per sparsity: where each method puts the weights it keeps, and which layers it empties."""

from __future__ import annotations

from pathlib import Path

from ..sweep.grid import sparsity_label
from .figure import network_title, save_figure
from .layers import layer_densities
from .names import display_name, line_style
from .statistics import pruning_methods

MAX_TICKS = 40  # more layers than this: every k-th layer is named on the x axis


def layer_figure(result: dict, title: str | None = None):
    """The figure (None when no cell has a layer table or masks): x the layers in the model's
    order, y their density (log scale; an emptied layer as a cross on the bottom edge)."""
    data = result["layer_density"] if "layer_density" in result else layer_densities(result)
    labels = [sparsity_label(s) for s in sorted(result["sparsities"], reverse=True)
              if sparsity_label(s) in data]
    if not labels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(labels), 1, figsize=(8.0, 3.2 * len(labels)), dpi=150,
                             squeeze=False)
    for ax, label in zip(axes[:, 0], labels, strict=True):
        _draw_panel(ax, data[label], pruning_methods(result))
        ax.set_title(f"{label[1:]} % sparsity", fontsize=9)
    fig.suptitle(f"Density per layer: {title or network_title(result)}", fontsize=10)
    fig.tight_layout()
    return fig


def _draw_panel(ax, methods: dict[str, dict], order: list[str]) -> None:
    """One line per method over the layers; the x labels name the first method's layers."""
    shown = [m for m in order if m in methods] + [m for m in methods if m not in order]
    layers = list(dict.fromkeys(n for m in shown for n in methods[m]["layers"]))
    positive = [d for m in shown for d in methods[m]["density"] if d > 0]
    floor = min(positive, default=1e-3) / 2
    for m in shown:
        pos = {n: i for i, n in enumerate(layers)}
        xs = [pos[n] for n in methods[m]["layers"]]
        ys = methods[m]["density"]
        color, style = line_style(m, shown)
        ax.plot(xs, [y if y > 0 else float("nan") for y in ys], marker="o", ms=3, lw=1.2,
                color=color, ls=style, label=display_name(m))
        empty = [x for x, y in zip(xs, ys, strict=True) if y <= 0]
        if empty:
            ax.plot(empty, [floor] * len(empty), "x", ms=6, color=color)
    ax.set_yscale("log")
    ax.set_ylabel("Density (kept fraction)")
    step = max(1, -(-len(layers) // MAX_TICKS))
    ax.set_xticks(range(0, len(layers), step), layers[::step], rotation=90, fontsize=6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))


def plot_layers(result: dict, path: str | Path, title: str | None = None) -> bool:
    """Write :func:`layer_figure` to ``path`` atomically; False (nothing written) without data."""
    fig = layer_figure(result, title)
    if fig is None:
        return False
    save_figure(fig, path)
    return True
