"""Tests of pxprune.training.train: masks held at zero, exact resume, run folder files, recipes."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import Stop, random_masks, stop_after, synthetic, tiny_net
from torch import nn

from pxprune.data import iterate_batches
from pxprune.errors import (
    DamagedFileError,
    FileFormatError,
    TrainingDivergedError,
    TrainingError,
    WeightsMismatchError,
)
from pxprune.training.recipes import RECIPES, Recipe, get_recipe, scale_milestones
from pxprune.training.train import evaluate, make_scheduler, masks_fingerprint, train

RECIPE = Recipe(lr=0.05, momentum=0.9, weight_decay=5e-3, epochs=3, batch_size=16,
                milestones=(2,), eval_batch_size=32)


@pytest.fixture(scope="module")
def data():
    return synthetic(96, seed=1), synthetic(40, seed=2)


def run(tmp_path, data, recipe=RECIPE, masks_seed: int | None = 3, name="run", **kw):
    model = tiny_net()
    masks = random_masks(model, 0.3, masks_seed) if masks_seed is not None else None
    summary = train(model, masks, data[0], data[1], recipe, out_dir=tmp_path / name,
                    progress=False, log=None, **kw)
    return model, masks, summary


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_pruned_weights_stay_exactly_zero(tmp_path, data, optimizer):
    recipe = Recipe(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-2, momentum=0.9,
                    nesterov=True, weight_decay=1e-2, epochs=2, batch_size=16, milestones=())
    model, masks, summary = run(tmp_path, data, recipe)
    params = dict(model.named_parameters())
    init = tiny_net()  # same seed: the initial weights
    init_params = dict(init.named_parameters())
    for name, m in masks.items():
        p = params[name].detach()
        assert torch.count_nonzero(p[~m]) == 0, name
        # the kept weights did move (training happened)
        assert not torch.equal(p[m], init_params[name].detach()[m]), name
        assert torch.count_nonzero(p[m]) == int(m.sum())
    assert summary["kept_params"] == masks.kept
    assert summary["density"] == pytest.approx(masks.density())


def test_training_learns_and_writes_files(tmp_path, data):
    recipe = Recipe(lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=4, batch_size=16,
                    schedule="onecycle", milestones=())
    model, masks, summary = run(tmp_path, data, recipe, masks_seed=None)
    out = tmp_path / "run"
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    for r in lines:
        assert set(r) == {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                          "test_classes_predicted", "seconds", "images_per_s"}
        assert 1 <= r["test_classes_predicted"] <= 4
        assert 0 <= r["test_acc"] <= 100 and r["seconds"] > 0 and r["images_per_s"] > 0
    # onecycle: starts at lr/25, peaks near lr
    assert lines[0]["lr"] == pytest.approx(0.1 / 25)
    assert max(r["lr"] for r in lines) > 0.05
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert lines[-1]["test_acc"] >= 60.0  # 4 well-separated classes, chance is 25 %
    # summary agrees with the log and with an independent evaluation
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 4
    assert summary["final_test_acc"] == lines[-1]["test_acc"]
    assert summary["best_test_acc"] == max(r["test_acc"] for r in lines)
    assert summary["density"] == 1.0 and summary["kept_params"] == summary["total_params"]
    assert summary["total_params"] == 3 * 8 * 9 + 8 * 8 * 9 + 8 * 4
    assert summary["masks_sha256"] == "dense"
    ev = evaluate(model, data[1], batch_size=7)
    assert ev["acc"] == pytest.approx(summary["final_test_acc"])
    assert ev["loss"] == pytest.approx(summary["final_test_loss"], rel=1e-5)
    assert (out / "model.pt").exists() and not (out / "checkpoint.pt").exists()


def test_flops_in_summary_when_available(tmp_path, data):
    pytest.importorskip("pxprune.analysis.flops")
    _, masks, summary = run(tmp_path, data, Recipe(epochs=1, batch_size=32, milestones=()))
    f = summary["flops"]
    assert f["dense_macs"] == (3 * 8 * 9 + 8 * 8 * 9) * 64 + 8 * 4
    assert 0 < f["kept_macs"] < f["dense_macs"]






@pytest.mark.parametrize("recipe", [
    RECIPE,
    Recipe(lr=0.1, nesterov=True, weight_decay=5e-4, epochs=3, batch_size=16,
           schedule="onecycle", milestones=()),
    Recipe(lr=0.1, nesterov=True, weight_decay=5e-4, epochs=3, batch_size=16,
           schedule="onecycle", milestones=(), precision="bf16", channels_last=True),
    Recipe(lr=0.1, nesterov=True, weight_decay=5e-4, epochs=3, batch_size=16,
           schedule="onecycle", milestones=(), precision="fp32", channels_last=False),
], ids=["multistep", "onecycle", "bf16-nhwc", "fp32-nchw"])
def test_resume_after_kill_is_bitwise_identical(tmp_path, data, recipe):
    full, masks, s_full = run(tmp_path, data, recipe, name="full", keep_checkpoint=True)

    model = tiny_net()
    with pytest.raises(Stop):
        train(model, masks, data[0], data[1], recipe, out_dir=tmp_path / "cut", progress=False,
              log=None, callback=stop_after(1))
    assert (tmp_path / "cut" / "checkpoint.pt").exists()
    assert not (tmp_path / "cut" / "summary.json").exists()
    # a kill between checkpoint and log line: the log is repaired from the checkpoint
    (tmp_path / "cut" / "metrics.jsonl").write_text("")
    messages: list[str] = []
    resumed = tiny_net(seed=123)  # a fresh process builds its model anew; weights come from disk
    s_cut = train(resumed, masks, data[0], data[1], recipe, out_dir=tmp_path / "cut",
                  progress=False, log=messages.append)
    assert any("resuming after epoch 1/3" in m for m in messages)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines_full = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    lines_cut = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(s).items() if k not in ("seconds", "images_per_s")}
             for s in lines_full]
    assert strip == [{k: v for k, v in json.loads(s).items()
                      if k not in ("seconds", "images_per_s")} for s in lines_cut]
    assert s_cut["final_test_acc"] == s_full["final_test_acc"]


def test_finished_folder_is_not_retrained(tmp_path, data):
    trained, masks, summary = run(tmp_path, data, Recipe(epochs=1, batch_size=32, milestones=()))
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    messages: list[str] = []
    fresh = tiny_net(seed=7)
    again = train(fresh, masks, data[0], data[1], Recipe(epochs=1, batch_size=32, milestones=()),
                  out_dir=tmp_path / "run", progress=False, log=messages.append)
    assert again == summary
    assert any("already finished" in m for m in messages)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    for k, v in trained.state_dict().items():  # the final weights were loaded, not retrained
        assert torch.equal(fresh.state_dict()[k], v), k


def test_resume_refuses_other_masks(tmp_path, data):
    model = tiny_net()
    masks = random_masks(model, 0.3, 3)
    with pytest.raises(Stop):
        train(model, masks, data[0], data[1], RECIPE, out_dir=tmp_path / "r", progress=False,
              log=None, callback=stop_after(1))
    other = random_masks(tiny_net(), 0.3, 4)
    assert masks_fingerprint(other) != masks_fingerprint(masks)
    with pytest.raises(ValueError, match="another masks"):
        train(tiny_net(), other, data[0], data[1], RECIPE, out_dir=tmp_path / "r",
              progress=False, log=None)


def test_same_seed_same_weights_other_seed_differs(tmp_path, data):
    a, _, _ = run(tmp_path, data, name="a", seed=5)
    b, _, _ = run(tmp_path, data, name="b", seed=5)
    c, _, _ = run(tmp_path, data, name="c", seed=6)
    w = "0.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_recipe_presets_match_paper():
    r = RECIPES["cifar10_resnet20"]
    assert (r.lr, r.momentum, r.weight_decay, r.epochs, r.milestones, r.batch_size) == (
        0.1, 0.9, 1e-4, 160, (80, 120), 128)
    assert (r.schedule, r.gamma, r.nesterov, r.amp) == ("multistep", 0.1, False, True)
    r = RECIPES["cifar100_vgg16"]
    assert (r.lr, r.nesterov, r.weight_decay, r.milestones, r.epochs, r.batch_size) == (
        0.1, True, 5e-4, (60, 120), 160, 128)
    r = RECIPES["tinyimagenet_resnet18"]
    assert (r.lr, r.weight_decay, r.epochs, r.milestones, r.batch_size) == (
        0.2, 1e-4, 200, (100, 150), 256)
    r = RECIPES["imagenet_resnet50"]
    assert (r.lr, r.weight_decay, r.epochs, r.milestones, r.batch_size) == (
        0.1, 1e-4, 90, (30, 60, 80), 448)
    r = RECIPES["cpu_small"]
    assert (r.epochs, r.batch_size, r.nesterov, r.momentum, r.weight_decay, r.schedule, r.lr) == (
        4, 128, True, 0.9, 5e-4, "onecycle", 0.2)
    r = RECIPES["cifar10_onecycle30"]  # the short GPU protocol: its name must say its length
    assert (r.epochs, r.schedule, r.lr, r.milestones) == (30, "onecycle", 0.2, ())


def test_get_recipe_scales_milestones():
    assert get_recipe("cifar10_resnet20", epochs=16).milestones == (8, 12)
    assert get_recipe("cifar10_resnet20", epochs=160).milestones == (80, 120)
    assert get_recipe("imagenet_resnet50", epochs=9).milestones == (3, 6, 8)
    assert get_recipe("cifar100_vgg16", epochs=8).milestones == (3, 6)
    # 4 epochs of a 160-epoch schedule: 80 -> 2, 120 -> 3
    assert get_recipe("cifar10_resnet20", epochs=4).milestones == (2, 3)
    # explicit milestones win; other fields pass through
    r = get_recipe("cifar10_resnet20", epochs=10, milestones=(5,), lr=0.05)
    assert (r.milestones, r.lr, r.epochs) == ((5,), 0.05, 10)
    assert get_recipe("cpu_small", epochs=8).milestones == ()
    assert scale_milestones((80, 120), 160, 2) == (1,)  # 1 and 2 -> 1 kept, 2 == epochs dropped
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("nope")
    with pytest.raises(ValueError, match="schedule"):
        Recipe(schedule="linear")
    r = get_recipe("tinyimagenet_resnet18")
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_multistep_schedule_changes_at_epoch_boundaries():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make_scheduler(opt, Recipe(lr=0.1, epochs=4, milestones=(1, 3), gamma=0.1), 5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1] * 5 + [0.01] * 10 + [0.001] * 5
    assert lrs == pytest.approx(expected)
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(opt, Recipe(lr=1.0, epochs=2, schedule="cosine", milestones=(),
                                       warmup_epochs=1), 4)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25 * (i + 1) * 0.5 * (1 + torch.cos(
        torch.tensor(torch.pi * i / 8)).item()) for i in range(4)])
    assert lrs[4] == pytest.approx(0.5)


def test_evaluate_matches_manual_loop(data):
    model = tiny_net().eval()
    ev = evaluate(model, data[1], batch_size=9)
    x, y = next(iterate_batches(data[1], len(data[1]), shuffle=False))
    with torch.no_grad():
        out = model(x)
    assert ev["acc"] == pytest.approx(100.0 * (out.argmax(1) == y).float().mean().item())
    assert ev["loss"] == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert ev["count"] == 40


def test_stopped_run_leaves_no_gradient_hooks(tmp_path, data):
    model = tiny_net()
    masks = random_masks(model, 0.3, 3)
    with pytest.raises(Stop):
        train(model, masks, data[0], data[1], RECIPE, out_dir=tmp_path / "h", progress=False,
              log=None, callback=stop_after(1))
    assert all(not p._backward_hooks for p in model.parameters())


def test_divergence_raises_and_keeps_last_good_checkpoint(tmp_path, data):
    recipe = Recipe(lr=1e30, momentum=0.9, weight_decay=0, epochs=3, batch_size=16,
                    milestones=(), schedule="constant")
    with pytest.raises(TrainingDivergedError, match="diverged in epoch 1"):
        train(tiny_net(), None, data[0], data[1], recipe, out_dir=tmp_path / "d",
              progress=False, log=None)
    assert not (tmp_path / "d" / "summary.json").exists()
    assert not (tmp_path / "d" / "checkpoint.pt").exists()


@pytest.mark.parametrize("edit, says", [
    (lambda c: c.pop("optimizer"), "no 'optimizer' entry"),
    (lambda c: c.update(epoch="2"), "a str as its 'epoch' entry"),
    (lambda c: c["model"].pop(next(iter(c["model"]))), "missing keys"),
    (lambda c: c["model"].update({k: v[:1] for k, v in list(c["model"].items())[:1]}),
     "shape mismatches"),
    (lambda c: c["optimizer"].update(param_groups=[]), "does not fit this run's optimiser"),
], ids=["no-optimizer", "epoch-type", "weight-removed", "weight-reshaped", "optimizer-groups"])
def test_an_edited_checkpoint_is_one_line_naming_it(tmp_path, data, edit, says):
    masks = random_masks(tiny_net(), 0.3, 3)
    with pytest.raises(Stop):
        train(tiny_net(), masks, data[0], data[1], RECIPE, out_dir=tmp_path / "cut",
              progress=False, log=None, callback=stop_after(1))
    path = tmp_path / "cut" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(TrainingError) as info:
        train(tiny_net(), masks, data[0], data[1], RECIPE, out_dir=tmp_path / "cut",
              progress=False, log=None)
    text = str(info.value)
    assert says in text and str(path) in text and "restart training" in text
    assert "\n" not in text


def test_a_damaged_finished_run_is_one_line_not_a_retraining(tmp_path, data):
    _, masks, summary = run(tmp_path, data, name="done")
    out = tmp_path / "done"
    weights = (out / "model.pt").read_bytes()
    text = (out / "summary.json").read_text()
    again = tiny_net(seed=7)
    assert train(again, masks, data[0], data[1], RECIPE, out_dir=out, progress=False,
                 log=None)["final_test_acc"] == summary["final_test_acc"]
    assert torch.equal(again[8].weight, torch.load(out / "model.pt")["8.weight"])
    (out / "summary.json").write_text(text[: len(text) // 2])
    with pytest.raises(DamagedFileError, match="summary .*summary.json is unreadable"):
        train(tiny_net(), masks, data[0], data[1], RECIPE, out_dir=out, progress=False, log=None)
    (out / "summary.json").write_text(text)
    state = torch.load(out / "model.pt", weights_only=True)
    state["8.weight"] = state["8.weight"][:, :2]
    torch.save(state, out / "model.pt")
    with pytest.raises(WeightsMismatchError, match=r"final weights .*model.pt.*8.weight"):
        train(tiny_net(), masks, data[0], data[1], RECIPE, out_dir=out, progress=False, log=None)
    (out / "model.pt").write_bytes(weights[:100])
    with pytest.raises(FileFormatError, match="final weights .*model.pt is truncated.*another"):
        train(tiny_net(), masks, data[0], data[1], RECIPE, out_dir=out, progress=False, log=None)
    torch.save([1, 2], out / "model.pt")
    with pytest.raises(FileFormatError, match="model.pt holds a list, not a state dict; use"):
        train(tiny_net(), masks, data[0], data[1], RECIPE, out_dir=out, progress=False, log=None)
