"""The report's tables: the plain-text one printed by the commands, ``report.md`` (accuracy
table, dense, protocol, cost, commands, unfinished cells) and ``report.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ...io import atomic_write_text
from ..config import DENSE
from ..sweep.grid import sparsity_label
from .describe import dense_label, is_transfer, protocol_text
from .names import display_name
from .paired import format_section
from .statistics import best_per_sparsity, find_row, is_best, n_text, pruning_methods


def fmt_row(row: dict | None, with_n: bool = False) -> str:
    """``mean ± std`` of a row (``–`` for none; the mean alone for one seed)."""
    if row is None:
        return "–"
    text = f"{row['mean']:.2f}" if row["std"] is None else f"{row['mean']:.2f} ± {row['std']:.2f}"
    return f"{text} (n={row['n']})" if with_n else text


def format_text_table(result: dict) -> str:
    """A plain-text table: methods x sparsities, mean ± std test accuracy (%)."""
    sparsities = result["sparsities"]
    header = ["method", *(f"{s * 100:.2f}%" for s in sparsities)]
    lines = [header]
    for m in pruning_methods(result):
        lines.append([display_name(m), *(fmt_row(find_row(result, m, s)) for s in sparsities)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [f"{result['metric']} (%) — {n_text(result)}"]
    out += ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
            for line in lines]
    dense = find_row(result, DENSE, None)
    if dense is not None or DENSE in result["methods"]:
        out.append(f"{dense_label(result).lower()}: {fmt_row(dense, with_n=True)}")
    if result["missing"]:
        out.append(f"{len(result['missing'])} cell(s) not finished: " + ", ".join(
            f"{c['folder']} ({c['status']}" + (f": {c['error']})" if c["status"] == "damaged"
                                               else ")") for c in result["missing"]))
    return "\n".join(out)


def _cost_lines(result: dict) -> list[str]:
    """Markdown table: mean pruning / training seconds per cell and cells with layer collapse."""
    by_method: dict[str, list[dict]] = {}
    for c in result["cells"]:
        by_method.setdefault(c["method"], []).append(c)
    if not by_method:
        return []

    def avg(cells: list[dict], key: str) -> str:
        vals = [c[key] for c in cells if c.get(key) is not None]
        return f"{sum(vals) / len(vals):.1f}" if vals else "–"

    train = "train"
    if is_transfer(result):
        mode = (result["record"].get("protocol") or {}).get("mode")
        train = "fine-tune" if mode == "finetune" else "probe"
    lines = [f"| Method | cells | prune s / cell | {train} s / cell | "
             "cells with collapsed layers |", "|---|---:|---:|---:|---|"]
    for m in [*result["methods"], *(m for m in by_method if m not in result["methods"])]:
        cells = by_method.get(m)
        if not cells:
            continue
        collapsed = [f"{sparsity_label(c['sparsity'])}/seed{c['seed']} "
                     f"({c['collapsed_layers']})" for c in cells if c["collapsed_layers"]]
        lines.append(f"| {display_name(m)} | {len(cells)} | {avg(cells, 'prune_seconds')} | "
                     f"{avg(cells, 'train_seconds')} | {', '.join(collapsed) or 'none'} |")
    return [*lines, ""]


def what_is_measured(result: dict) -> str:
    """The accuracy a report's table holds, e.g. "Test accuracy (%)" (+ a transfer's kind)."""
    what = "Test accuracy (%)"
    if is_transfer(result):
        mode = (result["record"].get("protocol") or {}).get("mode")
        what += (" of the pruned pre-trained backbone, fine-tuned with the mask fixed"
                 if mode == "finetune" else
                 " of the pruned pre-trained backbone with a refitted ridge probe (no training)")
    return what


def _accuracy_lines(result: dict, title: str | None) -> list[str]:
    """The title, the methods x sparsities table (best mean in bold) and the dense line."""
    sparsities = result["sparsities"]
    best = best_per_sparsity(result)
    lines = [f"# {title or 'Sweep report: ' + Path(result['sweep_dir']).name}", "",
             f"{what_is_measured(result)}, `{result['metric']}`, mean ± sample std over seeds "
             f"({n_text(result)}). Best mean per sparsity in bold.", "",
             "| Method | " + " | ".join(f"{s * 100:.2f} %" for s in sparsities) + " |",
             "|---|" + "---:|" * len(sparsities)]
    for m in pruning_methods(result):
        cells = []
        for s in sparsities:
            row = find_row(result, m, s)
            cells.append(f"**{fmt_row(row)}**" if is_best(result, row, best) else fmt_row(row))
        lines.append(f"| {display_name(m)} | " + " | ".join(cells) + " |")
    lines.append("")
    dense = find_row(result, DENSE, None)
    if dense is not None:
        lines += [f"{dense_label(result)}: {fmt_row(dense, with_n=True)}.", ""]
    return lines


def _command_lines(result: dict) -> list[str]:
    """The device, and every sweep command with its commit and how many cells it ran."""
    lines = []
    env = (result["record"].get("environment") or {})
    if env:
        lines += [f"Device: {env.get('device')}; torch {env.get('torch')}.", ""]
    invocations = result["record"].get("invocations") or []
    if invocations:
        lines += ["Commands (each cell was run by the last one started before it finished):", ""]
    for i, inv in enumerate(invocations):
        n = sum(1 for c in result["cells"] if c.get("invocation") == i)
        dirty = inv.get("git_dirty")
        dirty_text = f", uncommitted: {', '.join(dirty)}" if dirty else ""
        lines.append(f"- `{inv.get('command')}` — started {inv.get('started')}, commit "
                     f"{(inv.get('git_commit') or 'unknown')[:10]}{dirty_text}; {n} cell(s)")
    if invocations:
        lines.append("")
    return lines


def _missing_lines(result: dict) -> list[str]:
    """The cells not finished, each with its state and error."""
    if not result["missing"]:
        return []
    lines = [f"Not finished ({len(result['missing'])}):", ""]
    for c in result["missing"]:
        err = f": {c['error']}" if c.get("error") else ""
        lines.append(f"- `{c['folder']}` — {c['status']}{err}")
    return [*lines, ""]


def format_markdown(result: dict, title: str | None = None,
                    notes: list[str] | None = None, paired: str | None = None,
                    paper: str | None = None) -> str:
    """``report.md``: the table with the best mean per sparsity in bold, then dense and gaps;
    with ``paired`` a section pairing that method by seed against the others (sweep_compare)."""
    lines = _accuracy_lines(result, title)
    lines += [f"Protocol: {protocol_text(result)}.", ""]
    if paired:
        lines += format_section(result, paired, paper, display_name)
    lines += _cost_lines(result)
    lines += _command_lines(result)
    if notes:
        lines += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    lines += _missing_lines(result)
    return "\n".join(lines)


def write_csv(result: dict, path: str | Path) -> None:
    """``report.csv``: one row per method and sparsity (dense: sparsity 0)."""
    fh = io.StringIO(newline="")
    w = csv.writer(fh)
    w.writerow(["method", "sparsity", "sparsity_pct", "n", "mean", "std", "min", "max",
                "seeds", "values"])
    for r in sorted(result["rows"], key=lambda r: (r["method"] != DENSE, r["method"],
                                                    r["sparsity"])):
        w.writerow([r["method"], f"{r['sparsity']:.6f}", f"{r['sparsity'] * 100:.2f}",
                    r["n"], f"{r['mean']:.4f}",
                    "" if r["std"] is None else f"{r['std']:.4f}", f"{r['min']:.4f}",
                    f"{r['max']:.4f}", " ".join(map(str, r["seeds"])),
                    " ".join(f"{v:.4f}" for v in r["values"])])
    atomic_write_text(path, fh.getvalue())
