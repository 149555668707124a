"""``report.tex``: the report's accuracy table as LaTeX (booktabs: ``\\toprule``, ``\\midrule``,
``\\bottomrule``), the same numbers and bold as ``report.md``, ready for a paper."""

from __future__ import annotations

from pathlib import Path

from ...io import atomic_write_text
from ..config import DENSE
from .describe import dense_label
from .names import display_name
from .statistics import best_per_sparsity, find_row, is_best, n_text, pruning_methods
from .tables import what_is_measured

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}", "–": "--", "±": r"$\pm$"}


def escape(text: str) -> str:
    """``text`` with LaTeX's special characters written as literals."""
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


def latex_entry(row: dict | None, bold: bool = False) -> str:
    """One cell: ``mean $\\pm$ std`` (the mean alone for one seed, ``--`` for none)."""
    if row is None:
        return "--"
    text = f"{row['mean']:.2f}" if row["std"] is None else (
        f"{row['mean']:.2f} $\\pm$ {row['std']:.2f}")
    return f"\\textbf{{{text}}}" if bold else text


def format_latex(result: dict, title: str | None = None) -> str:
    """A ``table`` environment: one row per pruning method, one column per sparsity, the best
    mean per sparsity in bold, the dense reference under a rule (needs booktabs)."""
    sparsities = result["sparsities"]
    best = best_per_sparsity(result)
    header = [f"{s * 100:.2f}\\,\\%" for s in sparsities] or ["Accuracy (\\%)"]
    caption = (f"{title + '. ' if title else ''}{what_is_measured(result)}, "
               f"{result['metric']}, mean ± sample std over seeds ({n_text(result)}); "
               "best mean per sparsity in bold.")
    lines = ["% written by pxprune report; needs \\usepackage{booktabs}",
             "\\begin{table}[t]", "\\centering", f"\\caption{{{escape(caption)}}}",
             "\\begin{tabular}{l" + "r" * len(header) + "}", "\\toprule",
             "Method & " + " & ".join(header) + " \\\\",
             "\\midrule"]
    for m in pruning_methods(result):
        rows = [find_row(result, m, s) for s in sparsities]
        lines.append(escape(display_name(m)) + " & " + " & ".join(
            latex_entry(r, is_best(result, r, best)) for r in rows) + " \\\\")
    dense = find_row(result, DENSE, None)
    if dense is not None:
        lines += ["\\midrule", f"{escape(dense_label(result))} & \\multicolumn{{{len(header)}}}"
                  f"{{c}}{{{latex_entry(dense)} (n={dense['n']})}} \\\\"]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def write_latex(result: dict, path: str | Path, title: str | None = None) -> None:
    """Write :func:`format_latex` to ``path`` atomically."""
    atomic_write_text(path, format_latex(result, title))
