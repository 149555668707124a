"""PX on ResNet-20 at init: the facts of DESIGN §3 and float32/float64 agreement."""

from __future__ import annotations

import warnings

import pytest
import torch

import pxprune
from pxprune import models
from pxprune.methods.px.bound import (
    PXPrecisionFallback,
    _copy_weights,
    find_classifier,
    path_activation_sum,
    px_terms,
)
from pxprune.pathview import PathKernelCopy


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return models.get("resnet20").eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randn(20, 3, 32, 32, generator=g)


def test_classifier_is_found_by_call_order(resnet20, images):
    assert find_classifier(resnet20, images) == "fc.weight"


def test_all_ones_classifier_makes_every_class_weight_equal(resnet20, images):
    """With an all-ones classifier Z1_k is the same for every k: PX would be data-free."""
    masks = pxprune.Masks.ones(resnet20)
    weights = pxprune.pathview.weighted_modules(resnet20)
    ones_c1, _, _ = _copy_weights(weights, masks, "fc.weight", False, "cpu")
    real_c1, _, _ = _copy_weights(weights, masks, "fc.weight", True, "cpu")
    z_ones = path_activation_sum(resnet20, [(images, None)], ones_c1, "float64", False)
    z_real = path_activation_sum(resnet20, [(images, None)], real_c1, "float64", False)
    assert torch.allclose(z_ones, z_ones[0].expand_as(z_ones), rtol=1e-12)
    assert z_ones[0] > 1e30  # the fan_in**depth growth that forces float64
    spread = (z_real.max() - z_real.min()) / z_real.abs().max()
    assert spread > 0.05  # the real classifier makes the class weights differ


def test_cut_layers_sum_to_R(resnet20, images):
    """The stem conv and the classifier are cuts of ResNet-20: their shares sum to R."""
    r, shares = px_terms(resnet20, [(images, None)], pxprune.Masks.ones(resnet20),
                         precision="float64")
    assert shares["conv1.weight"].sum().item() == pytest.approx(r.item(), rel=1e-9)
    assert shares["fc.weight"].sum().item() == pytest.approx(r.item(), rel=1e-9)


def test_signs_of_the_shares(resnet20, images):
    """All-ones classifier: every share >= 0. Real classifier: sum_k Z1_k z2_k mixes signs of the
    classifier rows, so layers next to it can have negative shares; ``score`` takes |.|."""
    _, ones = px_terms(resnet20, [(images, None)], pxprune.Masks.ones(resnet20), classifier="ones",
                        precision="float64")
    assert all((s >= 0).all() for s in ones.values())
    _, real = px_terms(resnet20, [(images, None)], pxprune.Masks.ones(resnet20),
                       precision="float64")
    assert (real["conv1.weight"] >= 0).all() and (real["layer1.0.conv1.weight"] >= 0).all()
    assert (real["fc.weight"] < 0).any()
    scores = pxprune.score(resnet20, "px[variant=bound]", images, precision="float64")
    assert torch.equal(scores["fc.weight"], real["fc.weight"].abs())


class _TrainModeBN(PathKernelCopy):
    """The official code's copy 2: BatchNorm with batch statistics (no running-stat update)."""

    def on_batchnorm(self, call):
        x = call.input
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5)


def test_train_mode_copy_two_has_zero_gradient(resnet20, images):
    """With an all-ones input, batch-statistics BN zeroes every path: scores are rounding noise."""
    masks = pxprune.Masks.ones(resnet20)
    weights = pxprune.pathview.weighted_modules(resnet20)
    c1, c2, leaves = _copy_weights(weights, masks, "fc.weight", True, "cpu")
    z1 = path_activation_sum(resnet20, [(images, None)], c1, "float64", False)
    ones = torch.ones(2, 3, 32, 32, dtype=torch.float64)
    with _TrainModeBN(resnet20, c2):
        z2 = resnet20(ones)
    r = (z1 * z2[0]).sum()
    grads = torch.autograd.grad(r, [leaves[n] for n in leaves if n != "fc.weight"],
                                allow_unused=True)
    official = max(float((g.abs() * z1.abs().max().reciprocal()).max()) for g in grads
                   if g is not None)
    ours = pxprune.score(resnet20, "px[variant=bound]", images)
    ours_max = max(float((s / z1.abs().max()).max()) for n, s in ours.items() if n != "fc.weight")
    assert official < 1e-9 * ours_max


def test_float32_and_float64_models_give_the_same_masks(resnet20, images):
    m32 = resnet20
    m64 = models.get("resnet20").eval()
    m64.load_state_dict(m32.state_dict())
    m64 = m64.double()
    a = pxprune.prune(m32_copy := _clone(m32), "px[variant=bound]", 0.982, images, rounds=5,
                      progress=False)
    b = pxprune.prune(m64, "px[variant=bound]", 0.982, images.double(), rounds=5, progress=False)
    differing = sum(int((a[n] ^ b[n]).sum()) for n in a)
    assert a.kept == b.kept == round(0.018 * a.total)
    assert differing <= 0.001 * a.total
    del m32_copy


def test_float32_copy_ranks_like_float64(resnet20, images):
    """The default (copy 1 in float32, rescaled by a power of two) against all-float64."""
    s64 = pxprune.score(resnet20, "px[variant=bound]", images, precision="float64")
    s32 = pxprune.score(resnet20, "px[variant=bound]", images, precision="float32")
    for n in s64:
        rel = ((s32[n] - s64[n]).abs() / s64[n].abs().max()).max()
        assert rel < 1e-4, n
    flat64 = torch.cat([s.flatten() for s in s64.values()])
    flat32 = torch.cat([s.flatten() for s in s32.values()])
    top = flat64 >= flat64.quantile(0.98)  # the weights a 98 % sparse mask keeps
    assert ((flat32[top] - flat64[top]).abs() / flat64[top]).max() < 1e-5
    m64 = pxprune.schedule.threshold(s64, 0.018, pxprune.Masks.ones(resnet20))
    m32 = pxprune.schedule.threshold(s32, 0.018, pxprune.Masks.ones(resnet20))
    assert m64.overlap(m32) > 0.999


def test_scoring_leaves_model_untouched(resnet20, images):
    state = {k: v.clone() for k, v in resnet20.state_dict().items()}
    resnet20.train()
    pxprune.score(resnet20, "px[variant=bound]", images)
    assert resnet20.training
    resnet20.eval()
    for k, v in resnet20.state_dict().items():
        assert torch.equal(v, state[k]), k


def _clone(model):
    clone = models.get("resnet20")
    clone.load_state_dict(model.state_dict())
    return clone.eval()


@pytest.mark.slow
def test_float32_copies_give_the_float64_masks_over_100_rounds(resnet20, images):
    """Our float32 copy 1 changes no mask over the full schedule. (A float64 *model* can differ
    more, after 100 rounds: its real network flips a few ReLU gates against the float32 one;
    benchmarks/px_dtype_masks.py measures that.)"""
    a = pxprune.prune(_clone(resnet20), "px[variant=bound]", 0.982, images, progress=False)
    b = pxprune.prune(_clone(resnet20), "px[variant=bound]", 0.982, images, progress=False,
                      precision="float64")
    assert sum(int((a[n] ^ b[n]).sum()) for n in a) == 0


def test_resnet20_takes_the_one_scale_float32_path(images, monkeypatch):
    """ResNet-20 fits float32 with one input scale: no fallback, and not the slower rescaled
    copy (ResNet-56 and deeper take that one: tests/test_px_rescaled.py)."""
    import pxprune.methods.px.bound as px

    monkeypatch.setattr(px, "_copy1_rescaled", lambda *a: pytest.fail("rescaled copy used"))
    torch.manual_seed(0)
    shallow = models.get("resnet20").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PXPrecisionFallback)
        pxprune.score(shallow, "px[variant=bound]", images[:20])
