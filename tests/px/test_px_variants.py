"""PX variants: the default (the authors' April-2024 scoring, ``variant="cvpr2024"``) against
hand computations, and how it relates to ``variant="bound"``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pxprune
from pxprune.masks import Masks, PruningError
from pxprune.methods.px import PXNumericsError
from pxprune.methods.px.bound import px_terms

F64 = torch.float64


class MLP(nn.Module):
    """Linear(+bias) -> ReLU -> Linear(+bias); ``act=False`` drops the ReLU (the no-act copy)."""

    def __init__(self, act: bool = True):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(5, 4), nn.Linear(4, 3), act

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(F.relu(h) if self.act else h)


class TinyResCNN(nn.Module):
    """conv-BN-ReLU, a residual conv-BN branch, global average pool, linear classifier."""

    def __init__(self, act: bool = True):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 4)
        self.act = act

    def relu(self, x):
        return torch.relu(x) if self.act else x

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)) + h)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def _init_bn(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BatchNorm gamma/beta and running statistics (at init they are 1/0)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g, dtype=F64))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g, dtype=F64))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g,
                                                       dtype=F64))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g,
                                                     dtype=F64))


def _masks(model: nn.Module, seed: int = 2) -> Masks:
    """Random masks keeping about 70 % of every prunable weight."""
    g = torch.Generator().manual_seed(seed)
    masks = Masks.ones(model)
    return Masks({n: torch.rand(m.shape, generator=g) < 0.7 for n, m in masks.items()})


def hand_cvpr2024(model_cls, model: nn.Module, xs, masks: Masks) -> dict:
    """The 2024 code's recipe written out with copies of the model (no interception);
    ``xs`` is a batch or a list of batches (``R`` summed over them)."""
    weights = {n: p.detach() * masks[n].to(F64) for n, p in model.named_parameters()
               if n in masks}
    jvf = copy.deepcopy(model).train()  # copy 1: real masked weights, batch-statistics BN
    pk = model_cls(act=False).to(F64).train()  # copy 2: no activations, squared weights+biases
    pk.load_state_dict(model.state_dict())
    with torch.no_grad():
        for n, p in jvf.named_parameters():
            if n in weights:
                p.copy_(weights[n])
        for n, p in pk.named_parameters():
            if n in weights:
                p.copy_(weights[n] ** 2)
            elif n.endswith(".bias") and not n.startswith("bn"):
                p.copy_(p ** 2)
    for x in xs if isinstance(xs, list) else [xs]:
        with torch.no_grad():
            z1 = jvf(x)
        (z1 * pk(x)).sum().backward()
    params = dict(pk.named_parameters())
    return {n: (params[n].grad * params[n].detach() * w * w ** 2).abs()
            for n, w in weights.items()}


def mlp_closed_form(model: MLP, xs: torch.Tensor) -> dict:
    """Unmasked MLP: ``dR/dW2^2 = z1^T h2``, ``dR/dW1^2 = (z1 W2^2)^T x``; score g |W|^5."""
    w1, b1, w2 = model.fc1.weight.detach(), model.fc1.bias.detach(), model.fc2.weight.detach()
    with torch.no_grad():
        z1 = model(xs)
        h2 = xs @ (w1 ** 2).T + b1 ** 2
        g2 = z1.T @ h2
        g1 = (z1 @ w2 ** 2).T @ xs
    return {"fc1.weight": g1.abs() * w1.abs() ** 5, "fc2.weight": g2.abs() * w2.abs() ** 5}


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP().to(F64)


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    model = TinyResCNN().to(F64)
    _init_bn(model)
    return model


def test_cvpr2024_matches_closed_form_on_mlp(mlp):
    xs = torch.randn(6, 5, dtype=F64)
    got = pxprune.score(mlp, "px", xs, variant="cvpr2024", precision="float64")
    want = mlp_closed_form(mlp, xs)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=0)


def test_cvpr2024_matches_hand_copies_on_mlp_with_masks(mlp):
    xs = torch.randn(6, 5, dtype=F64)
    masks = _masks(mlp)
    got = pxprune.score(mlp, "px", xs, masks=masks, variant="cvpr2024", precision="float64")
    want = hand_cvpr2024(MLP, mlp, xs, masks)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-300)
        assert (got[name][~masks[name]] == 0).all()  # pruned weights score 0


def test_cvpr2024_matches_hand_copies_on_bn_cnn(cnn):
    xs = torch.randn(5, 2, 6, 6, dtype=F64)
    masks = _masks(cnn)
    got = pxprune.score(cnn, "px", (xs, torch.zeros(5).long()), masks=masks,
                        variant="cvpr2024", precision="float64")
    want = hand_cvpr2024(TinyResCNN, cnn, xs, masks)
    assert set(got) == set(want) == {"conv1.weight", "conv2.weight", "fc.weight"}
    for name in want:
        assert want[name].max() > 0
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-300)


def test_cvpr2024_sums_R_over_batches_each_with_its_own_statistics(cnn):
    xs = torch.randn(8, 2, 6, 6, dtype=F64)
    masks = _masks(cnn, seed=3)
    got = pxprune.score(cnn, "px", [xs[:5], xs[5:]], masks=masks, variant="cvpr2024",
                        precision="float64")
    want = hand_cvpr2024(TinyResCNN, cnn, [xs[:5], xs[5:]], masks)
    one_batch = pxprune.score(cnn, "px", xs, masks=masks, variant="cvpr2024",
                              precision="float64")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-300)
    assert not torch.allclose(got["conv1.weight"], one_batch["conv1.weight"])


def test_bound_differs_from_default(cnn):
    xs = torch.randn(6, 2, 6, 6, dtype=F64)
    bound = pxprune.score(cnn, "px", xs, variant="bound", precision="float64")
    cvpr = pxprune.score(cnn, "px", xs, precision="float64")
    flat_p = torch.cat([bound[n].flatten() for n in sorted(bound)])
    flat_c = torch.cat([cvpr[n].flatten() for n in sorted(cvpr)])
    assert not torch.allclose(flat_p / flat_p.sum(), flat_c / flat_c.sum(), rtol=1e-3)
    k = flat_p.numel() // 3
    assert set(flat_p.topk(k).indices.tolist()) != set(flat_c.topk(k).indices.tolist())


def test_default_is_cvpr2024_and_bound_is_px_terms(cnn):
    """No variant = "cvpr2024"; "bound" = the DESIGN §3.2 shares |theta dR/dtheta| that
    px_terms computes (pinned by the brute-force path tests in test_px_bruteforce.py)."""
    xs = torch.randn(6, 2, 6, 6, dtype=F64)
    default = pxprune.score(cnn, "px", xs, precision="float64")
    cvpr = pxprune.score(cnn, "px", xs, variant="cvpr2024", precision="float64")
    spec = pxprune.score(cnn, "px[variant=cvpr2024,precision=float64]", xs)
    bound = pxprune.score(cnn, "px", xs, variant="bound", precision="float64")
    _, shares = px_terms(cnn, [(xs, None)], Masks.ones(cnn), precision="float64")
    for name in default:
        assert torch.equal(default[name], cvpr[name])
        assert torch.equal(default[name], spec[name])
        assert torch.equal(bound[name], shares[name].abs())


def test_unknown_variant_and_bad_options_are_refused(cnn):
    xs = torch.randn(4, 2, 6, 6, dtype=F64)
    with pytest.raises(PruningError, match="unknown PX variant 'cvpr2025'"):
        pxprune.score(cnn, "px", xs, variant="cvpr2025")
    with pytest.raises(PruningError, match="takes no classifier option"):
        pxprune.score(cnn, "px", xs, variant="cvpr2024", classifier="ones")
    with pytest.raises(PruningError, match="takes no bn option"):
        pxprune.score(cnn, "px", xs, bn="batch")
    with pytest.raises(PruningError, match="unknown PX variant 'paper'"):
        pxprune.score(cnn, "px", xs, variant="paper")
    with pytest.raises(PruningError, match="precision"):
        pxprune.score(cnn, "px", xs, variant="cvpr2024", precision="float16")


@pytest.mark.parametrize("xs", [torch.ones(4, 2, 6, 6, dtype=F64),
                                torch.randn(1, 2, 6, 6, dtype=F64)])
def test_cvpr2024_refuses_batches_that_give_rounding_noise(cnn, xs):
    """Batch-statistics BN on identical inputs (or one input) zeroes the pooled features."""
    with pytest.raises(PXNumericsError, match="two different examples"):
        pxprune.score(cnn, "px", xs, variant="cvpr2024")


def test_cvpr2024_single_example_fine_without_batchnorm(mlp):
    s = pxprune.score(mlp, "px", torch.randn(1, 5, dtype=F64), variant="cvpr2024")
    assert all(v.max() > 0 for v in s.values())


def test_cvpr2024_all_zero_scores_raise(mlp):
    with pytest.raises(PXNumericsError, match="every score is zero"):
        pxprune.score(mlp, "px", torch.zeros(3, 5, dtype=F64), variant="cvpr2024",
                      masks=Masks({n: torch.zeros_like(m) for n, m in Masks.ones(mlp).items()}))


def test_cvpr2024_leaves_model_untouched(cnn):
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    cnn.train()
    pxprune.score(cnn, "px", torch.randn(4, 2, 6, 6, dtype=F64), variant="cvpr2024")
    assert cnn.training
    for k, v in cnn.state_dict().items():
        assert torch.equal(v, state[k]), k  # running statistics were not updated


def test_cvpr2024_float32_ranks_like_float64():
    torch.manual_seed(0)
    model = TinyResCNN()
    _init_bn(model)
    xs = torch.randn(8, 2, 6, 6)
    s32 = pxprune.score(model, "px", xs, variant="cvpr2024")
    s64 = pxprune.score(model, "px", xs, variant="cvpr2024", precision="float64")
    for name in s32:
        torch.testing.assert_close(s32[name], s64[name], rtol=1e-3, atol=1e-6 * s64[name].max())


def test_prune_and_spec_pass_the_variant(cnn):
    xs = torch.randn(6, 2, 6, 6, dtype=F64)
    m1 = pxprune.prune(copy.deepcopy(cnn), "px", 0.5, xs, rounds=3, variant="bound",
                       progress=False)
    m0 = pxprune.prune(copy.deepcopy(cnn), "px", 0.5, xs, rounds=3, progress=False)
    m2 = pxprune.prune(copy.deepcopy(cnn), "px[variant=bound]", 0.5, xs, rounds=3,
                       progress=False)
    assert abs(m1.density() - 0.5) < 0.01
    assert any(not torch.equal(m1[n], m0[n]) for n in m1)
    assert all(torch.equal(m1[n], m2[n]) for n in m1)
