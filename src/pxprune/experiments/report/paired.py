"""Head-to-head section of a sweep report: one method paired by seed against every other, the
masks' per-layer shape (density per block of layers, empty layers) beside accuracy, and a
paper's read-out in brackets.

The paired difference removes what a seed shares across methods (init, pruning split, data
order): with two seeds, a gap whose sign holds in every seed says more than two overlapping
mean ± std. Verdict rule (stated in the report): ``leads`` / ``trails`` when the reference is
ahead / behind in every seed by a mean of at least ``TIE_POINTS``, ``level`` otherwise.
"""

from __future__ import annotations

from pathlib import Path

from ..config import DENSE
from ..sweep.grid import sparsity_label
from .layers import read_layer_table

TIE_POINTS = 0.5

# The paper's figure 2a (CIFAR-10 / ResNet-20, 160 epochs), read off the plot (docs/px.md §5):
# sparsity label -> method -> text ("hidden": under another curve; "<75": below the floor).
PAPER: dict[str, dict[str, dict[str, str]]] = {
    "fig2a": {
        "s98.20": {"px": "77.0", "ntksap": "<75", "grasp": "76.3", "synflow": "~75.2",
                   "snip": "75.5", "random": "<75", "magnitude": "76.1"},
        "s95.60": {"px": "83.2", "ntksap": "hidden", "grasp": "82.6", "synflow": "81.9",
                   "snip": "82.1", "random": "80.3", "magnitude": "~82.3"},
        "s89.26": {"px": "88.0", "ntksap": "87.9", "grasp": "87.5", "synflow": "86.6",
                   "snip": "86.9", "random": "86.0", "magnitude": "~87.7"},
    },
    # figure 3, CIFAR-10 panel, supervised-ImageNet ResNet-50 pruned then fine-tuned (paper.md
    # §3.2; dense 93.4; "<85": below the floor; the figure's 89.30 % column is 89.26 %)
    "fig3": {
        "s98.20": {"px": "91.3", "ntksap": "<85", "grasp": "86.3", "snip": "<85",
                   "random": "<85", "magnitude": "<85"},
        "s95.60": {"px": "92.6", "ntksap": "<85", "grasp": "87.6", "snip": "86.6",
                   "random": "<85", "magnitude": "<85"},
        "s89.26": {"px": "93.5", "ntksap": "92.7", "grasp": "90.2", "snip": "91.1",
                   "random": "86.0", "magnitude": "87.7"},
    },
}


def paper_value(paper: str | None, method: str, sparsity: float) -> str | None:
    """The paper's figure value for a plain method name at a sparsity (None: not in it)."""
    if not paper:
        return None
    return PAPER[paper].get(sparsity_label(sparsity), {}).get(method)


def _accuracies(cells: list[dict], metric: str) -> dict[tuple[str, str], dict[int, float]]:
    """(method, sparsity label) -> seed -> accuracy of the finished cells."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for c in cells:
        if c.get(metric) is None or c["method"] == DENSE:
            continue
        out.setdefault((c["method"], sparsity_label(c["sparsity"])), {})[c["seed"]] = float(
            c[metric])
    return out


def verdict(diffs: list[float]) -> str:
    """``leads``, ``trails`` or ``level`` for the reference's per-seed differences."""
    mean = sum(diffs) / len(diffs)
    if all(d > 0 for d in diffs) and mean >= TIE_POINTS:
        return "leads"
    if all(d < 0 for d in diffs) and mean <= -TIE_POINTS:
        return "trails"
    return "level"


def paired(cells: list[dict], reference: str, metric: str = "final_test_acc") -> list[dict]:
    """Per sparsity and method: reference minus method in every seed both finished."""
    acc = _accuracies(cells, metric)
    rows = []
    for (method, label), by_seed in sorted(acc.items(), key=lambda kv: kv[0][1]):
        ref = acc.get((reference, label), {})
        seeds = sorted(set(ref) & set(by_seed))
        if method == reference or not seeds:
            continue
        diffs = [ref[s] - by_seed[s] for s in seeds]
        rows.append({"reference": reference, "method": method, "sparsity_label": label,
                     "seeds": seeds, "differences": diffs,
                     "mean_difference": sum(diffs) / len(diffs), "verdict": verdict(diffs)})
    return rows


def _group(layer: str) -> str:
    """The block a layer belongs to: the first component of its name (layer1, fc, conv1)."""
    return layer.split(".", 1)[0]


def layer_shape(sweep_dir: Path, cell: dict) -> dict | None:
    """Density per block of layers and the empty layers of one cell (from its layers.csv)."""
    rows = read_layer_table(sweep_dir / cell["folder"])
    if rows is None:
        return None
    kept: dict[str, int] = {}
    total: dict[str, int] = {}
    empty = []
    for row in rows:
        g = _group(row["layer"])
        kept[g] = kept.get(g, 0) + int(row["kept"])
        total[g] = total.get(g, 0) + int(row["total"])
        if int(row["kept"]) == 0:
            empty.append(row["layer"])
    return {"block_density": {g: kept[g] / total[g] for g in total}, "empty_layers": empty}


def layer_shapes(sweep_dir: Path, cells: list[dict]) -> dict[str, dict]:
    """Per (method, sparsity label), every seed's layer shape, keyed ``method|label``."""
    out: dict[str, dict] = {}
    for c in cells:
        if c["method"] == DENSE:
            continue
        shape = layer_shape(sweep_dir, c)
        if shape is not None:
            key = f"{c['method']}|{sparsity_label(c['sparsity'])}"
            out.setdefault(key, {})[str(c["seed"])] = shape
    return out


def _fmt_acc(row: dict | None) -> str:
    if row is None:
        return "–"
    if row["std"] is None:
        return f"{row['mean']:.2f} (n=1)"
    return f"{row['mean']:.2f} ± {row['std']:.2f}"


def _method_line(m: str, s: float, label: str, row: dict, pair: dict | None, seeds: dict,
                 blocks: list[str], reference: str, paper: str | None, display) -> str:
    """One method's row: accuracy [paper], Δ per seed, mean Δ, verdict, empty layers, blocks."""
    acc = _fmt_acc(row)
    pv = paper_value(paper, m, s)
    acc += f" [{pv}]" if pv else ""
    per_seed = " / ".join(f"{d:+.2f}" for d in pair["differences"]) if pair else "–"
    mean = f"{pair['mean_difference']:+.2f}" if pair else "–"
    word = pair["verdict"] if pair else ("reference" if m == reference else "–")
    if pair and len(pair["differences"]) < 2:  # one seed: not yet a ranking
        word += " (1 seed)"
    empty = " / ".join(str(len(v["empty_layers"])) for _, v in sorted(seeds.items()))
    dens = []
    for b in blocks:
        vals = [v["block_density"][b] for v in seeds.values() if b in v["block_density"]]
        dens.append(f"{100 * sum(vals) / len(vals):.2f}" if vals else "–")
    return (f"| {display(m)} | {acc} | {per_seed} | {mean} | {word} | {empty or '–'} | "
            + " | ".join(dens) + " |")


def _intro(reference: str, paper: str | None, display) -> list[str]:
    """The section's heading and how to read it (Δ, verdict rule, empty layers, blocks)."""
    return [f"## {display(reference)} against each method, paired by seed", "",
            f"Δ = {display(reference)} − method in each seed (seed order as listed), then the "
            f"mean; verdict: {display(reference)} *leads* / *trails* when it is ahead / behind "
            f"in every seed by a mean of at least {TIE_POINTS} points, *level* otherwise; "
            "a verdict from one seed alone is marked (1 seed): a second seed may undo it. "
            "Empty layers: prunable layers with no weight left, per seed. Density per block "
            "(first part of the layer name, mean over seeds) shows where the mask puts its "
            "weights." + (f" [Brackets]: the paper's {paper} value read off the plot." if paper
                          else ""), ""]


def format_section(result: dict, reference: str, paper: str | None,
                   display=lambda m: m) -> list[str]:
    """Markdown: per sparsity, accuracy [paper], paired difference, empty layers, densities."""
    sweep_dir = Path(result["sweep_dir"])
    pairs = {(r["method"], r["sparsity_label"]): r
             for r in paired(result["cells"], reference, result["metric"])}
    shapes = layer_shapes(sweep_dir, result["cells"])
    rows = {(r["method"], sparsity_label(r["sparsity"])): r for r in result["rows"]
            if r["method"] != DENSE}
    lines = _intro(reference, paper, display)
    for s in sorted(result["sparsities"], reverse=True):
        label = sparsity_label(s)
        methods = [m for m in result["methods"] if (m, label) in rows]
        if not methods:
            continue
        blocks: list[str] = []
        for m in methods:
            for shape in shapes.get(f"{m}|{label}", {}).values():
                blocks += [b for b in shape["block_density"] if b not in blocks]
        lines += [f"### {s * 100:.2f} % sparsity", "",
                  "| Method | accuracy % | Δ per seed | mean Δ | verdict | empty layers | "
                  + " | ".join(blocks) + " |",
                  "|---|---:|---:|---:|---|---:|" + "---:|" * len(blocks)]
        lines += [_method_line(m, s, label, rows[(m, label)], pairs.get((m, label)),
                               shapes.get(f"{m}|{label}", {}), blocks, reference, paper,
                               display) for m in methods]
        lines.append("")
    return lines


def results_extra(result: dict, reference: str, paper: str | None) -> dict:
    """The section's numbers for the results JSON."""
    sweep_dir = Path(result["sweep_dir"])
    return {
        "paired_reference": reference,
        "paired": paired(result["cells"], reference, result["metric"]),
        "verdict_rule": f"leads/trails: ahead/behind in every seed by a mean >= {TIE_POINTS}",
        "layer_shapes": layer_shapes(sweep_dir, result["cells"]),
        "paper": paper, "paper_values": PAPER.get(paper or "", {}),
    }
