"""``report.png``: accuracy against sparsity in the style of the paper's figure 2 (one line per
method with a ±1 std band, the dense accuracy dashed), and the atomic writing of any figure."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

from ...io import atomic_write_bytes
from ..config import DENSE
from .describe import dense_label, is_transfer
from .names import display_name, line_style
from .statistics import find_row, pruning_methods


def save_figure(fig, path: str | Path) -> None:
    """Write a matplotlib figure to ``path`` atomically (the format from its suffix), close it."""
    import matplotlib.pyplot as plt

    image = io.BytesIO()
    fig.savefig(image, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(image.getvalue()))


def plot(result: dict, path: str | Path, title: str | None = None) -> None:
    """Write :func:`figure` to ``path`` (atomically; the format from its suffix)."""
    save_figure(figure(result, title), path)


def network_title(result: dict) -> str:
    """The default figure title: network and dataset (and a transfer's mode)."""
    proto = result["record"].get("protocol") or {}
    names = sorted({c["dataset_name"] for c in result["cells"] if c.get("dataset_name")})
    network = proto.get("backbone") if is_transfer(result) else proto.get("model", "")
    title = f"{network} / {', '.join(names)}"
    if is_transfer(result):
        title += f", transfer ({proto.get('mode')})"
    return title


def figure(result: dict, title: str | None = None):
    """Accuracy vs sparsity (x spaced by log density, labelled in %), std bands, dense dashed;
    with a single sparsity, one column per method instead: every seed, and the mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.4, 4.4), dpi=150)
    if len(result["sparsities"]) == 1:
        _draw_methods(ax, result)
    else:
        _draw_curves(ax, result)
    dense = find_row(result, DENSE, None)
    if dense is not None:
        label = "Dense" + (" (probe)" if is_transfer(result) and "probe" in dense_label(result)
                           else "")
        ax.axhline(dense["mean"], color="black", ls="--", lw=1.2, label=label)
    ax.set_ylabel("Test accuracy (%)")
    ax.grid(alpha=0.3)
    default_title = network_title(result)
    # wrapped: the legend sits right of the axes, so a long title would be cut at the left
    ax.set_title("\n".join(textwrap.wrap(title or default_title, 64)), fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def _draw_curves(ax, result: dict) -> None:
    """One line per method over the sparsities, a band of ± one std."""
    def xpos(s: float) -> float:
        return -math.log(1.0 - s)

    for m in pruning_methods(result):
        rows = sorted((r for r in result["rows"] if r["method"] == m),
                      key=lambda r: r["sparsity"])
        if not rows:
            continue
        xs = [xpos(r["sparsity"]) for r in rows]
        ys = [r["mean"] for r in rows]
        color, style = line_style(m, pruning_methods(result))
        ax.plot(xs, ys, marker="o", ms=4, lw=2.2 if m == "px" else 1.5, color=color, ls=style,
                label=display_name(m), zorder=3 if m == "px" else 2)
        if any(r["std"] is not None for r in rows):
            sd = [r["std"] or 0.0 for r in rows]
            ax.fill_between(xs, [y - d for y, d in zip(ys, sd, strict=True)],
                            [y + d for y, d in zip(ys, sd, strict=True)], color=color,
                            alpha=0.12, lw=0)
    ticks = result["sparsities"]
    ax.set_xticks([xpos(s) for s in ticks], [f"{s * 100:.2f}" for s in ticks],
                  rotation=45 if len(ticks) > 5 else 0)
    ax.set_xlabel("Sparsity (%)")


def _draw_methods(ax, result: dict) -> None:
    """One column per finished method at the single sparsity: each seed a small dot, the mean
    a large one with a ± std bar (a line over one x would stack every method on one point)."""
    (sparsity,) = result["sparsities"]
    methods = [m for m in pruning_methods(result) if find_row(result, m, sparsity) is not None]
    for i, m in enumerate(methods):
        row = find_row(result, m, sparsity)
        color, _ = line_style(m, pruning_methods(result))
        values = row["values"]
        offsets = [0.08 * (k - (len(values) - 1) / 2) for k in range(len(values))]
        ax.scatter([i + 0.25 + o for o in offsets], values, s=12, color=color, alpha=0.7,
                   zorder=2)
        ax.errorbar([i], [row["mean"]], yerr=[[row["std"] or 0.0], [row["std"] or 0.0]],
                    fmt="o", ms=7, color=color, capsize=4, zorder=3)
    ax.set_xticks(range(len(methods)), [display_name(m) for m in methods],
                  rotation=30 if len(methods) > 5 else 0, ha="right" if len(methods) > 5
                  else "center", fontsize=8)
    ax.set_xlim(-0.6, len(methods) - 0.2)
    ax.set_xlabel(f"Method, at {sparsity * 100:.2f} % sparsity (large dot: mean ± std over "
                  "seeds; small dots: each seed)")

