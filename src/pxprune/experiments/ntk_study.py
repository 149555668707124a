"""NTK study: how much of the dense network's NTK (trace, top eigenvalues, PX bound) each pruning
method keeps at initialisation, over a grid of sparsities; resumable JSON plus two PNG plots.

Protocol: one model built once with ``seed`` (the same init for every method, deep-copied per
cell), pruned with ``pxprune.prune`` on the seeded class-balanced pruning split of the training
set; the NTK is measured (eval-mode BatchNorm, prunable weights, :mod:`pxprune.analysis.ntk`) on a
fixed class-balanced batch of *test* images, disjoint from the pruning data.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..analysis.ntk import EXACT_MAX_ROWS, ntk_matrix, ntk_top_eigenvalues, ntk_trace, px_bound
from ..data import load_dataset, normalize, pruning_split
from ..io import atomic_write_json, read_json
from ..masks import Masks, PruningError
from ..methods import REGISTRY
from ..methods.spec import MethodSpec, split_method_list
from ..schedule import parse_sparsities
from . import provenance
from .cell_lock import CellLock
from .config import NtkConfig
from .folder import refuse_foreign
from .prune_cell import prune_cell_masks
from .resolve import build_model

SPECTRUM_SPARSITY = 1.0 - 0.8**18  # 98.20 %: the spectrum plot's sparsity (or the grid's highest)
FORMAT = "pxprune.ntk_study/1"


def study_methods() -> list[str]:
    """Every registered foresight method (all but those that train, such as IMP)."""
    return [name for name in sorted(REGISTRY) if not REGISTRY[name].trains]


def _cell_key(method: str, sparsity: float) -> str:
    return f"{method}@{sparsity * 100:.4f}"


def _kernel_stats(model: torch.nn.Module, x: torch.Tensor, masks: Masks, top_k: int,
                  chunk: int) -> dict[str, object]:
    """Trace and top eigenvalues of the sparse net's NTK (one explicit kernel when NK is small)."""
    rows = x.shape[0] * _num_outputs(model, x)
    if rows <= EXACT_MAX_ROWS:
        kernel = ntk_matrix(model, x, masks, chunk=chunk)
        trace = float(kernel.trace())
        eig = torch.linalg.eigvalsh(kernel).flip(0)[:top_k]
        how = "exact"
    else:
        trace = ntk_trace(model, x, masks, chunk=chunk)
        eig = ntk_top_eigenvalues(model, x, top_k, masks, method="lanczos")
        how = "lanczos"
    return {"trace": trace, "top_eigenvalues": [float(v) for v in eig], "eigen_method": how,
            "ntk_size": rows}


def _num_outputs(model: torch.nn.Module, x: torch.Tensor) -> int:
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return int(model(x[:1].to(next(model.parameters()).dtype)).numel())
    finally:
        for m, flag in flags:
            m.training = flag


def _measure(model: torch.nn.Module, x: torch.Tensor, masks: Masks, top_k: int,
             chunk: int) -> dict[str, object]:
    """NTK trace/eigenvalues and the PX bound of one (sparse) network, with timings."""
    t0 = time.perf_counter()
    stats = _kernel_stats(model, x, masks, top_k, chunk)
    t1 = time.perf_counter()
    bound = px_bound(model, x, masks)
    t2 = time.perf_counter()
    stats.update({
        "bound": bound["bound"],
        "path_activation": bound["path_activation"],
        "path_kernel": bound["path_kernel"],
        "frobenius_product": bound["frobenius_product"],
        "bound_holds": bool(bound["bound"] >= stats["trace"] * (1 - 1e-6)),
        "seconds_ntk": round(t1 - t0, 2),
        "seconds_bound": round(t2 - t1, 2),
    })
    return stats


# a dense NTK trace below this, per example and output, means the outputs barely depend on the
# weights (a default-init network whose activations vanish under eval-mode BatchNorm: 1e-9)
DEGENERATE_TRACE = 1e-6


def degenerate_warnings(dense: Mapping, cells: Mapping, n_outputs: int) -> list[str]:
    """Plain-words warnings for diagnostics that cannot be read as ratios: a vanishing dense
    trace, and sparse cells whose trace is exactly zero."""
    out = []
    trace = dense.get("trace")
    if trace is not None and trace < DEGENERATE_TRACE * max(n_outputs, 1):
        out.append(f"the dense NTK trace is {trace:.3g} over {n_outputs} outputs: the outputs "
                   f"barely depend on the weights at this initialisation (e.g. activations "
                   f"vanishing under eval-mode BatchNorm with fresh statistics), so every ratio "
                   f"here is unreliable")
    zero = [k for k, c in cells.items() if c.get("trace") == 0.0]
    if zero:
        out.append(f"{len(zero)} cell(s) have an NTK trace of exactly 0 (their outputs do not "
                   f"depend on the kept weights): {', '.join(zero[:5])}"
                   + (" ..." if len(zero) > 5 else ""))
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else None


def _study_cell(model: torch.nn.Module, method: str, sparsity: float,
                rounds: int | Mapping[str, int] | None, seed: int,
                pruning: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor, dense: Mapping,
                top_k: int, chunk: int) -> dict:
    """One method x sparsity cell: prune ``model`` (a copy of the init) through the one
    pruning cell, then measure its NTK, top eigenvalues and PX bound against ``dense``."""
    spec = MethodSpec.parse(method)
    per_method = rounds.get(method, rounds.get(spec.name)) if isinstance(rounds, Mapping) \
        else None
    t0 = time.perf_counter()
    pruned = prune_cell_masks(
        model, spec, sparsity, pruning, rounds=per_method, seed=seed,
        iterative_rounds=None if isinstance(rounds, Mapping) else rounds,
        allow_disconnected=True)  # a study measures collapse: disconnected masks are kept
    masks = pruned.masks
    cell = {"method": method, "sparsity": sparsity, "sparsity_pct": round(sparsity * 100, 4),
            "rounds": pruned.rounds, "density": masks.density(), "kept": masks.kept,
            "total": masks.total}
    cell.update(_measure(model, x, masks, top_k, chunk))
    cell["trace_ratio"] = _ratio(cell["trace"], dense["trace"])
    cell["lambda_max_ratio"] = _ratio(cell["top_eigenvalues"][0], dense["top_eigenvalues"][0])
    cell["bound_ratio"] = _ratio(cell["bound"], dense["bound"])
    cell["layer_density"] = masks.layer_density()
    cell["collapsed_layers"] = masks.collapsed_layers()
    cell["seconds_prune"] = round(pruned.seconds, 2)
    cell["seconds"] = round(time.perf_counter() - t0, 2)
    return cell


def _open_results(path: Path, config: Mapping) -> dict:
    """The study's ``ntk.json`` to continue (written with this very configuration), or a new
    one; a file from another configuration is refused in one line, never mixed into."""
    if not path.exists():
        return {"format": FORMAT, "config": dict(config), "environment": {}, "dense": None,
                "cells": {}}
    results = read_json(path, "the NTK study", hint="delete it or choose another out_dir")
    if not isinstance(results, dict) or results.get("config") != config:
        found = results.get("config") if isinstance(results, dict) else None
        raise PruningError(f"{path} was written with another configuration ({found}); "
                           "delete it or choose another out_dir")
    return results


def _measure_dense(base: torch.nn.Module, x: torch.Tensor, top_k: int, chunk: int) -> dict:
    """The dense network's NTK figures, the reference every cell's ratios divide by."""
    t0 = time.perf_counter()
    dense = _measure(copy.deepcopy(base), x, Masks.ones(base), top_k, chunk)
    dense["seconds"] = round(time.perf_counter() - t0, 2)
    return dense


def run_ntk_study(
    model_name: str,
    dataset: str,
    methods: str | Sequence[str] | None,
    sparsities: str | Sequence[float | str],
    out_dir: str | os.PathLike[str],
    *,
    n_images: int = NtkConfig.n_images,
    per_class: int = NtkConfig.per_class,
    seed: int = NtkConfig.seed,
    top_k: int = NtkConfig.top_k,
    rounds: int | Mapping[str, int] | None = NtkConfig.rounds,
    stem: str = NtkConfig.stem,
    chunk: int = NtkConfig.chunk,
    meta: Mapping[str, object] | None = None,
    plots: bool = True,
    progress: bool = True,
    output: str | None = None,
) -> dict:
    """Measure NTK trace ratio, top eigenvalues and PX bound, method x sparsity, at init.

    ``model_name``: a built-in model (``pxprune.models.NAMES``) or ``package.module:function``;
    ``output``: which of its outputs is the logits, when it returns several (``--output``).

    ``methods``: names, ``"all"``/None (every method but IMP). ``sparsities``: ``"paper"`` or a
    list. ``rounds``: None (each method's default: 100 for PX/SynFlow), an int for the iterative
    methods (default > 1; one-shot methods keep 1), or ``{method: rounds}``. Writes
    ``out_dir/{stem}.json`` after every cell (cells already there are skipped on a re-run, which
    must use the same configuration) and ``{stem}.png`` / ``{stem}_spectrum.png``.
    """
    if methods is None or methods == "all":
        methods = study_methods()
    elif isinstance(methods, str):
        methods = split_method_list(methods)
    # unknown names or options fail now, not after an hour; cells are keyed by the resolved
    # spec (px -> px[variant=cvpr2024]), so a default that changes never reuses an old cell
    # (checked before resolving: the message quotes what the user wrote)
    methods = [MethodSpec.parse(m).resolved() for m in methods]
    grid = parse_sparsities(sparsities)
    out = Path(out_dir)
    refuse_foreign(out, "ntk")  # a run's, pruning's or transfer's folder: one line, untouched
    out.mkdir(parents=True, exist_ok=True)
    # one writer: a second study into this folder would rewrite ntk.json without the
    # first one's cells (each keeps the file it read), so it is refused in one line
    with CellLock(out):
        path = out / f"{stem}.json"

        train = load_dataset(dataset, "train")
        test = load_dataset(dataset, "test")
        classes = train.num_classes
        eval_per_class = max(1, n_images // classes)
        config = {"model": model_name, "dataset": dataset, "dataset_name": train.name,
                  "n_images": eval_per_class * classes, "eval_per_class": eval_per_class,
                  "eval_split": "test", "per_class": per_class, "seed": seed, "top_k": top_k,
                  "bn_mode": "eval", "params": "prunable", "method_keys": "resolved specs",
                  "rounds": dict(rounds) if isinstance(rounds, Mapping) else rounds,
                  **({"output": output} if output is not None else {})}
        results = _open_results(path, config)
        results["environment"] = {**provenance.environment("cpu"), **dict(meta or {})}

        xp_u8, yp = pruning_split(train, per_class=per_class, seed=seed)
        xp = normalize(xp_u8, train.mean, train.std)
        xe_u8, ye = pruning_split(test, per_class=eval_per_class, seed=seed)
        xe = normalize(xe_u8, test.mean, test.std)
        results["config_info"] = {"eval_labels": ye.tolist(), "pruning_examples": int(len(yp))}

        torch.manual_seed(seed)
        base = build_model(model_name, classes, output)

        def log(msg: str) -> None:
            if progress:
                print(msg, flush=True)

        dense = results["dense"]
        if dense is None:
            dense = results["dense"] = _measure_dense(base, xe, top_k, chunk)
            atomic_write_json(path, results, indent=1)
            log(f"dense: trace {dense['trace']:.4g}, lambda_max {dense['top_eigenvalues'][0]:.4g}"
                f", bound {dense['bound']:.4g} ({dense['seconds']} s)")

        todo = [(m, s) for m in methods for s in grid if _cell_key(m, s) not in results["cells"]]
        log(f"{len(todo)} cells to run ({len(methods) * len(grid) - len(todo)} already done)")
        for i, (method, sparsity) in enumerate(todo):
            cell = _study_cell(copy.deepcopy(base), method, sparsity, rounds, seed, (xp, yp), xe,
                               dense, top_k, chunk)
            results["cells"][_cell_key(method, sparsity)] = cell
            atomic_write_json(path, results, indent=1)
            log(f"[{i + 1}/{len(todo)}] {method:>10} {sparsity * 100:6.2f}%  trace ratio "
                f"{cell['trace_ratio']:.3e}  lambda_max ratio {cell['lambda_max_ratio']:.3e}  "
                f"bound ratio {cell['bound_ratio']:.3e}  collapsed {len(cell['collapsed_layers'])}"
                f"  ({cell['seconds']} s, prune {cell['seconds_prune']} s)")
        with torch.no_grad():
            n_outputs = int(base.eval()(xe[:1]).numel()) * len(xe)
        results["warnings"] = degenerate_warnings(dense, results["cells"], n_outputs)
        atomic_write_json(path, results, indent=1)
        if plots:
            plot_study(results, out / f"{stem}.png", out / f"{stem}_spectrum.png")
        return results


def run_ntk(cfg: NtkConfig, out_dir: str | os.PathLike[str], *, plots: bool = True,
            progress: bool = True, meta: Mapping[str, object] | None = None) -> dict:
    """:func:`run_ntk_study` as ``pxprune ntk`` runs it, from its configuration."""
    return run_ntk_study(cfg.model, cfg.dataset, cfg.methods, cfg.sparsities, out_dir,
                         n_images=cfg.n_images, per_class=cfg.per_class, seed=cfg.seed,
                         top_k=cfg.top_k, rounds=cfg.rounds, stem=cfg.stem, chunk=cfg.chunk,
                         meta=meta, plots=plots, progress=progress, output=cfg.output)


def trace_table(results: Mapping, key: str = "trace_ratio") -> str:
    """A method x sparsity text table of ``key`` (trace_ratio, lambda_max_ratio, bound_ratio)."""
    cells = list(results["cells"].values())
    grid = sorted({c["sparsity"] for c in cells})
    methods = list(dict.fromkeys(c["method"] for c in cells))
    lines = [f"{'method':>10} | " + " | ".join(f"{s * 100:8.2f}%" for s in grid)]
    for m in methods:
        row = []
        for s in grid:
            c = results["cells"].get(_cell_key(m, s))
            row.append(f"{c[key]:9.3g}" if c and c.get(key) is not None else f"{'-':>9}")
        lines.append(f"{m:>10} | " + " | ".join(row))
    return "\n".join(lines)


_STYLE = {"px": ("tab:red", 2.6), "synflow": ("tab:blue", 1.4), "synflow_l2": ("tab:cyan", 1.4),
          "snip": ("tab:green", 1.4), "grasp": ("tab:purple", 1.4), "ntksap": ("tab:orange", 1.4),
          "magnitude": ("tab:brown", 1.4), "random": ("tab:gray", 1.4)}


def plot_study(results: Mapping, trace_png: str | os.PathLike[str],
               spectrum_png: str | os.PathLike[str]) -> None:
    """Trace / lambda_max ratio against sparsity (log y) and the spectra at 98.2 % vs dense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(results["cells"].values())
    if not cells:
        return
    cfg = results["config"]
    methods = list(dict.fromkeys(c["method"] for c in cells))
    grid = sorted({c["sparsity"] for c in cells})

    def xpos(s: float) -> float:
        return -math.log(1.0 - s)  # log density: the paper grid becomes evenly spaced

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, key, label in ((axes[0], "trace_ratio", "NTK trace ratio (sparse / dense)"),
                           (axes[1], "lambda_max_ratio", "top eigenvalue ratio (sparse / dense)")):
        for m in methods:
            pts = sorted((c["sparsity"], c[key]) for c in cells
                         if c["method"] == m and c.get(key) is not None and c[key] > 0)
            if not pts:
                continue
            color, width = _STYLE.get(m, (None, 1.4))
            ax.plot([xpos(s) for s, _ in pts], [v for _, v in pts], marker="o", ms=3.5,
                    color=color, lw=width, label=m, zorder=3 if m == "px" else 2)
        ax.axhline(1.0, color="black", lw=0.8, ls="--", label="dense")
        ax.set_yscale("log")
        ax.set_xticks([xpos(s) for s in grid])
        ax.set_xticklabels([f"{s * 100:.2f}" for s in grid], rotation=45)
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    name = cfg.get("dataset_name", cfg["dataset"])
    fig.suptitle(f"{cfg['model']} at init, {name}: empirical NTK on {cfg['n_images']} test "
                 "images (eval-mode BN, prunable weights)", fontsize=10)
    fig.tight_layout()
    fig.savefig(trace_png, dpi=130)
    plt.close(fig)

    target = min(grid, key=lambda s: abs(s - SPECTRUM_SPARSITY))
    fig, ax = plt.subplots(figsize=(7, 4.6))
    dense = results["dense"]["top_eigenvalues"]
    ax.plot(range(1, len(dense) + 1), dense, color="black", lw=2.2, label="dense")
    for m in methods:
        c = results["cells"].get(_cell_key(m, target))
        if not c:
            continue
        color, width = _STYLE.get(m, (None, 1.4))
        floor = 1e-13 * dense[0]  # below this an eigenvalue is rounding noise: not drawn
        ev = [(i + 1, v) for i, v in enumerate(c["top_eigenvalues"]) if v > floor]
        if not ev:
            continue
        ax.plot([i for i, _ in ev], [v for _, v in ev], color=color, lw=width, marker=".",
                label=m)
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("NTK eigenvalue")
    ax.set_title(f"{cfg['model']}: top-{len(dense)} NTK eigenvalues at {target * 100:.2f} % "
                 "sparsity vs dense", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(spectrum_png, dpi=130)
    plt.close(fig)


