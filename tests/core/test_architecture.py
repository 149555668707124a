"""The package's shape (DESIGN §2): imports point down the layers, no cycle even inside
functions, argparse only under cli/, every user-facing error class in errors.py."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

SRC = REPO / "src"

# lower number = lower layer; a module may import its own layer or lower ones
LAYERS = {
    "pxprune.__main__": 6, "pxprune.cli": 5,
    "pxprune.experiments": 4,
    "pxprune.training": 3, "pxprune.transfer": 3, "pxprune.analysis": 3,
    "pxprune.api": 2, "pxprune.methods": 2, "pxprune": 2,  # pxprune/__init__: the public API
    "pxprune.checkpoint": 1, "pxprune.models": 1, "pxprune.data": 1, "pxprune.pathview": 1,
    "pxprune.masks": 0, "pxprune.schedule": 0, "pxprune.batches": 0, "pxprune.errors": 0,
    "pxprune.io": 0, "pxprune.numerics": 0, "pxprune.user_model": 0,
    "pxprune.progress": 0, "pxprune.tempfiles": 0, "pxprune.devices": 0,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _layer(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


def _imports(modules: dict[str, Path]) -> list[tuple[str, str, bool, str]]:
    """(importer, imported pxprune module, inside a function?, imported name) for every import
    statement, function-level ones included."""
    found = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text())
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1]
                                    + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            q, inside = node, False
            while q in parents:
                q = parents[q]
                if isinstance(q, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    inside = True
            for name in names:
                target = name
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != mod:
                    found.append((mod, target, inside, name))
                elif name.split(".")[0] == "argparse":
                    found.append((mod, "argparse", inside, name))
    return found


def test_no_import_cycle_even_inside_functions():
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for a, b, _, _ in _imports(modules):
        if b in modules:
            edges.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for m in modules:
        if m not in state:
            visit(m, [])


def test_few_function_level_imports_of_the_package():
    inside = [(a, b) for a, b, fn, _ in _imports(_modules()) if fn and b != "argparse"]
    assert len(inside) < 10, inside


def test_argparse_only_under_cli():
    users = {a for a, b, _, _ in _imports(_modules()) if b == "argparse"}
    assert users and all(u.startswith("pxprune.cli.") for u in users), sorted(users)


def test_imports_point_down_the_layers():
    upward = [(a, b) for a, b, _, _ in _imports(_modules())
              if b != "argparse" and _layer(b) > _layer(a)]
    assert not upward, upward


# user-facing errors still defined beside their code, each waiting for its room's rework
NOT_YET_IN_ERRORS = {"BackboneLoadError", "CellBusy"}


def test_user_facing_error_classes_live_in_errors_py():
    """A class deriving from PxpruneError (directly or not) is defined in pxprune/errors.py."""
    errors_tree = ast.parse((SRC / "pxprune" / "errors.py").read_text())
    user_facing = {n.name for n in errors_tree.body if isinstance(n, ast.ClassDef)}
    elsewhere = []
    for mod, path in _modules().items():
        if mod == "pxprune.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name not in NOT_YET_IN_ERRORS:
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                         for b in node.bases}
                if bases & user_facing:
                    elsewhere.append(f"{mod}.{node.name}")
    assert not elsewhere, elsewhere


# experiments/ as rooms (DESIGN §2): the report reads a sweep only through its grid and its
# record; the run and the shared cell-folder modules below them import neither room.
REPORT, SWEEP = "pxprune.experiments.report", "pxprune.experiments.sweep"
SWEEP_READ_BY_REPORT = {f"{SWEEP}.grid", f"{SWEEP}.records"}
BELOW_THE_ROOMS = [f"pxprune.experiments.{m}" for m in (
    "run", "config", "folder", "cell_check", "cell_lock", "checks", "resolve", "provenance",
    "data_split")]


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_report_reads_the_sweep_only_through_its_grid_and_record():
    imports = [(a, b, name) for a, b, _, name in _imports(_modules()) if _in(a, REPORT)]
    assert imports, "no module under experiments/report"
    reaching = [(a, b) for a, b, _ in imports if _in(b, SWEEP) and b not in SWEEP_READ_BY_REPORT]
    private = [(a, name) for a, b, name in imports if b.startswith("pxprune.")
               and not _in(b, REPORT) and name.rsplit(".", 1)[-1].startswith("_")
               and name.rsplit(".", 1)[-1] != "__version__"]
    assert not reaching and not private, (reaching, private)


def test_sweep_grid_and_record_stay_below_the_launchers():
    """What the report reads of the sweep must not pull in a run, a launcher or torch code."""
    imports = _imports(_modules())
    for low in SWEEP_READ_BY_REPORT:
        targets = {b for a, b, _, _ in imports if a == low and _in(b, SWEEP)}
        assert targets <= SWEEP_READ_BY_REPORT, (low, targets)
        assert not any(a == low and b == "pxprune.experiments.run" for a, b, _, _ in imports)


def test_the_run_and_cell_folder_modules_import_neither_room():
    upward = [(a, b) for a, b, _, _ in _imports(_modules())
              if a in BELOW_THE_ROOMS and (_in(b, SWEEP) or _in(b, REPORT))]
    assert not upward, upward
    assert not [(a, b) for a, b, _, _ in _imports(_modules())
                if _in(a, SWEEP) and _in(b, REPORT)], "the sweep imports the report"
