"""Write a report's files (``report.json`` first, then the tables and figures) into a folder,
and refuse, before writing anything, to replace files an earlier ``pxprune report`` did not
write; ``report.json`` is the benchmark record (environment, protocol, every cell, aggregates)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import OutputError
from ...io import atomic_write_json, atomic_write_text
from ...tempfiles import remove_stale_temps
from ..cell_check import TRAINING
from ..folder import refuse_foreign
from .collect import collect
from .curves import plot_curves, training_curves
from .figure import plot
from .latex import write_latex
from .layer_figure import plot_layers
from .layers import layer_densities
from .paired import results_extra
from .tables import format_markdown, write_csv

RESULTS_FORMAT = "pxprune.sweep_results/1"
REPORT_FILES = ("report.md", "report.tex", "report.csv", "report.png", "report.json")
# written when some cell has the data (a layer table or masks; a training's epochs)
DATA_FIGURES = ("report_layers.png", "report_curves.png")


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
        # the data behind report_layers.png and report_curves.png, for plotting elsewhere
        "layer_density": figure_data(result, "layer_density", layer_densities),
        "curves": figure_data(result, "curves", training_curves),
    }


def figure_data(result: dict, key: str, compute) -> dict:
    """``result[key]``, computed by ``compute(result)`` and kept there on first use: the JSON
    record and the figure share one reading of the cells' masks and epochs."""
    if key not in result:
        result[key] = compute(result)
    return result[key]


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None, *,
                 metric: str = "final", title: str | None = None,
                 results_path: str | Path | None = None,
                 report_command: str | None = None, notes: list[str] | None = None,
                 paired: str | None = None, paper: str | None = None) -> dict:
    """Write report.md/.tex/.csv/.png/.json and the per-layer and training-curve figures into
    ``out_dir`` (default: the sweep folder).

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
    write_latex(result, out / "report.tex", title)
    write_csv(result, out / "report.csv")
    plot(result, out / "report.png", title)
    plot_layers(result, out / DATA_FIGURES[0], title)
    plot_curves(result, out / DATA_FIGURES[1], title)
    return result


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
    present = [n for n in (*REPORT_FILES, *DATA_FIGURES) if (out / n).exists()]
    if present and not _written_by_report(out / "report.json"):
        raise OutputError(f"{out} holds {', '.join(present)} not written by pxprune report; "
                          "choose another --out")
    if results_path is not None and Path(results_path).exists() and not _written_by_report(
            Path(results_path)):
        raise OutputError(f"--results {results_path} exists and is not a pxprune results "
                          "file; choose another path")

