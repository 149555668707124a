"""Write the README's headline table from benchmarks/results/sweep_resnet20_cpu_long.json.

Replaces the text between ``<!-- long-protocol:start -->`` and ``<!-- long-protocol:end -->`` in
README.md with: which cells have finished, mean ± std per method and sparsity with the paper's
Fig. 2a value in brackets and the empty layers per seed, and the paired verdicts of the default
PX against each baseline, as the results file holds them (nothing else is claimed).

    python benchmarks/long_readme_table.py            # after sweep_resnet20_cpu_long.sh --collect
"""

from __future__ import annotations

import json
from pathlib import Path

from pxprune.experiments.compare import paper_value
from pxprune.experiments.report import display_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/sweep_resnet20_cpu_long.json"
START, END = "<!-- long-protocol:start -->", "<!-- long-protocol:end -->"
PLANNED = 2 * (1 + 9 * 3)  # seeds x (dense + 9 methods x 3 sparsities)


def label(s: float) -> str:
    return f"s{s * 100:.2f}"


def table(data: dict) -> list[str]:
    """Markdown lines of the headline table."""
    rows = {(r["method"], label(r["sparsity"])): r for r in data["summary"]}
    shapes = data.get("layer_shapes") or {}
    sparsities = sorted(data["sparsities"], reverse=True)
    methods = [m for m in data["methods"] if m != "dense"]
    lines = ["| method | " + " | ".join(f"{s * 100:.2f} %" for s in sparsities) + " |",
             "|---|" + "---:|" * len(sparsities)]
    for m in methods:
        cells = []
        for s in sparsities:
            r = rows.get((m, label(s)))
            pv = paper_value("fig2a", m, s)
            if r is None:
                cells.append("not finished" + (f" [{pv}]" if pv else ""))
                continue
            acc = (f"{r['mean']:.2f}" if r["std"] is None else
                   f"{r['mean']:.2f} ± {r['std']:.2f}")
            seeds = shapes.get(f"{m}|{label(s)}", {})
            empty = "/".join(str(len(v["empty_layers"])) for _, v in sorted(seeds.items()))
            cells.append(f"{acc} (n={r['n']}){f' [{pv}]' if pv else ''}, empty {empty or '?'}")
        lines.append(f"| {display_name(m)} | " + " | ".join(cells) + " |")
    dense = rows.get(("dense", label(0.0)))
    if dense is None:
        return [*lines, "", "Dense: not finished yet."]
    std = f" ± {dense['std']:.2f}" if dense["std"] is not None else ""
    return [*lines, "", f"Dense: {dense['mean']:.2f}{std} % (n={dense['n']})."]


def _pair(p: dict) -> str:
    return f"{display_name(p['method'])} ({p['mean_difference']:+.2f})"


def verdicts(data: dict) -> list[str]:
    """One plain sentence per sparsity: where the default PX leads, is level or trails, over the
    seeds both have finished; pairs of one seed are listed apart, as not yet a ranking."""
    by: dict[str, list[dict]] = {}
    for p in data.get("paired") or []:
        by.setdefault(p["sparsity_label"], []).append(p)
    if not by:
        return ["No baseline cell has finished beside a PX cell of the same seed yet, so this "
                "table does not rank PX against any baseline yet."]
    out = []
    for lab, pairs in sorted(by.items(), reverse=True):
        ranked = [p for p in pairs if len(p["seeds"]) >= 2]
        parts = [f"{word} {', '.join(_pair(p) for p in ranked if p['verdict'] == word)}"
                 for word in ("leads", "level", "trails")
                 if any(p["verdict"] == word for p in ranked)]
        sentence = f"At {lab[1:]} %, PX (paired by seed, mean of PX − method)"
        if parts:
            seeds = sorted({len(p["seeds"]) for p in ranked})
            sentence += (f", over {'/'.join(map(str, seeds))} seeds: " + "; ".join(parts) + ".")
        else:
            sentence += ": no method has two seeds beside PX yet."
        single = [p for p in pairs if len(p["seeds"]) < 2]
        if single:
            sentence += (" One seed so far (no verdict until a second seed): "
                         + ", ".join(_pair(p) for p in single) + ".")
        out.append(sentence)
    return out


def progress(data: dict) -> str:
    """How many planned cells have finished, and which are still missing per sparsity."""
    done = len(data["cells"])
    missing: dict[str, list[str]] = {}
    for m in data.get("missing") or []:
        where = "dense" if m["method"] == "dense" else f"{m['sparsity'] * 100:.2f} %"
        missing.setdefault(where, []).append(f"{display_name(m['method'])} seed {m['seed']}")
    text = (f"**{done} of the {PLANNED} planned cells {'has' if done == 1 else 'have'} "
            "finished**; the sweep resumes in later sessions (see below).")
    started = {f"{c['sparsity'] * 100:.2f} %" for c in data["cells"] if c["method"] != "dense"}
    if missing:
        text += " Still missing in the sparsities started: " + "; ".join(
            f"{where}: {', '.join(names)}" if where in started or where == "dense" else
            f"{where}: all {len(names)} cells (none finished yet)"
            for where, names in missing.items()) + "."
    return text


def main() -> None:
    data = json.loads(RESULTS.read_text())
    block = [START, "", progress(data) + " Accuracy % (final epoch), mean ± sample std over "
             "seeds, the paper's Fig. 2a value in brackets, then the prunable layers left empty "
             "per seed:", "", *table(data), "", *verdicts(data), "", END]
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + "\n".join(block) + tail)
    print("\n".join(block))


if __name__ == "__main__":
    main()
