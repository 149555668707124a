"""The one pruning cell: one rounds rule for every driver, and every driver prunes through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import pxprune
from pxprune.experiments.config import RunConfig, TransferConfig
from pxprune.experiments.prune_cell import cell_rounds, given_rounds, prune_cell_masks
from pxprune.methods import REGISTRY
from pxprune.methods.spec import MethodSpec

SRC = Path(pxprune.__file__).parent
DRIVERS = ("experiments/run.py", "experiments/prune_run.py", "experiments/transfer_run.py",
           "experiments/ntk_study.py")


@pytest.mark.parametrize("method,asked,expected", [
    ("px", {}, 100), ("synflow", {}, 100), ("snip", {}, 1),
    ("px[rounds=5]", {"rounds": 3}, 5),  # the spec's own count wins
    ("snip", {"rounds": 3}, 3),  # a cell's count applies to any method
    ("snip", {"iterative_rounds": 7}, 1), ("px", {"iterative_rounds": 7}, 7),  # study-wide
    ("snip", {"round_factor": 0.8}, 1), ("px", {"round_factor": 0.8}, 2),
    ("px", {"rounds": 4, "round_factor": 0.8}, 4),
])
def test_the_rounds_rule(method, asked, expected):
    assert cell_rounds(MethodSpec.parse(method), 1 - 0.8**2, **asked) == expected


def test_given_rounds_is_none_for_the_default():
    assert given_rounds(MethodSpec.parse("px"), 0.5) is None
    assert given_rounds(MethodSpec.parse("px[rounds=100]"), 0.5) == 100


def _calls(path: Path) -> set[str]:
    """Names called in a module (``f(...)`` and ``m.f(...)``)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.id if isinstance(f, ast.Name) else getattr(f, "attr", ""))
    return out


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_driver_prunes_through_the_one_cell(driver):
    """No driver calls ``pxprune.prune`` (or the transfer wrapper) or reads a method's default
    rounds itself: each calls :func:`prune_cell_masks`, which applies the one rounds rule."""
    text = (SRC / driver).read_text()
    calls = _calls(SRC / driver)
    assert "prune_cell_masks" in calls, driver
    assert not {"prune", "prune_for_transfer"} & calls, driver
    assert "default_rounds" not in text, driver


def test_the_drivers_agree_on_rounds(monkeypatch):
    """The rounds a run cell and a transfer cell prune with, for the same method and counts,
    are the one rule's (a run records none: the call to ``pxprune.prune`` is checked)."""
    from pxprune.experiments import run as R
    from pxprune.experiments.transfer_run import effective_rounds

    seen = []

    def fake_prune(model, method, sparsity, data, *, rounds=None, **kw):
        seen.append(REGISTRY[method].default_rounds if rounds is None else rounds)
        return pxprune.Masks.ones(model)

    monkeypatch.setattr("pxprune.experiments.prune_cell.prune", fake_prune)
    monkeypatch.setattr(R, "pruning_batch",
                        lambda ds, n, seed: (torch.zeros(2, 3, 8, 8), torch.zeros(2).long()))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 2))
    for method, rounds in (("px", None), ("synflow", 7), ("snip", None), ("snip", 3),
                           ("px[rounds=5]", 9)):
        seen.clear()
        R.prune_step(RunConfig(method=method, rounds=rounds, sparsity=0.5,
                               allow_disconnected=True), model, None, "cpu", False)
        transfer = effective_rounds(TransferConfig(backbone="resnet20_a", method=method,
                                                   rounds=rounds, sparsity=0.5))
        rule = cell_rounds(MethodSpec.parse(method), 0.5, rounds=rounds)
        assert seen == [transfer] == [rule], (method, rounds)


def test_prune_cell_masks_resumes_in_its_folder(tmp_path):
    """The cell's folder holds the pruning checkpoint and clock; the result is the masks
    ``pxprune.prune`` gives and the rounds by the rule."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    cell = prune_cell_masks(model, MethodSpec.parse("synflow[rounds=3]"), 0.5, (x, y),
                            folder=tmp_path, progress=False, log=lambda m: None)
    assert cell.rounds == 3 and cell.seconds >= 0
    torch.manual_seed(0)
    again = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    direct = pxprune.prune(again, "synflow", 0.5, (x, y), rounds=3, progress=False)
    assert all(torch.equal(cell.masks[k], direct[k]) for k in direct)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # done: checkpoint and clock gone


def test_only_the_cell_imports_the_pruning_entry_point():
    """In experiments/ and cli/, ``pxprune.api.prune`` is imported by the pruning cell alone:
    a new driver cannot grow its own rounds rule, checkpoint or connectivity check."""
    importers = []
    for path in [*(SRC / "experiments").rglob("*.py"), *(SRC / "cli").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("api") and \
                    any(a.name == "prune" for a in node.names):
                importers.append(path.relative_to(SRC).as_posix())
    assert importers == ["experiments/prune_cell.py"]


def test_a_cell_counts_and_names_the_logits_its_masks_leave_constant():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    with torch.no_grad():
        model[2].weight[0].mul_(100.0)  # magnitude keeps every weight of logit 0 ...
        model[2].weight[1:].mul_(1e-6)  # ... and none of logits 1 and 2
    x, y = torch.randn(8, 6), torch.arange(8) % 3
    lines: list[str] = []
    cell = prune_cell_masks(model, MethodSpec.parse("magnitude"), 0.5, (x, y), log=lines.append)
    assert cell.outputs_reached == (1, 3)
    assert any("only 1 of 3 outputs are joined to the input" in line for line in lines)
    lines.clear()
    dense = prune_cell_masks(torch.nn.Sequential(torch.nn.Linear(6, 3)),
                             MethodSpec.parse("magnitude"), 0.5, (x, y), log=lines.append)
    assert dense.outputs_reached == (3, 3) and not any("only" in line for line in lines)


def test_a_cell_kept_although_disconnected_says_every_logit_is_constant():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    with torch.no_grad():
        model[2].weight.mul_(1e-6)  # magnitude empties the last layer first
    x, y = torch.randn(8, 6), torch.arange(8) % 3
    lines: list[str] = []
    cell = prune_cell_masks(model, MethodSpec.parse("magnitude"), 0.5, (x, y),
                            allow_disconnected=True, log=lines.append)
    assert cell.outputs_reached == (0, 3)
    assert any("no output is joined to the input" in line for line in lines)
