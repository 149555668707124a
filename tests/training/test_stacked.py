"""Tests of pxprune.training.stacked: K stacked cells train as K separate train() runs would.

Tolerances: float64 weights agree within 1e-10 after 240 steps (measured up to 1.3e-12: the
stacked convolution is one grouped convolution whose sums run in another order than K separate
ones, so results differ in the last bits, and 240 SGD steps amplify that only mildly); float32
within 2e-3 (measured up to 1.7e-4: the same last-bit differences at float32's 1e-7 resolution,
grown through the same steps). Masked weights are exactly zero in both. A diverging cell leaves
the others within 1e-10 of a stack without it (measured: bitwise equal).
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import Stop, random_masks, stop_after, synthetic, tiny_net

import pxprune.data.loader as loader
from pxprune.data import iterate_batches
from pxprune.data.augment import normalize
from pxprune.data.device import DeviceImages
from pxprune.errors import TrainingDivergedError
from pxprune.training.recipes import Recipe
from pxprune.training.stacked import StackCell, train_stacked
from pxprune.training.stacked.sgd import CellScaler, StackedSGD
from pxprune.training.train import train

RECIPE = Recipe(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-3, epochs=20,
                batch_size=8, schedule="onecycle", milestones=(), eval_batch_size=32,
                precision="fp32")
# (init seed, data seed, mask density or None for dense): cells 0 and 2 share a data order
SPECS = [(0, 0, 0.3), (1, 1, None), (2, 0, 0.5)]
TOL = {torch.float64: 1e-10, torch.float32: 2e-3}


@pytest.fixture(scope="module")
def data():
    return synthetic(96, seed=1), synthetic(40, seed=2)


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: the machine is shared, and more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def dtype(request, monkeypatch):
    """The model dtype; the ordinary loader normalises in it too (the stack does)."""
    dt = request.param
    monkeypatch.setattr(loader, "normalize", lambda x, m, s: normalize(x, m, s, dt))
    return dt


def make(spec, dtype):
    """A cell's initial module and masks."""
    init, _, density = spec
    model = tiny_net(seed=init).to(dtype)
    return model, (random_masks(model, density, 10 + init) if density else None)


def separate(tmp_path, data, dtype, recipe=RECIPE, specs=SPECS):
    """Each cell trained alone by the ordinary trainer."""
    out = []
    for i, spec in enumerate(specs):
        model, masks = make(spec, dtype)
        train(model, masks, data[0], data[1], recipe, out_dir=tmp_path / f"alone{i}",
              seed=spec[1], progress=False, log=None)
        out.append(model)
    return out


def stacked_cells(tmp_path, dtype, specs=SPECS, name="stack"):
    return [StackCell(*make(spec, dtype), tmp_path / f"{name}{i}", spec[1])
            for i, spec in enumerate(specs)]


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def lines(path):
    return [json.loads(s) for s in (path / "metrics.jsonl").read_text().splitlines()]


def test_stacked_equals_separate_trainings(tmp_path, data, dtype):
    refs = separate(tmp_path, data, dtype)
    cells = stacked_cells(tmp_path, dtype)
    results = train_stacked(cells, data[0], data[1], RECIPE, log=None)
    steps = RECIPE.epochs * 96 // RECIPE.batch_size
    assert steps == 240
    for i, (cell, ref, res) in enumerate(zip(cells, refs, results, strict=True)):
        diff = max_diff(cell.model, ref)
        assert diff <= TOL[dtype], (i, diff)
        assert diff > 0 or dtype == torch.float64  # a real comparison, not the same object
        if cell.masks is not None:  # pruned weights exactly zero
            params = dict(cell.model.named_parameters())
            for name, m in cell.masks.items():
                assert torch.count_nonzero(params[name].detach()[~m]) == 0, name
        # the folder is the ordinary trainer's: the same files, keys and records
        alone, mine = tmp_path / f"alone{i}", tmp_path / f"stack{i}"
        assert sorted(p.name for p in mine.iterdir()) == sorted(p.name for p in alone.iterdir())
        summary = json.loads((mine / "summary.json").read_text())
        theirs = json.loads((alone / "summary.json").read_text())
        assert summary == res and set(summary) - set(theirs) == {"stacked_cells"}
        for key in ("kept_params", "total_params", "density", "masks_sha256", "seed",
                    "recipe", "precision", "epochs", "flops"):
            assert summary[key] == theirs[key], key
        a, b = lines(mine), lines(alone)
        assert [set(r) for r in a] == [set(r) for r in b]
        assert [r["lr"] for r in a] == [r["lr"] for r in b]
        assert [r["test_acc"] for r in a] == [r["test_acc"] for r in b]
        assert a[-1]["train_loss"] == pytest.approx(b[-1]["train_loss"], rel=1e-4)
    assert min(r["final_test_acc"] for r in results) >= 75.0  # chance is 25 %


def test_resume_equals_uninterrupted(tmp_path, data):
    recipe = Recipe(**{**RECIPE.to_dict(), "epochs": 6, "milestones": ()})
    whole = stacked_cells(tmp_path, torch.float32, name="whole")
    train_stacked(whole, data[0], data[1], recipe, log=None)
    cut = stacked_cells(tmp_path, torch.float32, name="cut")
    with pytest.raises(Stop):  # a kill after epoch 3 (every cell's checkpoint written)
        train_stacked(cut, data[0], data[1], recipe, log=None,
                      callback=lambda i, r: stop_after(3)(r) if i == 2 else None)
    assert all(len(lines(tmp_path / f"cut{i}")) == 3 for i in range(3))
    again = stacked_cells(tmp_path, torch.float32, name="cut")  # a new process: fresh modules
    results = train_stacked(again, data[0], data[1], recipe, log=None)
    for w, c, r in zip(whole, again, results, strict=True):
        assert max_diff(w.model, c.model) == 0.0
        assert r["epochs"] == 6
    for i in range(3):
        a, b = lines(tmp_path / f"whole{i}"), lines(tmp_path / f"cut{i}")
        assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
        assert not (tmp_path / f"cut{i}" / "checkpoint.pt").exists()


def test_cells_at_different_epochs_and_either_trainer_resumes(tmp_path, data, dtype):
    """Cell 0 starts under train() and is stopped after epoch 2; the stack resumes it at epoch 2
    next to fresh cells, stops after epoch 4 of cell 1, and train() finishes cell 1: every cell
    still equals its separate training."""
    recipe = Recipe(**{**RECIPE.to_dict(), "epochs": 6})
    refs = separate(tmp_path, data, dtype, recipe)
    model, masks = make(SPECS[0], dtype)
    with pytest.raises(Stop):
        train(model, masks, data[0], data[1], recipe, out_dir=tmp_path / "stack0",
              seed=SPECS[0][1], progress=False, log=None, callback=stop_after(2))
    cells = stacked_cells(tmp_path, dtype)
    with pytest.raises(Stop):
        train_stacked(cells, data[0], data[1], recipe, log=None,
                      callback=lambda i, r: stop_after(4)(r) if i == 1 else None)
    assert [len(lines(tmp_path / f"stack{i}")) for i in range(3)] == [6, 4, 4]
    model, masks = make(SPECS[1], dtype)  # the ordinary trainer resumes a stacked checkpoint
    train(model, masks, data[0], data[1], recipe, out_dir=tmp_path / "stack1",
          seed=SPECS[1][1], progress=False, log=None)
    again = stacked_cells(tmp_path, dtype)
    train_stacked(again, data[0], data[1], recipe, log=None)
    again[1] = StackCell(model, masks, tmp_path / "stack1", SPECS[1][1])
    for i, (cell, ref) in enumerate(zip(again, refs, strict=True)):
        assert max_diff(cell.model, ref) <= TOL[dtype], i
        assert [r["epoch"] for r in lines(tmp_path / f"stack{i}")] == list(range(1, 7))


def test_a_diverging_cell_leaves_the_stack_and_the_others_are_unchanged(tmp_path, data):
    recipe = Recipe(**{**RECIPE.to_dict(), "epochs": 4})
    with_bad = stacked_cells(tmp_path, torch.float64, SPECS + [(3, 1, 0.5)], name="bad")
    with torch.no_grad():  # a classifier weight blown up: its first loss is not finite
        with_bad[3].model[-1].weight[0, 0] = float("inf")
    results = train_stacked(with_bad, data[0], data[1], recipe, log=None)
    without = stacked_cells(tmp_path, torch.float64, name="good")
    good = train_stacked(without, data[0], data[1], recipe, log=None)
    assert isinstance(results[3], TrainingDivergedError)
    assert "training diverged in epoch 1" in str(results[3])
    bad = tmp_path / "bad3"
    assert not (bad / "summary.json").exists() and not (bad / "checkpoint.pt").exists()
    assert lines(bad) == []
    for a, b, ra, rb in zip(with_bad, without, results, good, strict=False):
        assert max_diff(a.model, b.model) <= 1e-10
        assert ra["final_test_acc"] == rb["final_test_acc"]


def test_device_batches_are_the_loaders(data):
    images = DeviceImages(data[0], "cpu")
    plans = [images.plan(16, seed, 3, True) for seed in (0, 5)]
    for b in (0, 5):  # the last batch is full here (96 = 6 x 16)
        x, y = images.batch(plans, torch.tensor([1, 0, 1]), 16, b, True)
        for k, seed in enumerate((5, 0, 5)):
            want = list(iterate_batches(data[0], 16, seed=seed, epoch=3, augment=True))[b]
            assert torch.equal(x[k], want[0]) and torch.equal(y[k], want[1])


def test_one_cells_overflow_skips_only_its_step():
    scaler = CellScaler(2, torch.device("cpu"), enabled=True)
    p = torch.ones(2, 3, requires_grad=True)
    losses = (p * torch.tensor([[1.0], [1.0]])).sum(1)
    scaler.loss(losses).backward()
    p.grad[1, 0] = float("inf")  # cell 1 overflowed
    finite = scaler.unscale({"w": p})
    assert finite.tolist() == [True, False]
    assert torch.equal(p.grad[0], torch.ones(3))  # unscaled exactly
    sgd = StackedSGD({"w": p}, {"w": torch.tensor([[False, True, False]] * 2)}, 0.0,
                     nesterov=False, momentum=True)
    sgd.step({"w": p}, 0.5, 0.9, finite)
    assert p.detach().tolist() == [[0.5, 0.0, 0.5], [1.0, 0.0, 1.0]]  # cell 1 kept, mask held
    scaler.update(finite)
    assert scaler.scale.tolist() == [65536.0, 32768.0]
    assert scaler.state_dict(1) == {"scale": 32768.0, "growth_factor": 2.0,
                                    "backoff_factor": 0.5, "growth_interval": 2000,
                                    "_growth_tracker": 0}


def test_bf16_autocast_trains_the_stack(tmp_path, data):
    """bf16 autocast (what ``auto`` picks on a CPU with native bf16) runs under vmap: the
    weights stay fp32, the loss falls, the masks hold."""
    recipe = Recipe(**{**RECIPE.to_dict(), "epochs": 3, "precision": "bf16"})
    cells = stacked_cells(tmp_path, torch.float32)
    results = train_stacked(cells, data[0], data[1], recipe, log=None)
    for cell, res in zip(cells, results, strict=True):
        assert res["precision"] == "bf16"
        assert all(p.dtype == torch.float32 for p in cell.model.parameters())
        first, last = lines(cell.out_dir)[0], lines(cell.out_dir)[-1]
        assert last["train_loss"] < first["train_loss"]
        if cell.masks is not None:
            params = dict(cell.model.named_parameters())
            assert all(torch.count_nonzero(params[n].detach()[~m]) == 0
                       for n, m in cell.masks.items())
