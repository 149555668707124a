"""The report's per-layer density figure, training curves and LaTeX table, checked against the
numbers in the run folders they are drawn from (masks, metrics.jsonl, summary.json)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from pxprune.cli.main import main
from pxprune.experiments.report.collect import collect
from pxprune.experiments.report.curves import training_curves
from pxprune.experiments.report.latex import escape, format_latex
from pxprune.experiments.report.layers import layer_densities
from pxprune.masks import Masks

RUNS = {"mag0": ("magnitude", 0), "mag1": ("magnitude", 1), "rand0": ("random", 0),
        "dense0": ("dense", 0)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_file):
    """Four ``pxprune run`` folders of a user's model (magnitude seeds 0 and 1, random, dense),
    2 epochs each, then ``pxprune report`` over them."""
    import sys
    import textwrap

    root = tmp_path_factory.mktemp("runs")
    (root.parent / "figure_models.py").write_text(textwrap.dedent("""
        from torch import nn

        def tiny():
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    """))
    sys.path.insert(0, str(root.parent))
    try:
        for name, (method, seed) in RUNS.items():
            args = ["run", "--model", "figure_models:tiny", "--dataset", data_file,
                    "--holdout", "0.25", "--method", method, "--seed", str(seed),
                    "--epochs", "2", "--batch-size", "8", "--per-class", "2", "--device", "cpu",
                    "--no-progress", "--out", str(root / name)]
            if method != "dense":
                args += ["--sparsity", "0.6"]
            assert main(args) == 0
    finally:
        sys.path.remove(str(root.parent))
    assert main(["report", str(root)]) == 0
    return root


def _acc(runs, name: str) -> float:
    return json.loads((runs / name / "summary.json").read_text())["final_test_acc"]


def test_latex_table_holds_the_runs_accuracies_in_booktabs(runs):
    tex = (runs / "report.tex").read_text()
    assert tex == format_latex(collect(runs))
    lines = tex.splitlines()
    assert lines.index("\\toprule") < lines.index("\\midrule") < lines.index("\\bottomrule")
    assert "Method & 60.00\\,\\% \\\\" in lines
    mags = [_acc(runs, "mag0"), _acc(runs, "mag1")]
    mean = sum(mags) / 2
    std = abs(mags[0] - mags[1]) / 2 ** 0.5  # the sample std of two values
    rows = {line.split(" & ")[0]: line for line in lines if " & " in line}
    rand = _acc(runs, "rand0")
    best = max(mean, rand)
    mag_text = f"{mean:.2f} $\\pm$ {std:.2f}"
    assert re.fullmatch(r"Magnitude & (\\textbf\{)?" + re.escape(mag_text) + r"\}? \\\\",
                        rows["Magnitude"]), rows["Magnitude"]
    assert rows["Random"] in (f"Random & \\textbf{{{rand:.2f}}} \\\\", f"Random & {rand:.2f} \\\\")
    assert ("textbf" in rows["Random"]) == (rand == best)
    assert ("textbf" in rows["Magnitude"]) == (mean == best)
    dense = [line for line in lines if line.startswith("Dense (unpruned) & ")]
    assert dense == [f"Dense (unpruned) & \\multicolumn{{1}}{{c}}{{{_acc(runs, 'dense0'):.2f} "
                     "(n=1)} \\\\"]
    assert lines.index(dense[0]) > lines.index("\\midrule", lines.index("\\midrule") + 1)


def test_layer_density_figure_data_are_the_masks_densities(runs):
    assert (runs / "report_layers.png").read_bytes()[:4] == b"\x89PNG"
    data = layer_densities(collect(runs))
    assert json.loads((runs / "report.json").read_text())["layer_density"] == data
    assert set(data) == {"s60.00"} and set(data["s60.00"]) == {"magnitude", "random"}
    for method, names in (("magnitude", ["mag0", "mag1"]), ("random", ["rand0"])):
        masks = [Masks.load(runs / n / "masks.safetensors") for n in names]
        got = data["s60.00"][method]
        assert got["seeds"] == len(names) and set(got["layers"]) == set(masks[0])
        assert got["layers"][0] == "0.weight" and got["layers"][-1] == "7.weight"  # model order
        for layer, density in zip(got["layers"], got["density"], strict=True):
            want = sum(int(m[layer].sum()) / m[layer].numel() for m in masks) / len(masks)
            assert density == pytest.approx(want, rel=1e-12), (method, layer)


def test_layer_density_falls_back_to_the_masks_without_layers_csv(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs, copy, ignore=shutil.ignore_patterns("report*"))
    for name in RUNS:
        (copy / name / "layers.csv").unlink()
    assert layer_densities(collect(copy)) == layer_densities(collect(runs))  # exact counts


def test_training_curves_are_the_mean_of_each_runs_metrics(runs):
    assert (runs / "report_curves.png").read_bytes()[:4] == b"\x89PNG"
    curves = training_curves(collect(runs))
    assert json.loads((runs / "report.json").read_text())["curves"] == curves
    assert set(curves) == {"s60.00", "dense"}

    def epochs(name: str) -> list[dict]:
        return [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text()
                .splitlines()]

    mag = curves["s60.00"]["magnitude"]
    e0, e1 = epochs("mag0"), epochs("mag1")
    assert mag["seeds"] == 2 and mag["epoch_test_acc"] == [1, 2] == mag["epoch_train_loss"]
    assert mag["test_acc"] == pytest.approx([(a["test_acc"] + b["test_acc"]) / 2
                                             for a, b in zip(e0, e1, strict=True)])
    assert mag["train_loss"] == pytest.approx([(a["train_loss"] + b["train_loss"]) / 2
                                               for a, b in zip(e0, e1, strict=True)])
    dense = curves["dense"]["dense"]
    assert dense["test_acc"] == [r["test_acc"] for r in epochs("dense0")]


def test_latex_escapes_names_and_marks_missing_entries():
    assert escape("a_b & 5% #1 ±") == r"a\_b \& 5\% \#1 $\pm$"
    result = {"sweep_dir": "x", "kind": "training", "record": {}, "metric": "final_test_acc",
              "methods": ["px[variant=a_b]", "snip"], "sparsities": [0.5, 0.9],
              "rows": [{"method": "px[variant=a_b]", "sparsity": 0.5, "n": 1, "mean": 70.0,
                        "std": None},
                       {"method": "snip", "sparsity": 0.5, "n": 1, "mean": 71.0, "std": None},
                       {"method": "snip", "sparsity": 0.9, "n": 1, "mean": 60.0, "std": None}],
              "cells": [], "missing": []}
    lines = format_latex(result).splitlines()
    assert "PX [variant=a\\_b] & 70.00 & -- \\\\" in lines
    assert "SNIP & \\textbf{71.00} & \\textbf{60.00} \\\\" in lines
    assert "\\begin{tabular}{lrr}" in lines and not any("Dense" in x for x in lines)
