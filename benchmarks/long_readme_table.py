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


def verdicts(data: dict) -> list[str]:
    """One plain sentence per sparsity: where the default PX leads, is level or trails."""
    by: dict[str, dict[str, list[str]]] = {}
    for p in data.get("paired") or []:
        by.setdefault(p["sparsity_label"], {}).setdefault(p["verdict"], []).append(
            f"{display_name(p['method'])} ({p['mean_difference']:+.2f}, "
            f"{len(p['seeds'])} seed{'s' if len(p['seeds']) > 1 else ''})")
    if not by:
        return ["No baseline cell has finished beside a PX cell of the same seed yet, so this "
                "table does not rank PX against any baseline yet."]
    out = []
    for lab, v in sorted(by.items(), reverse=True):
        parts = [f"{word} {', '.join(v[word])}" for word in ("leads", "level", "trails")
                 if v.get(word)]
        one_seed = all(len(p["seeds"]) < 2 for p in data["paired"] if p["sparsity_label"] == lab)
        out.append(f"At {lab[1:]} %, PX (paired by seed, PX − method): " + "; ".join(parts)
                   + (". One seed only: within seed-to-seed noise, not yet a ranking."
                      if one_seed else "."))
    return out


def main() -> None:
    data = json.loads(RESULTS.read_text())
    done = len(data["cells"])
    names = ", ".join(sorted(c["folder"] for c in data["cells"]))
    verb = "has" if done == 1 else "have"
    block = [START, "", f"**{done} of the {PLANNED} planned cells {verb} finished** ({names}); "
             "the sweep resumes in later sessions (see below). Accuracy % (final epoch), "
             "mean ± sample std over seeds, the paper's Fig. 2a value in brackets, then the "
             "prunable layers left empty per seed:", "", *table(data), "",
             *verdicts(data), "", END]
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + "\n".join(block) + tail)
    print("\n".join(block))


if __name__ == "__main__":
    main()
