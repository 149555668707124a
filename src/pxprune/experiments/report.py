"""``pxprune report SWEEP_DIR``: mean ± std per method and sparsity from a (partial) sweep.

Reads every finished cell (``summary.json``; ``result.json`` in a ``sweep --transfer`` folder,
where the accuracy is the pruned backbone's probe or fine-tuned one) under the sweep folder,
lists the cells of the grid in ``sweep.json`` that are not finished (missing, interrupted or
failed), and writes ``report.md`` (best mean per sparsity in bold), ``report.csv``,
``report.png`` (accuracy vs sparsity in the style of the paper's figure 2: one line per method
with a ±1 std band, the dense accuracy as a dashed horizontal line) and ``report.json``. The
std is the sample standard deviation over seeds (n - 1); with a single seed no std is shown.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from datetime import datetime, timezone
from pathlib import Path

from ..errors import OutputError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..methods import REGISTRY
from ..methods.spec import resolved_spec
from ..tempfiles import remove_stale_temps
from .cell_check import ASIDE, TRANSFER, check_cell, done_files
from .compare import format_section, results_extra
from .config import CELL_FIELDS, DENSE
from .folder import refuse_foreign
from .resolve import UsageError
from .sweep import (
    LATER_FIELDS,
    SWEEP_FILE,
    TRAINING,
    Cell,
    comparable_protocol,
    plan_cells,
    read_record,
    sparsity_label,
)

RESULTS_FORMAT = "pxprune.sweep_results/1"
DENSE_STYLE = ("Dense", "#000000")  # the dense reference is not a registered method


def method_display(name: str) -> str:
    """A registered method's display name (PX, NTK-SAP, GraSP, ...), from the registry."""
    if name == DENSE:
        return DENSE_STYLE[0]
    method = REGISTRY.get(name)
    return method.display_name if method is not None else name


def method_color(name: str) -> str | None:
    """A registered method's colour in figures, from the registry."""
    if name == DENSE:
        return DENSE_STYLE[1]
    method = REGISTRY.get(name)
    return method.color if method is not None else None
METRICS = {"final": "final_test_acc", "best": "best_test_acc"}


def _base(method: str) -> tuple[str, str]:
    """A method spec's name and its bracketed options (``'px', '[variant=cvpr2024]'``)."""
    name, bracket, rest = method.partition("[")
    return name, bracket + rest


def display_name(method: str) -> str:
    """The paper's spelling of a method name (PX, NTK-SAP, GraSP, ...), options kept."""
    name, options = _base(method)
    return method_display(name) + (f" {options}" if options else "")


def _style(method: str, methods: list[str]) -> tuple[str | None, str]:
    """Colour of the method's base name and a line style that tells its option specs apart."""
    name, _ = _base(method)
    siblings = [m for m in methods if _base(m)[0] == name and m != name]
    style = "-" if method == name else ("--", ":", "-.")[siblings.index(method) % 3]
    return method_color(name), style


def _protocol(cfg: dict) -> dict:
    """What a cell must share with every cell it is averaged or paired with: its config
    without method, sparsity and seed (and fields recorded later, where at their default)."""
    rest = {k: v for k, v in cfg.items() if k not in (*CELL_FIELDS, "resolved_method")
            and not (k in LATER_FIELDS and v in (None, LATER_FIELDS[k]))}
    return comparable_protocol(rest)


def check_comparable(cells: list[dict], protocols: dict[str, dict]) -> None:
    """Refuse a folder whose runs differ in protocol, or hold one method, sparsity and seed
    twice: averaging them would pass one experiment off as another's seeds."""
    first: dict[str, str] = {}
    for cell in cells:
        key = f"{cell['method']} {sparsity_label(cell['sparsity'])} seed {cell['seed']}"
        if key in first:
            raise UsageError(f"{first[key]} and {cell['folder']} are the same cell ({key}); "
                             "report each folder on its own")
        first[key] = cell["folder"]
    if not cells:
        return
    ref_folder, ref = cells[0]["folder"], protocols[cells[0]["folder"]]
    for cell in cells[1:]:
        other = protocols[cell["folder"]]
        if other != ref:
            diff = sorted(k for k in {*ref, *other} if ref.get(k) != other.get(k))
            shown = ", ".join(f"{k} {ref.get(k)!r} vs {other.get(k)!r}" for k in diff[:3])
            raise UsageError(f"{ref_folder} and {cell['folder']} were run differently ({shown}); "
                             "their accuracies are not comparable: report each folder on its own")


def _read_cell(summary: dict, cfg: dict) -> dict:
    """One finished cell's identity and numbers, from its checked summary.json and config;
    ``_protocol`` holds what it must share with the cells it is compared with."""
    method = cfg.get("method", DENSE)
    if "resolved_method" not in cfg and method != DENSE:  # written before it was recorded:
        old = resolved_spec(method, legacy=True)  # label it by what it computed then
        method = old if old != resolved_spec(method) else method
    sparsity = 0.0 if method == DENSE else float(cfg.get("sparsity", 0.0))
    return {
        "method": method, "sparsity": sparsity, "seed": int(cfg.get("seed", 0)),
        "final_test_acc": summary.get("final_test_acc"),
        "best_test_acc": summary.get("best_test_acc"),
        "density": summary.get("density"), "epochs": summary.get("epochs"),
        "train_seconds": summary.get("train_seconds"),
        "prune_seconds": (summary.get("prune") or {}).get("prune_seconds"),
        "collapsed_layers": len(summary.get("collapsed_layers") or []),
        "dataset_name": summary.get("dataset_name"),
        "train_examples": summary.get("train_examples"),
        "test_examples": summary.get("test_examples"),
        "_protocol": _protocol(cfg),
    }


def _read_transfer_cell(res: dict, cfg: dict | None = None) -> dict:
    """One finished transfer cell (or dense reference) from its checked result.json: the pruned
    (dense) test accuracy after the refitted probe, or after fine-tuning in finetune mode."""
    method = res.get("method", DENSE)
    block = res["dense"] if method == DENSE else res["pruned"]
    finetune, probe = block.get("finetune") or {}, block.get("probe") or {}
    return {
        "method": method, "sparsity": 0.0 if method == DENSE else float(res["sparsity"]),
        "seed": int(res.get("seed", 0)), "final_test_acc": block.get("test_acc"),
        "best_test_acc": finetune.get("best_test_acc"), "density": res.get("density"),
        "epochs": finetune.get("epochs"),
        "train_seconds": finetune.get("train_seconds", probe.get("seconds")),
        "prune_seconds": res.get("prune_seconds"),
        "collapsed_layers": len(res.get("collapsed_layers") or []),
        "dataset_name": res.get("dataset"), "train_examples": probe.get("num_train"),
        "test_examples": probe.get("num_test"), "rounds": res.get("rounds"),
    }


def _invocation_of(summary_path: Path, invocations: list[dict]) -> dict:
    """When the cell finished and which sweep invocation (hence which commit) ran it."""
    finished = datetime.fromtimestamp(summary_path.stat().st_mtime, timezone.utc)
    index = None
    for i, inv in enumerate(invocations):
        started = inv.get("started")
        if started and datetime.fromisoformat(started) <= finished:
            index = i
    commit = invocations[index].get("git_commit") if index is not None else None
    return {"finished": finished.isoformat(timespec="seconds"), "invocation": index,
            "git_commit": commit}


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (n - 1; None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(cells: list[dict], metric: str = "final_test_acc") -> list[dict]:
    """One row per (method, sparsity): n, mean, std, min, max and the per-seed values."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        if c.get(metric) is None:
            continue
        label = "dense" if c["method"] == DENSE else sparsity_label(c["sparsity"])
        groups.setdefault((c["method"], label), []).append(c)
    rows = []
    for (method, _), members in groups.items():
        members.sort(key=lambda c: c["seed"])
        values = [float(c[metric]) for c in members]
        mean, std = mean_std(values)
        rows.append({"method": method, "sparsity": members[0]["sparsity"], "n": len(values),
                     "mean": mean, "std": std, "min": min(values), "max": max(values),
                     "seeds": [c["seed"] for c in members], "values": values})
    return rows


def collect(sweep_dir: str | Path, metric: str = "final") -> dict:
    """Every finished cell, the aggregate rows, and the unfinished cells of the planned grid."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep folder {sweep_dir}")
    record_path = sweep_dir / SWEEP_FILE
    record = read_record(record_path) if record_path.exists() else {}
    without_record = not record
    kind = record.get("kind", TRAINING)
    if kind == TRANSFER and metric == "best" and (record.get("protocol") or {}).get(
            "mode") != "finetune":
        raise UsageError("a probe transfer sweep has one accuracy per cell: --metric best "
                         "applies to training and fine-tuning sweeps")
    read = _read_transfer_cell if kind == TRANSFER else _read_cell
    planned: list[Cell] = []
    if record.get("methods"):
        planned = plan_cells(record["methods"], record.get("sparsities") or [],
                             record.get("seeds") or [0])
    places = {c.folder: c for c in planned}
    cells, damaged = [], []
    protocols: dict[str, dict] = {}
    for path in done_files(sweep_dir, kind):
        rel = path.parent.relative_to(sweep_dir)
        if (kind == TRANSFER and path.parent == sweep_dir) or any(
                part.startswith(ASIDE) for part in rel.parts):  # a damaged cell set aside
            continue
        place = places.get(rel.as_posix())
        where = {"method": None, "sparsity": None, "seed": None} if place is None else {
            "method": place.method, "sparsity": place.sparsity, "seed": place.seed}
        state = check_cell(path.parent, place and where, kind)
        if state.state != "done":  # listed as damaged, left out of the table
            damaged.append({**where, "folder": rel.as_posix(), "status": state.state,
                            "error": state.reason})
            continue
        cell = read(state.done, state.config)
        cell["folder"] = rel.as_posix()
        cell.update(_invocation_of(path, record.get("invocations") or []))
        cells.append(cell)
        if kind == TRAINING:
            protocols[cell["folder"]] = cell.pop("_protocol")
    if kind == TRAINING:
        check_comparable(cells, protocols)
    seen = {c["folder"] for c in cells} | {c["folder"] for c in damaged}
    missing = [c for c in damaged if c["folder"] not in places]
    for cell in planned:
        if cell.folder in seen:
            missing += [c for c in damaged if c["folder"] == cell.folder]
            continue
        state = check_cell(sweep_dir / cell.folder, None, kind)
        entry = {"method": cell.method, "sparsity": cell.sparsity, "seed": cell.seed,
                 "folder": cell.folder, "status": state.state}
        if state.state == "failed":
            entry["error"] = state.reason
        missing.append(entry)
    if without_record and kind == TRAINING and cells:  # separate runs: what they share
        record = _record_of_runs(sweep_dir, cells)
    methods = list(record.get("methods") or [])
    methods += [m for m in dict.fromkeys(c["method"] for c in cells) if m not in methods]
    sparsities = sorted({*(float(s) for s in record.get("sparsities") or []),
                         *(c["sparsity"] for c in cells if c["method"] != DENSE)})
    key = METRICS[metric]
    return {"sweep_dir": str(sweep_dir), "kind": kind, "record": record, "metric": key,
            "cells": cells,
            "rows": aggregate(cells, key), "missing": missing, "methods": methods,
            "sparsities": _unique_sparsities(sparsities)}


# what varies between the runs of one experiment, or only names a file: not the protocol
_NOT_PROTOCOL = (*CELL_FIELDS, "resolved_method", "masks", "masks_sha256")


def _record_of_runs(folder: Path, cells: list[dict]) -> dict:
    """For a folder of separate ``pxprune run`` folders (no sweep.json): the protocol is what
    their configurations share, the environment and resolved recipe those their summaries
    recorded, so a report of a user's own runs names its model, data and versions."""
    summaries = []
    for cell in cells:
        try:
            summaries.append(json.loads((folder / cell["folder"] / "summary.json").read_text()))
        except (OSError, ValueError):  # checked already; a race leaves the field out
            continue
    configs = [s.get("config") or {} for s in summaries]
    shared = {k: v for k, v in (configs[0] if configs else {}).items()
              if k not in _NOT_PROTOCOL and all(c.get(k) == v for c in configs)}
    recipes = [s.get("recipe") for s in summaries]
    envs = [s.get("environment") or {} for s in summaries]
    return {"protocol": shared,
            "recipe": recipes[0] if recipes and all(r == recipes[0] for r in recipes) else {},
            "environment": envs[-1] if envs else {},
            "seeds": sorted({c["seed"] for c in cells if c.get("seed") is not None})}


def _unique_sparsities(values: list[float]) -> list[float]:
    seen: dict[str, float] = {}
    for s in values:
        seen.setdefault(sparsity_label(s), s)
    return list(seen.values())


def _row(result: dict, method: str, sparsity: float | None) -> dict | None:
    for r in result["rows"]:
        if r["method"] == method and (method == DENSE or
                                      sparsity_label(r["sparsity"]) == sparsity_label(sparsity)):
            return r
    return None


def _is_transfer(result: dict) -> bool:
    return result.get("kind") == TRANSFER


def dense_label(result: dict) -> str:
    """What the dense reference is: unpruned, or the pre-trained backbone probed / fine-tuned."""
    if not _is_transfer(result):
        return "Dense (unpruned)"
    proto = result["record"].get("protocol") or {}
    if proto.get("mode") == "finetune":
        return "Dense (pre-trained backbone fine-tuned)"
    return "Dense (pre-trained backbone, ridge probe)"


def _fmt(row: dict | None, with_n: bool = False) -> str:
    if row is None:
        return "–"
    text = f"{row['mean']:.2f}" if row["std"] is None else f"{row['mean']:.2f} ± {row['std']:.2f}"
    return f"{text} (n={row['n']})" if with_n else text


def best_per_sparsity(result: dict) -> dict[str, float]:
    """The best mean (over pruning methods) at each sparsity, keyed by sparsity label."""
    best: dict[str, float] = {}
    for r in result["rows"]:
        if r["method"] == DENSE:
            continue
        label = sparsity_label(r["sparsity"])
        best[label] = max(best.get(label, -math.inf), r["mean"])
    return best


def _pruning_methods(result: dict) -> list[str]:
    return [m for m in result["methods"] if m != DENSE]


def _n_text(result: dict) -> str:
    ns = sorted({r["n"] for r in result["rows"]})
    return "n = " + "/".join(str(n) for n in ns) + " seeds per entry" if ns else "no results"


def format_text_table(result: dict) -> str:
    """A plain-text table: methods x sparsities, mean ± std test accuracy (%)."""
    sparsities = result["sparsities"]
    header = ["method", *(f"{s * 100:.2f}%" for s in sparsities)]
    lines = [header]
    for m in _pruning_methods(result):
        lines.append([display_name(m), *(_fmt(_row(result, m, s)) for s in sparsities)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [f"{result['metric']} (%) — {_n_text(result)}"]
    out += ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
            for line in lines]
    dense = _row(result, DENSE, None)
    if dense is not None or DENSE in result["methods"]:
        out.append(f"{dense_label(result).lower()}: {_fmt(dense, with_n=True)}")
    if result["missing"]:
        out.append(f"{len(result['missing'])} cell(s) not finished: " + ", ".join(
            f"{c['folder']} ({c['status']}" + (f": {c['error']})" if c["status"] == "damaged"
                                               else ")") for c in result["missing"]))
    return "\n".join(out)


def _transfer_protocol_text(result: dict, proto: dict, recipe: dict, names: set) -> str:
    """The protocol of a transfer sweep in one sentence-like line."""
    parts = [f"backbone {proto.get('backbone')} (weights: {proto.get('weights') or 'default'})",
             f"dataset {', '.join(sorted(names)) or proto.get('dataset')}",
             (f"images resized to {proto['image_size']} px" if proto.get("image_size")
              else "images at their own size"),
             f"probe fitted on {proto.get('train_per_class') or 'all'} train images/class, "
             f"tested on {proto.get('test_per_class') or 'all'} test images/class",
             f"pruning split {proto.get('per_class')}/class with the "
             + ("dense probe" if proto.get("head") == "probe" else "random head")
             + f" as classifier, {proto.get('scope')} scope"]
    if proto.get("rounds"):
        parts.append(f"{proto['rounds']} rounds")
    elif proto.get("round_factor"):
        parts.append(f"multi-round methods keep {proto['round_factor']} of the density per "
                     f"round (round(ln(1 - s) / ln {proto['round_factor']}) rounds at sparsity s)")
    else:
        parts.append("each method's default rounds")
    if proto.get("mode") == "finetune":
        parts.append(f"fine-tuned with the mask fixed: recipe {proto.get('recipe')}, "
                     f"{proto.get('epochs') or recipe.get('epochs')} epochs, lr "
                     f"{recipe.get('lr')}, batch {recipe.get('batch_size')}")
    else:
        parts.append("ridge probe refitted on the pruned features, no training")
    return "; ".join(parts)


def _protocol_text(result: dict) -> str:
    record = result["record"]
    proto, recipe = record.get("protocol") or {}, record.get("recipe") or {}
    if not proto:
        return "protocol: unknown (no sweep.json)"
    names = {c.get("dataset_name") for c in result["cells"] if c.get("dataset_name")}
    if _is_transfer(result):
        return _transfer_protocol_text(result, proto, recipe, names)
    parts = [f"model {proto.get('model')}",
             f"dataset {', '.join(sorted(names)) or proto.get('dataset')}",
             f"recipe {proto.get('recipe')}: {recipe.get('epochs')} epochs, "
             f"{recipe.get('schedule')} schedule, lr {recipe.get('lr')}, "
             f"batch {recipe.get('batch_size')}"]
    if proto.get("train_per_class"):
        parts.append(f"{proto['train_per_class']} train images/class")
    if proto.get("test_per_class"):
        parts.append(f"{proto['test_per_class']} test images/class")
    parts.append(f"pruning split {proto.get('per_class')}/class, {proto.get('scope')} scope")
    return "; ".join(parts)


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
    if _is_transfer(result):
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


def format_markdown(result: dict, title: str | None = None,
                    notes: list[str] | None = None, paired: str | None = None,
                    paper: str | None = None) -> str:
    """``report.md``: the table with the best mean per sparsity in bold, then dense and gaps;
    with ``paired`` a section pairing that method by seed against the others (sweep_compare)."""
    sparsities = result["sparsities"]
    best = best_per_sparsity(result)
    what = "Test accuracy (%)"
    if _is_transfer(result):
        mode = (result["record"].get("protocol") or {}).get("mode")
        what += (" of the pruned pre-trained backbone, fine-tuned with the mask fixed"
                 if mode == "finetune" else
                 " of the pruned pre-trained backbone with a refitted ridge probe (no training)")
    lines = [f"# {title or 'Sweep report: ' + Path(result['sweep_dir']).name}", "",
             f"{what}, `{result['metric']}`, mean ± sample std over seeds "
             f"({_n_text(result)}). Best mean per sparsity in bold.", "",
             "| Method | " + " | ".join(f"{s * 100:.2f} %" for s in sparsities) + " |",
             "|---|" + "---:|" * len(sparsities)]
    for m in _pruning_methods(result):
        cells = []
        for s in sparsities:
            row = _row(result, m, s)
            text = _fmt(row)
            if row is not None and math.isclose(row["mean"], best[sparsity_label(s)]):
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {display_name(m)} | " + " | ".join(cells) + " |")
    lines.append("")
    dense = _row(result, DENSE, None)
    if dense is not None:
        lines += [f"{dense_label(result)}: {_fmt(dense, with_n=True)}.", ""]
    lines += [f"Protocol: {_protocol_text(result)}.", ""]
    if paired:
        lines += format_section(result, paired, paper, display_name)
    lines += _cost_lines(result)
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
    if notes:
        lines += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    if result["missing"]:
        lines += [f"Not finished ({len(result['missing'])}):", ""]
        for c in result["missing"]:
            err = f": {c['error']}" if c.get("error") else ""
            lines.append(f"- `{c['folder']}` — {c['status']}{err}")
        lines.append("")
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


def plot(result: dict, path: str | Path, title: str | None = None) -> None:
    """Write :func:`figure` to ``path`` (atomically; the format from its suffix)."""
    import matplotlib.pyplot as plt

    fig = figure(result, title)
    image = io.BytesIO()
    fig.savefig(image, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(image.getvalue()))


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
    dense = _row(result, DENSE, None)
    if dense is not None:
        label = "Dense" + (" (probe)" if _is_transfer(result) and "probe" in dense_label(result)
                           else "")
        ax.axhline(dense["mean"], color="black", ls="--", lw=1.2, label=label)
    ax.set_ylabel("Test accuracy (%)")
    ax.grid(alpha=0.3)
    proto = result["record"].get("protocol") or {}
    names = sorted({c["dataset_name"] for c in result["cells"] if c.get("dataset_name")})
    network = proto.get("backbone") if _is_transfer(result) else proto.get("model", "")
    default_title = f"{network} / {', '.join(names)}"
    if _is_transfer(result):
        default_title += f", transfer ({proto.get('mode')})"
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

    for m in _pruning_methods(result):
        rows = sorted((r for r in result["rows"] if r["method"] == m),
                      key=lambda r: r["sparsity"])
        if not rows:
            continue
        xs = [xpos(r["sparsity"]) for r in rows]
        ys = [r["mean"] for r in rows]
        color, style = _style(m, _pruning_methods(result))
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
    methods = [m for m in _pruning_methods(result) if _row(result, m, sparsity) is not None]
    for i, m in enumerate(methods):
        row = _row(result, m, sparsity)
        color, _ = _style(m, _pruning_methods(result))
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


def results_json(result: dict, report_command: str | None = None) -> dict:
    """The benchmark record: environment, dataset, protocol, seeds, every cell, the aggregates."""
    record = result["record"]
    env = record.get("environment") or {}
    proto = record.get("protocol") or {}
    recipe = record.get("recipe") or {}
    names = sorted({c["dataset_name"] for c in result["cells"] if c.get("dataset_name")})
    train_n = sorted({c["train_examples"] for c in result["cells"] if c.get("train_examples")})
    test_n = sorted({c["test_examples"] for c in result["cells"] if c.get("test_examples")})
    return {
        "format": RESULTS_FORMAT,
        "device": env.get("device"), "torch": env.get("torch"), "python": env.get("python"),
        "git_commit": env.get("git_commit"), "git_dirty": env.get("git_dirty"),
        "git_commits": list(dict.fromkeys(inv.get("git_commit") for inv in
                                          record.get("invocations") or [])),
        "command": [inv.get("command") for inv in record.get("invocations") or []],
        "report_command": report_command,
        "kind": result.get("kind", TRAINING),
        "model": proto.get("model", proto.get("backbone")), "dataset": proto.get("dataset"),
        "dataset_name": ", ".join(names) or proto.get("dataset"),
        "train_examples": train_n, "test_examples": test_n,
        "protocol": {**proto, "epochs": recipe.get("epochs"),
                     "schedule": recipe.get("schedule"), "recipe_resolved": recipe},
        "metric": result["metric"], "seeds": record.get("seeds"),
        "methods": result["methods"], "sparsities": result["sparsities"],
        "cells": result["cells"], "summary": result["rows"], "missing": result["missing"],
        "invocations": record.get("invocations") or [],
    }


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None, *,
                 metric: str = "final", title: str | None = None,
                 results_path: str | Path | None = None,
                 report_command: str | None = None, notes: list[str] | None = None,
                 paired: str | None = None, paper: str | None = None) -> dict:
    """Write report.md/.csv/.png/.json into ``out_dir`` (default: the sweep folder).

    report.json goes first: it marks the folder's report files as pxprune's, so a report
    interrupted (killed, disk full) after it is simply re-run; a run or cell folder is refused."""
    result = collect(sweep_dir, metric)
    out = Path(out_dir or sweep_dir)
    refuse_foreign(out, "report")  # never beside a run's or cell's own files
    check_report_targets(out, results_path)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # what an interrupted report left half-written
    data = {**results_json(result, report_command), "notes": list(notes or [])}
    if paired:
        data.update(results_extra(result, paired, paper))
    paths = [out / "report.json"] + ([Path(results_path)] if results_path else [])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, data, indent=1)
    atomic_write_text(out / "report.md", format_markdown(result, title, notes, paired, paper))
    write_csv(result, out / "report.csv")
    plot(result, out / "report.png", title)
    return result


REPORT_FILES = ("report.md", "report.csv", "report.png", "report.json")


def _written_by_report(path: Path) -> bool:
    """Whether ``path`` is a results JSON ``pxprune report`` wrote (any format version)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    kind = RESULTS_FORMAT.split("/")[0]  # not an NTK study's or a sweep record's JSON
    return isinstance(data, dict) and str(data.get("format", "")).startswith(kind + "/")


def check_report_targets(out: Path, results_path: str | Path | None) -> None:
    """Refuse, before writing anything, to replace report files that an earlier ``pxprune
    report`` did not write (a user's own report.md, a results file of something else)."""
    present = [n for n in REPORT_FILES if (out / n).exists()]
    if present and not _written_by_report(out / "report.json"):
        raise OutputError(f"{out} holds {', '.join(present)} not written by pxprune report; "
                          "choose another --out")
    if results_path is not None and Path(results_path).exists() and not _written_by_report(
            Path(results_path)):
        raise OutputError(f"--results {results_path} exists and is not a pxprune results "
                          "file; choose another path")


