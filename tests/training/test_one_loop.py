"""One trainer (DESIGN §7): the ordinary and the stacked trainer are one loop over two step
engines, so a stack of one cell is the ordinary trainer, and the stacked step at K=1 gives the
ordinary step's weights; training divergence is a PxpruneError (exit 2 on the command line).

Tolerance: float64 weights within 1e-10 after 48 steps of the stacked step at K=1 against the
module step (vmap turns the convolution into a grouped one whose sums run in another order:
last-bit differences, measured up to about 1e-15 here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_masks, synthetic, tiny_net

import pxprune.data.loader as loader
import pxprune.training.loop as loop
from pxprune.cli.main import main
from pxprune.data.augment import normalize
from pxprune.errors import PxpruneError, TrainingDivergedError
from pxprune.training.cell import Cell
from pxprune.training.loop import train_cells
from pxprune.training.optim import epoch_schedule, make_optimizer, make_scheduler
from pxprune.training.recipes import Recipe
from pxprune.training.stacked import StackCell, StackedEngine, train_stacked
from pxprune.training.train import train

RECIPE = Recipe(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-3, epochs=4,
                batch_size=8, schedule="onecycle", milestones=(), eval_batch_size=32,
                precision="fp32")
TIMING = ("seconds", "images_per_s")


@pytest.fixture(scope="module")
def data():
    return synthetic(96, seed=1), synthetic(40, seed=2)


@pytest.fixture
def float64(monkeypatch):
    """One thread and float64 batches from the ordinary loader (the stack normalises in the
    model's dtype itself)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(loader, "normalize", lambda x, m, s: normalize(x, m, s, torch.float64))
    yield
    torch.set_num_threads(before)


def cell_model():
    model = tiny_net(seed=5).double()
    return model, random_masks(model, 0.4, 7)


def lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in (path / "metrics.jsonl").read_text().splitlines()]


def untimed(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in lines(path)]


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def test_a_stack_of_one_cell_is_the_ordinary_trainer(tmp_path, data, float64):
    alone, masks = cell_model()
    summary = train(alone, masks, data[0], data[1], RECIPE, out_dir=tmp_path / "alone", seed=3,
                    progress=False, log=None, keep_checkpoint=True)
    model, masks = cell_model()
    [stacked] = train_stacked([StackCell(model, masks, tmp_path / "one", 3)], data[0], data[1],
                              RECIPE, log=None, keep_checkpoint=True)
    assert max_diff(model, alone) == 0.0  # the same computation, bit for bit
    assert untimed(tmp_path / "one") == untimed(tmp_path / "alone")
    assert [r["epoch"] for r in lines(tmp_path / "one")] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "checkpoint.pt", "metrics.jsonl", "model.pt", "summary.json"]
    differ = {k for k in summary if summary[k] != stacked[k]}
    assert differ <= {"train_seconds"} and set(stacked) - set(summary) == {"stacked_cells"}
    assert stacked["stacked_cells"] == 1 and stacked["final_test_acc"] >= 75.0  # chance: 25 %


def test_the_stacked_step_at_k1_gives_the_ordinary_steps_weights(tmp_path, data, float64):
    """The loop with the stacked engine over one cell (what a stack is left with when the other
    cells leave) trains the cell as the module engine does."""
    alone, masks = cell_model()
    train(alone, masks, data[0], data[1], RECIPE, out_dir=tmp_path / "alone", seed=3,
          progress=False, log=None)
    model, masks = cell_model()
    masks.apply_(model)
    cell = Cell(model, masks, tmp_path / "vmap", 3, RECIPE, 12, torch.device("cpu"), "fp32",
                "asked")
    cell.out.mkdir()
    cell.restore(None, print)
    [summary] = train_cells(StackedEngine([cell], data[0], data[1], torch.device("cpu")),
                            [cell], data[0], progress=False, say=lambda _m: None, callback=None,
                            keep_checkpoint=False)
    assert 0 < max_diff(model, alone) <= 1e-10
    a, b = lines(tmp_path / "vmap"), lines(tmp_path / "alone")
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    assert [r["test_acc"] for r in a] == [r["test_acc"] for r in b]
    assert a[-1]["train_loss"] == pytest.approx(b[-1]["train_loss"], rel=1e-10)
    assert summary["final_test_acc"] == b[-1]["test_acc"] >= 75.0
    params = dict(model.named_parameters())
    assert all(torch.count_nonzero(params[n].detach()[~m]) == 0 for n, m in masks.items())


@pytest.mark.parametrize("schedule", ["onecycle", "multistep", "cosine"])
def test_the_stacks_schedule_is_the_stepped_one(schedule):
    """The stacked engine reads each step's lr and momentum off a never-stepped optimiser
    (epoch_schedule); they are the values the ordinary trainer's stepped optimiser has."""
    recipe = Recipe(lr=0.1, momentum=0.9, epochs=3, schedule=schedule, milestones=(1, 2),
                    warmup_epochs=1 if schedule == "cosine" else 0)
    model = tiny_net()
    opt = make_optimizer(model, recipe)
    sched = make_scheduler(opt, recipe, 5)
    stepped = []
    for _ in range(15):
        stepped.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        sched.step()
    ghost = make_optimizer(tiny_net(), recipe)
    ghost_sched = make_scheduler(ghost, recipe, 5)
    read = [row for _ in range(3)
            for row in zip(*epoch_schedule(ghost, ghost_sched, 5), strict=True)]
    assert read == stepped
    assert len(set(stepped)) >= 3  # the schedule really moves


def test_both_trainers_run_the_one_loop(tmp_path, data, monkeypatch):
    calls = []
    real = loop._one_epoch

    def spy(engine, cells, *args):
        calls.append((type(engine).__name__, [c.epoch for c in cells]))
        return real(engine, cells, *args)

    monkeypatch.setattr(loop, "_one_epoch", spy)
    recipe = Recipe(**{**RECIPE.to_dict(), "epochs": 2})
    train(tiny_net(), None, data[0], None, recipe, out_dir=tmp_path / "a", progress=False,
          log=None)
    cells = [StackCell(tiny_net(seed=s), None, tmp_path / f"s{s}", s) for s in (0, 1)]
    results = train_stacked(cells, data[0], None, recipe, log=None)
    assert calls == [("ModuleEngine", [0]), ("ModuleEngine", [1]),
                     ("StackedEngine", [0, 0]), ("StackedEngine", [1, 1])]
    assert [r["epochs"] for r in results] == [2, 2]


def test_divergence_is_a_pxprune_error_that_names_the_epoch(tmp_path, data):
    recipe = Recipe(lr=1e30, momentum=0.9, weight_decay=0, epochs=3, batch_size=16,
                    milestones=(), schedule="constant")
    with pytest.raises(TrainingDivergedError, match="diverged in epoch 1") as info:
        train(tiny_net(), None, data[0], data[1], recipe, out_dir=tmp_path / "d",
              progress=False, log=None)
    assert isinstance(info.value, PxpruneError) and isinstance(info.value, FloatingPointError)
    assert "no checkpoint was written" in str(info.value)
    assert lines(tmp_path / "d") == [] and not (tmp_path / "d" / "checkpoint.pt").exists()


@pytest.mark.integration
def test_a_diverging_run_exits_2_with_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, images=rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8),
             labels=np.repeat(np.arange(4), 10))
    code = main(["run", "--model", "resnet20", "--dataset", str(path), "--holdout", "0.25",
                 "--method", "magnitude", "--sparsity", "0.5", "--per-class", "2", "--epochs",
                 "2", "--batch-size", "15", "--lr", "1e30", "--precision", "fp32",
                 "--device", "cpu", "--no-progress", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("pxprune run: error: training diverged in epoch 1: train loss nan")
    assert not (tmp_path / "r" / "summary.json").exists()
