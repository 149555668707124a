"""The grid of a sweep: its cells (method x sparsity x seed), their folders, and each cell's
configuration, planned the same way by the sweep, its status and the report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ...errors import UsageError
from ...masks import PruningError
from ...methods.spec import canonical, check_method_spec, folder_name
from ..config import DENSE, RunConfig

DEFAULT_METHODS = ("px", "snip", "grasp", "synflow", "ntksap", "random", "magnitude")


@dataclass(frozen=True)
class Cell:
    """One run of the grid; ``sparsity`` is 0 for the dense baseline."""

    method: str
    sparsity: float
    seed: int

    @property
    def folder(self) -> str:
        """The cell's folder relative to the sweep folder, e.g. ``px/s98.20/seed0``."""
        if self.method == DENSE:
            return f"{DENSE}/seed{self.seed}"
        return f"{method_folder(self.method)}/{sparsity_label(self.sparsity)}/seed{self.seed}"

    @property
    def key(self) -> str:
        """The cell's name in ``sweep.json`` (its folder)."""
        return self.folder


def method_folder(method: str) -> str:
    """The folder of a method spec: ``px`` or ``px+variant=cvpr2024`` for px[variant=cvpr2024]."""
    return method if method == DENSE else folder_name(method)


def canonical_methods(methods: Sequence[str]) -> list[str]:
    """Check each method spec (name and options) and write it canonically (sorted keys)."""
    out = []
    for m in methods:
        if m == DENSE:
            out.append(m)
            continue
        try:
            check_method_spec(m)
        except PruningError as exc:
            raise UsageError(str(exc)) from None
        out.append(canonical(m))
    if len(set(out)) != len(out):
        raise UsageError(f"methods {list(methods)} name the same spec twice")
    return out


def sparsity_label(sparsity: float) -> str:
    """The folder name of a sparsity: ``s98.20`` for 0.982 (two decimals of the percentage)."""
    return f"s{sparsity * 100:.2f}"


def plan_cells(methods: Sequence[str], sparsities: Sequence[float],
               seeds: Sequence[int]) -> list[Cell]:
    """Every cell of the grid, seed-major so that partial sweeps cover whole seeds first."""
    labels = [sparsity_label(s) for s in sparsities]
    if len(set(labels)) != len(labels):
        raise UsageError(f"sparsities {list(sparsities)} collide at two decimals of a percent")
    if any(not 0.0 < s < 1.0 for s in sparsities):
        raise UsageError("sparsities must lie strictly between 0 and 1 (use method 'dense')")
    cells: list[Cell] = []
    for seed in seeds:
        for method in methods:
            if method == DENSE:
                cells.append(Cell(DENSE, 0.0, seed))
            else:
                cells.extend(Cell(method, s, seed) for s in sparsities)
    return cells


def cell_config(base: RunConfig, cell: Cell) -> RunConfig:
    """The sweep's protocol with the cell's method, sparsity and seed."""
    return replace(base, method=cell.method, sparsity=cell.sparsity, seed=cell.seed)
