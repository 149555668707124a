"""Bad input to the public API gives one clear PruningError, never a deep traceback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pxprune
from pxprune import PruningError


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def test_unknown_method():
    with pytest.raises(PruningError, match="unknown method 'pxx'"):
        pxprune.prune(net(), "pxx", 0.5, torch.randn(3, 4))


def test_nothing_prunable():
    with pytest.raises(PruningError, match="nothing prunable"):
        pxprune.prune(nn.Sequential(nn.ReLU()), "px", 0.5, torch.randn(3, 4))


def test_empty_data_and_missing_data():
    with pytest.raises(PruningError, match="no examples"):
        pxprune.prune(net(), "px", 0.5, torch.empty(0, 4))
    with pytest.raises(PruningError, match="needs data"):
        pxprune.prune(net(), "px", 0.5)


def test_nan_in_model_and_data():
    model = net()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(PruningError, match="NaN"):
        pxprune.prune(model, "px", 0.5, torch.randn(3, 4))
    bad = torch.randn(3, 4)
    bad[1, 1] = float("inf")
    with pytest.raises(PruningError, match="NaN or inf"):
        pxprune.score(net(), "px", bad)


def test_bad_sparsity_through_prune():
    with pytest.raises(PruningError, match=r"\[0, 1\)"):
        pxprune.prune(net(), "px", 1.2, torch.randn(3, 4))


def test_unsupported_nonlinearity_names_the_module():
    """The bound needs piecewise-linear gates; the default PX takes GELU as it is."""
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 3))
    with pytest.raises(ValueError, match=r"gelu in module 1 \(GELU\)"):
        pxprune.score(model, "px[variant=bound]", torch.randn(3, 4))
    scores = pxprune.score(model, "px[variant=bound]", torch.randn(3, 4),
                           approximate_unsupported=True)
    assert set(scores) == {"0.weight", "2.weight"}
    default = pxprune.score(model, "px", torch.randn(3, 4))
    assert set(default) == {"0.weight", "2.weight"} and all(s.max() > 0 for s in default.values())


def test_prune_returns_exact_density_and_applies_masks():
    model = net()
    masks = pxprune.prune(model, "px", "75%", torch.randn(16, 4), rounds=4, progress=False)
    assert masks.kept == round(0.25 * masks.total)
    for name, m in masks.items():
        assert (dict(model.named_parameters())[name][~m] == 0).all()
    assert "px" in pxprune.METHODS


def test_more_rounds_than_prunable_weights_are_refused_with_the_first_rounds():
    with pytest.raises(PruningError) as info:  # 42 prunable weights: round 43 would be empty
        pxprune.prune(net(), "synflow", 0.5, torch.randn(3, 4), rounds=43)
    message = str(info.value)
    assert "rounds 43 is more than the 42 prunable weights" in message
    assert "at least 22 rounds would prune no weight" in message  # 21 weights go in 43 rounds
    assert "first rounds would keep 41, 41, 40 weights, 42 -> 21 in all" in message
    assert len(message.splitlines()) == 1
    with pytest.raises(PruningError, match="rounds 100,000,000 is more than the 42"):
        pxprune.prune(net(), "synflow", 0.5, torch.randn(3, 4), rounds=100_000_000)  # at once
    masks = pxprune.prune(net(), "synflow", 0.5, torch.randn(3, 4), rounds=42)  # allowed
    assert masks.kept == 21


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_a_seed_outside_64_bits_is_refused(seed):
    with pytest.raises(PruningError, match=r"seed must be in \[0, 2\*\*64\)"):
        pxprune.prune(net(), "random", 0.5, seed=seed)
    assert pxprune.prune(net(), "random", 0.5, seed=2**64 - 1).kept == 21
