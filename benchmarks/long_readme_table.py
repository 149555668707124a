"""Write the long CPU sweep's tables from benchmarks/results/sweep_resnet20_cpu_long.json.

Two places, each between its markers, nothing else touched:

- benchmarks/README.md (``<!-- long-protocol:start -->`` ... ``<!-- long-protocol:end -->``):
  which cells of the grid have finished, mean ± std per method and sparsity with the paper's
  Fig. 2a value in brackets and the empty layers per seed, and the paired verdicts of the
  default PX against each baseline, as the results file holds them (nothing else is claimed);
- README.md (``<!-- headline:start -->`` ... ``<!-- headline:end -->``): the headline table
  alone (mean ± std, seeds, paper value) and the cells not in the results file yet.

    python benchmarks/long_readme_table.py            # after sweep_resnet20_cpu_long.sh --collect
    python benchmarks/long_readme_table.py --check    # exit 1 if either file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pxprune.experiments.report.names import display_name
from pxprune.experiments.report.paired import paper_value

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/sweep_resnet20_cpu_long.json"
BENCH_README = ROOT / "benchmarks/README.md"
README = ROOT / "README.md"
START, END = "<!-- long-protocol:start -->", "<!-- long-protocol:end -->"
HEAD_START, HEAD_END = "<!-- headline:start -->", "<!-- headline:end -->"


def label(s: float) -> str:
    return f"s{s * 100:.2f}"


def _accuracy(r: dict) -> str:
    return f"{r['mean']:.2f}" if r["std"] is None else f"{r['mean']:.2f} ± {r['std']:.2f}"


def table(data: dict, empty_layers: bool = True) -> list[str]:
    """Markdown lines of the table: one row per method, one column per sparsity, then dense."""
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
            paper = f" [{pv}]" if pv else ""
            if r is None:
                cells.append("not finished" + paper)
                continue
            cell = f"{_accuracy(r)} (n={r['n']}){paper}"
            if empty_layers:
                seeds = shapes.get(f"{m}|{label(s)}", {})
                empty = "/".join(str(len(v["empty_layers"])) for _, v in sorted(seeds.items()))
                cell += f", empty {empty or '?'}"
            cells.append(cell)
        lines.append(f"| {display_name(m)} | " + " | ".join(cells) + " |")
    dense = rows.get(("dense", label(0.0)))
    if dense is None:
        return [*lines, "", "Dense: not finished yet."]
    return [*lines, "", f"Dense (unpruned): {_accuracy(dense)} % (n={dense['n']})."]


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


def missing(data: dict) -> str:
    """The grid's cells that are not in the results file, per sparsity ('' when none)."""
    by: dict[str, list[str]] = {}
    for m in data.get("missing") or []:
        where = "dense" if m["method"] == "dense" else f"{m['sparsity'] * 100:.2f} %"
        by.setdefault(where, []).append(f"{display_name(m['method'])} seed {m['seed']}")
    return "; ".join(f"{where}: {', '.join(names)}" for where, names in by.items())


def progress(data: dict) -> str:
    """How many cells of the grid have finished, and which are missing."""
    done = len(data["cells"])
    planned = done + len(data.get("missing") or [])
    text = (f"**{done} of the {planned} cells of the grid {'has' if done == 1 else 'have'} "
            "finished**.")
    gaps = missing(data)
    return text + (f" Missing: {gaps}." if gaps else "")


def long_block(data: dict) -> list[str]:
    """The text for benchmarks/README.md, markers included."""
    return [START, "", progress(data) + " Accuracy % (final epoch), mean ± sample std over "
            "seeds, the paper's Fig. 2a value in brackets, then the prunable layers left empty "
            "per seed:", "", *table(data), "", *verdicts(data), "", END]


def headline_block(data: dict) -> list[str]:
    """The text for README.md, markers included."""
    gaps = missing(data)
    note = ("Accuracy % at the final epoch, mean ± sample std over seeds (n = seeds; no ± for "
            "one seed); in brackets the paper's Fig. 2a value (160 epochs), read off its plot.")
    if gaps:
        note += f" Cells not in the results file yet: {gaps}."
    return [HEAD_START, "", *table(data, empty_layers=False), "", note, "", HEAD_END]


def replaced(path: Path, start: str, end: str, block: list[str]) -> tuple[str, str]:
    """(current text, text with the part between ``start`` and ``end`` replaced by ``block``)."""
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path}: markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return text, head + "\n".join(block) + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file differs from the results JSON")
    args = parser.parse_args(argv)
    data = json.loads(RESULTS.read_text())
    stale = []
    for path, start, end, block in ((BENCH_README, START, END, long_block(data)),
                                    (README, HEAD_START, HEAD_END, headline_block(data))):
        old, new = replaced(path, start, end, block)
        if old != new:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if args.check:
        if stale:
            print("out of date (run python benchmarks/long_readme_table.py): " + ", ".join(stale))
            return 1
        return 0
    print("\n".join(long_block(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
