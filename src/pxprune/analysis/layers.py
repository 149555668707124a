"""Human-readable tables: the per-layer density table of a mask (printed and CSV)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Mapping
from pathlib import Path

from ..io import atomic_write_text
from ..masks import Masks


def layer_rows(masks: Masks, flops: dict | None = None) -> list[dict]:
    """One row per masked tensor: layer, shape, kept, total, density, MACs kept, collapse flag."""
    layer_macs = (flops or {}).get("layers", {})
    rows = []
    for s in masks.layer_stats():
        macs = layer_macs.get(s.name.rpartition(".")[0], {})
        rows.append({
            "layer": s.name,
            "shape": "x".join(map(str, s.shape)),
            "kept": s.kept,
            "total": s.total,
            "density": round(s.density, 6),
            "kept_macs": macs.get("kept_macs", ""),
            "warning": "COLLAPSED: no weight kept" if s.collapsed else "",
        })
    return rows


def unpruned_rows(unpruned: Mapping[str, tuple[int, ...]],
                  dense: Collection[str] = ()) -> list[dict]:
    """Rows for weight tensors the masks leave whole: kept dense on request (``dense``), or
    not Conv/Linear weights."""
    return [{"layer": name, "shape": "x".join(map(str, shape)), "kept": math.prod(shape),
             "total": math.prod(shape), "density": 1.0, "kept_macs": "",
             "warning": "KEPT DENSE (asked)" if name in dense
             else "NOT PRUNED: not a Conv/Linear weight"} for name, shape in unpruned.items()]


def format_layer_table(masks: Masks, flops: dict | None = None,
                       unpruned: Mapping[str, tuple[int, ...]] | None = None,
                       dense: Collection[str] = ()) -> str:
    """The per-layer table as aligned text, with totals and a collapse warning line;
    ``unpruned`` weight tensors (see :func:`pxprune.masks.unpruned_matrices`) are listed below
    the pruned ones and counted in a line of their own, never in the density."""
    rows = layer_rows(masks, flops) + unpruned_rows(unpruned or {}, dense)
    header = ["layer", "shape", "kept", "total", "density", "kept_macs", "warning"]

    def cell(row: dict, h: str) -> str:
        if h == "density":
            return f"{row['density']:.4f}"
        if h == "kept_macs" and isinstance(row[h], int):
            return f"{row[h]:,}"
        return str(row[h])

    cells = [header] + [[cell(r, h) for h in header] for r in rows]
    total_macs = f"{flops['kept_macs']:,}" if flops else ""
    cells.append(["TOTAL", "", str(masks.kept), str(masks.total), f"{masks.density():.4f}",
                  total_macs, ""])
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(header))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    collapsed = masks.collapsed_layers()
    if collapsed:
        names = ", ".join(collapsed)
        lines.append(f"WARNING: layer collapse in {len(collapsed)} layer(s): {names}")
    if unpruned:
        whole = sum(math.prod(shape) for shape in unpruned.values())
        lines.append(f"NOT PRUNED: {len(unpruned)} weight tensor(s), {whole:,} weights, were "
                     f"kept whole ({len([n for n in unpruned if n in dense])} kept dense as "
                     f"asked, the others not Conv/Linear weights); density over all weights "
                     f"{(masks.kept + whole) / (masks.total + whole):.4f}")
    if flops:
        lines.append(f"MACs kept: {flops['kept_macs']:,} of {flops['dense_macs']:,} "
                     f"({flops['kept_macs'] / max(flops['dense_macs'], 1):.2%})")
    return "\n".join(lines)


def write_layer_csv(masks: Masks, path: str | Path, flops: dict | None = None,
                    unpruned: Mapping[str, tuple[int, ...]] | None = None,
                    dense: Collection[str] = ()) -> None:
    """``layers.csv``: one row per masked tensor (see :func:`layer_rows`) and per tensor left
    whole (``unpruned``), written atomically."""
    rows = layer_rows(masks, flops) + unpruned_rows(unpruned or {}, dense)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
