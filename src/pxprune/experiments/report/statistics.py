"""The numbers of a report: mean and sample std over seeds per method and sparsity, the best
mean per sparsity, and the lookups the tables and figures share."""

from __future__ import annotations

import math

from ..config import DENSE
from ..sweep.grid import sparsity_label


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


def unique_sparsities(values: list[float]) -> list[float]:
    """``values`` without those equal at two decimals of a percent (one folder each)."""
    seen: dict[str, float] = {}
    for s in values:
        seen.setdefault(sparsity_label(s), s)
    return list(seen.values())


def find_row(result: dict, method: str, sparsity: float | None) -> dict | None:
    """The aggregate row of a method at a sparsity (the dense row: any sparsity), or None."""
    for r in result["rows"]:
        if r["method"] == method and (method == DENSE or
                                      sparsity_label(r["sparsity"]) == sparsity_label(sparsity)):
            return r
    return None


def best_per_sparsity(result: dict) -> dict[str, float]:
    """The best mean (over pruning methods) at each sparsity, keyed by sparsity label."""
    best: dict[str, float] = {}
    for r in result["rows"]:
        if r["method"] == DENSE:
            continue
        label = sparsity_label(r["sparsity"])
        best[label] = max(best.get(label, -math.inf), r["mean"])
    return best


def is_best(result: dict, row: dict | None, best: dict[str, float]) -> bool:
    """Whether ``row`` holds the best mean at its sparsity (bold in the tables)."""
    return row is not None and row["method"] != DENSE and math.isclose(
        row["mean"], best[sparsity_label(row["sparsity"])])


def pruning_methods(result: dict) -> list[str]:
    """The report's methods without the dense reference, in the report's order."""
    return [m for m in result["methods"] if m != DENSE]


def n_text(result: dict) -> str:
    """How many seeds each entry averages, e.g. ``n = 2/3 seeds per entry``."""
    ns = sorted({r["n"] for r in result["rows"]})
    return "n = " + "/".join(str(n) for n in ns) + " seeds per entry" if ns else "no results"
