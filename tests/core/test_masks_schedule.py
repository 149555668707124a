"""Masks and the schedule: exact kept counts, deterministic ties, persistence, zeros in training."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import pxprune
from pxprune.masks import Masks, PruningError, prunable_parameters
from pxprune.schedule import parse_sparsity, round_densities, threshold


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 10))


def test_prunable_parameters_are_conv_and_linear_weights():
    assert list(prunable_parameters(small_net())) == ["0.weight", "4.weight"]
    with pytest.raises(PruningError, match="nothing prunable"):
        prunable_parameters(nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()))


@settings(max_examples=60, deadline=None)
@given(density=st.floats(0.0, 1.0), scope=st.sampled_from(["global", "layer"]),
       seed=st.integers(0, 10_000), ties=st.booleans())
def test_threshold_keeps_exactly_k(density, scope, seed, ties):
    g = torch.Generator().manual_seed(seed)
    shapes = {"a": (7, 5), "b": (13,), "c": (3, 3, 2)}
    scores = {n: torch.rand(s, generator=g) for n, s in shapes.items()}
    if ties:  # heavy ties: scores take 3 values
        scores = {n: (s * 3).floor() for n, s in scores.items()}
    masks = Masks({n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()})
    out = threshold(scores, density, masks, scope)
    if scope == "global":
        assert out.kept == round(density * masks.total)
    else:
        for n, s in shapes.items():
            assert int(out[n].sum()) == round(density * math.prod(s))
    again = threshold(scores, density, masks, scope)
    assert all(torch.equal(out[n], again[n]) for n in out)


def test_threshold_keeps_the_largest_and_never_revives():
    scores = {"a": torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])}
    current = Masks({"a": torch.tensor([True, False, True, True, True, True])})
    out = threshold(scores, 0.5, current)
    assert out["a"].tolist() == [True, False, True, True, False, False]


def test_nan_scores_are_refused():
    masks = Masks({"a": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(PruningError, match="NaN"):
        threshold({"a": torch.tensor([1.0, float("nan"), 0.0, 2.0])}, 0.5, masks)


def test_round_densities_are_geometric():
    ds = round_densities(0.018, 100)
    assert len(ds) == 100 and ds[-1] == pytest.approx(0.018)
    assert ds[49] == pytest.approx(0.018**0.5)


@pytest.mark.parametrize("text,value", [("0.982", 0.982), ("98.2%", 0.982), (0.5, 0.5),
                                        ("0", 0.0), ("1e-1", 0.1)])
def test_parse_sparsity(text, value):
    assert parse_sparsity(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["1", 1.0, -0.1, "abc", "98.2%%", "nan", float("inf"), "100%"])
def test_bad_sparsity(bad):
    with pytest.raises(PruningError, match="sparsity"):
        parse_sparsity(bad)


def test_masks_apply_attach_keep_zeros_through_training(tmp_path):
    model = small_net()
    masks = pxprune.prune(model, "px", 0.9, torch.randn(8, 3, 8, 8), rounds=3, progress=False)
    handle = masks.attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3, 8, 8)).square().mean().backward()
        opt.step()
        handle.reapply()
    for name, m in masks.items():
        assert (dict(model.named_parameters())[name][~m] == 0).all()
    path = tmp_path / "m.safetensors"
    masks.save(path)
    loaded = Masks.load(path)
    assert all(torch.equal(loaded[n], masks[n]) for n in masks)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(PruningError, match="cannot read masks"):
        Masks.load(path)


def test_export_to_torch_prune():
    model = small_net()
    masks = pxprune.prune(model, "px", 0.5, torch.randn(4, 3, 8, 8), rounds=1, progress=False)
    masks.to_torch_prune(model)
    assert torch.equal(model[0].weight_mask.bool(), masks["0.weight"])
    assert (model[0].weight[~masks["0.weight"]] == 0).all()


def test_layer_stats_and_collapse():
    masks = Masks({"a": torch.tensor([True, False]), "b": torch.zeros(3, dtype=torch.bool)})
    assert masks.collapsed_layers() == ["b"]
    assert masks.density() == pytest.approx(1 / 5)
    assert [s.kept for s in masks.layer_stats()] == [1, 0]


def test_other_parameters_can_be_made_prunable():
    """Beyond Conv/Linear weights, any named parameter joins the masks (here a BatchNorm scale)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[1].weight.copy_(torch.linspace(0.01, 10.0, 16))  # large enough to be kept
    start = pxprune.Masks.ones(model, extra=["1.weight"])
    assert list(start) == ["0.weight", "1.weight", "3.weight"]
    masks = pxprune.prune(model, "magnitude", 0.5, masks=start, rounds=1, progress=False)
    assert "1.weight" in masks and masks.kept == round(0.5 * masks.total)
    assert masks["1.weight"][-4:].all()  # the largest BN scales survive
    assert (model[1].weight[~masks["1.weight"]] == 0).all()
    with pytest.raises(pxprune.PruningError, match="not parameters"):
        pxprune.Masks.ones(model, extra=["1.nonexistent"])


@pytest.mark.parametrize("bad", [float("nan"), 0.5, 2.0, -1.0])
def test_masks_refuse_values_other_than_zero_and_one(bad):
    """A float mask is not rounded or cast: NaN, 0.5 and 2 would all become True (kept)."""
    with pytest.raises(PruningError, match=r"'conv\.weight' holds") as exc:
        Masks({"fc.weight": torch.ones(2, dtype=torch.bool),
               "conv.weight": torch.tensor([1.0, 0.0, bad])})
    assert len(str(exc.value).splitlines()) == 1
    with pytest.raises(PruningError, match="'w' holds 2"):
        Masks({"w": torch.tensor([0, 1, 2])})


def test_masks_take_bool_and_zero_one_tensors():
    for m in (torch.tensor([True, False]), torch.tensor([1.0, 0.0]), torch.tensor([1, 0]),
              torch.tensor([1, 0], dtype=torch.uint8)):
        mask = Masks({"w": m})["w"]
        assert mask.dtype == torch.bool and mask.tolist() == [True, False]
