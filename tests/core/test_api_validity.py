"""The API refuses what would give a silently wrong mask: bad scores, 0 kept, wrong types."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

import pxprune
from pxprune import PruningError
from pxprune.methods import REGISTRY


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


X, Y = torch.randn(8, 4), torch.arange(8) % 3


@pytest.mark.parametrize("value, cause", [(0.0, "same score"), (float("nan"), "NaN/inf")])
def test_scores_that_cannot_rank_are_an_error_naming_the_method(monkeypatch, value, cause):
    def broken(model, batches, masks, **kw):  # e.g. float16 GraSP: every score underflows
        return {n: torch.full(m.shape, value) for n, m in masks.items()}

    monkeypatch.setitem(REGISTRY, "grasp", replace(REGISTRY["grasp"], score=broken))
    model = net()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(PruningError, match=f"grasp gave .*{cause}.*round 1"):
        pxprune.prune(model, "grasp", 0.5, (X, Y), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_equal_scores_with_nothing_to_choose_are_fine(monkeypatch):
    def flat(model, batches, masks, **kw):
        return {n: torch.ones(m.shape) for n, m in masks.items()}

    monkeypatch.setitem(REGISTRY, "magnitude", replace(REGISTRY["magnitude"], score=flat))
    assert pxprune.prune(net(), "magnitude", 0.0, progress=False).kept == 42


@pytest.mark.parametrize("kwargs, needle", [
    ({"rounds": 2.7}, "rounds must be a positive integer, got 2.7"),
    ({"rounds": "3"}, "rounds must be a positive integer, got '3'"),
    ({"rounds": True}, "rounds must be a positive integer"),
    ({"seed": "a"}, "seed must be an integer"),
    ({"foo": 1}, "no option foo"),
])
def test_wrongly_typed_or_unknown_keywords(kwargs, needle):
    with pytest.raises(PruningError, match=needle):
        pxprune.prune(net(), "snip", 0.5, (X, Y), progress=False, **kwargs)


def test_a_sparsity_that_keeps_nothing():
    with pytest.raises(PruningError, match="keeps 0 of 42 prunable weights"):
        pxprune.prune(net(), "snip", 0.99, (X, Y), progress=False)
    assert pxprune.prune(net(), "snip", 0.98, (X, Y), progress=False).kept == 1


def test_a_model_on_the_meta_device_and_masks_of_the_wrong_type():
    with pytest.raises(PruningError, match="'meta' device"):
        pxprune.prune(nn.Linear(4, 3, device="meta"), "magnitude", 0.5, progress=False)
    with pytest.raises(PruningError, match="masks must map parameter names"):
        pxprune.score(net(), "snip", (X, Y), masks=5)
