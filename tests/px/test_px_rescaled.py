"""PX copy 1 in float32 beyond float32's range: per-layer power-of-two renormalisation.

Copy 1 grows like fan_in**depth (ResNet-56: about 2**370). The rescaled copy divides every
conv/linear output by a power of two and carries the exponent with the tensor, aligning
operands before sums and concatenations. Checked against the float64 copy on ResNet-56 and on a
toy network that uses every operation the alignment handles.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pxprune
from pxprune import models
from pxprune.masks import Masks
from pxprune.methods.px.bound import (
    PXPrecisionFallback,
    _classifier_of,
    _copy1_rescaled,
    _copy_weights,
    record_gates,
)
from pxprune.pathview import PathActivationCopy, RangeError, weighted_modules


class DeepMixer(nn.Module):
    """A bias-free ReLU CNN deep enough to leave float32's range, using residual sums (out of
    place and in place), a concatenation of branches of different depth, a scalar multiple,
    padding, max-pool and a flatten."""

    def __init__(self, width: int = 16, depth: int = 24, constant: float = 0.0):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                          nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, bias=False))
            for _ in range(depth))
        self.deep = nn.Sequential(*(nn.Sequential(nn.Conv2d(width, width, 3, padding=1,
                                                            bias=False), nn.ReLU())
                                    for _ in range(4)))
        self.narrow = nn.Conv2d(2 * width, width // 2, 1, bias=False)
        self.fc = nn.Linear(width // 2 * 4 * 4, 5, bias=False)
        self.constant = constant

    def forward(self, x):
        x = F.relu(self.stem(x))
        for i, block in enumerate(self.blocks):
            if i % 2:
                x = torch.relu(block(x) + x)
            else:
                out = block(x)
                out += x
                x = out.relu_()
        x = F.max_pool2d(x, 2)
        x = torch.cat([self.deep(x), 0.5 * x], dim=1)  # branches at different scales
        x = F.pad(F.relu(self.narrow(x))[:, :, 1:, 1:], (0, 1, 0, 1))
        if self.constant:
            x = x + self.constant  # not homogeneous: the rescaled copy must refuse it
        x = F.adaptive_avg_pool2d(x, 4)
        return self.fc(torch.flatten(x, 1))


def _z1_pair(model, x):
    """Copy 1 of ``model`` on ``x``: rescaled float32 and plain float64."""
    model.eval()
    rec = record_gates(model, x)
    copy1, _, _ = _copy_weights(weighted_modules(model), Masks.ones(model), _classifier_of(rec),
                                True, x.device)
    low = {k: v.float() for k, v in copy1.items()}
    squared = x.double().square()
    with torch.no_grad():
        z32 = _copy1_rescaled(model, low, rec, squared, False)
        with PathActivationCopy(model, copy1, rec):
            z64 = model(squared)
    return z32, z64


def _top_agreement(a: dict, b: dict, fraction: float = 0.02) -> tuple[float, float]:
    """Largest relative difference over b's top weights, and the overlap of both top sets."""
    fa = torch.cat([v.flatten() for v in a.values()])
    fb = torch.cat([v.flatten() for v in b.values()])
    k = max(1, int(fraction * fb.numel()))
    top_b, top_a = fb.topk(k).indices, fa.topk(k).indices
    rel = float(((fa[top_b] - fb[top_b]).abs() / fb[top_b]).max())
    overlap = len(set(top_a.tolist()) & set(top_b.tolist())) / k
    return rel, overlap


@pytest.fixture(scope="module")
def images():
    return torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def test_rescaled_copy_matches_float64_beyond_float32_range(images):
    torch.manual_seed(0)
    model = DeepMixer()
    z32, z64 = _z1_pair(model, images)
    # about 2**340 from input to output: float32 cannot hold it even with one input scale
    assert math.log2(float(z64.abs().max())) > 300
    assert torch.isfinite(z32).all()
    assert float((z32 - z64).abs().max() / z64.abs().max()) < 1e-5


def test_rescaling_is_exact_where_float32_fits():
    """Powers of two change no rounding: on ResNet-20 the rescaled copy equals the plain
    float32 copy with one input scale bit for bit."""
    torch.manual_seed(0)
    model = models.get("resnet20").eval()
    x = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    rec = record_gates(model, x)
    copy1, _, _ = _copy_weights(weighted_modules(model), Masks.ones(model), "fc.weight", True,
                                x.device)
    low = {k: v.float() for k, v in copy1.items()}
    squared = x.double().square()
    scale = 2.0**-66  # brings this network's output near 2**64, inside float32
    with torch.no_grad(), PathActivationCopy(model, low, rec):
        plain = model((squared * scale).float()).double() / scale
    with torch.no_grad():
        rescaled = _copy1_rescaled(model, low, rec, squared, False)
    assert torch.equal(rescaled, plain)


@pytest.mark.parametrize("name", ["resnet56", "resnet56_a"])
def test_deep_resnets_score_in_float32_like_float64(name, images):
    """ResNet-56 (2**370 in copy 1) used to fall back to float64; now it needs no fallback and
    keeps the same top 2 % as float64."""
    torch.manual_seed(0)
    deep = models.get(name).eval()
    x = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PXPrecisionFallback)
        default = pxprune.score(deep, "px[variant=bound]", x)
    exact = pxprune.score(deep, "px[variant=bound]", x, precision="float64")
    rel, overlap = _top_agreement(default, exact)
    assert rel < 1e-5 and overlap == 1.0
    m32 = pxprune.schedule.threshold(default, 0.018, Masks.ones(deep))
    m64 = pxprune.schedule.threshold(exact, 0.018, Masks.ones(deep))
    assert m32.overlap(m64) > 0.999


def _spy_on_rescaled(monkeypatch) -> list:
    """Record each call of the rescaled copy 1."""
    import pxprune.methods.px.bound as px

    calls, real = [], px._copy1_rescaled
    monkeypatch.setattr(px, "_copy1_rescaled", lambda *a: calls.append(1) or real(*a))
    return calls


def test_scores_of_the_toy_network_agree(images, monkeypatch):
    torch.manual_seed(0)
    model = DeepMixer().eval()
    calls = _spy_on_rescaled(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PXPrecisionFallback)
        default = pxprune.score(model, "px[variant=bound]", images)
    assert calls  # the rescaled copy, not the one-scale float32 copy, produced them
    exact = pxprune.score(model, "px[variant=bound]", images, precision="float64")
    rel, overlap = _top_agreement(default, exact)
    assert rel < 1e-5 and overlap == 1.0


def test_an_operation_it_cannot_align_falls_back_to_float64(images, monkeypatch):
    """A scaled tensor plus a non-zero constant has no exact rescaled form: the rescaled copy
    refuses it, and the default precision warns and returns exactly the float64 scores."""
    torch.manual_seed(0)
    model = DeepMixer(constant=1.0).eval()
    rec = record_gates(model, images)
    copy1, _, _ = _copy_weights(weighted_modules(model), Masks.ones(model), "fc.weight", True,
                                images.device)
    low = {k: v.float() for k, v in copy1.items()}
    with pytest.raises(RangeError, match="adds a constant"), torch.no_grad():
        _copy1_rescaled(model, low, rec, images.double().square(), False)
    with pytest.warns(PXPrecisionFallback):
        default = pxprune.score(model, "px[variant=bound]", images)
    exact = pxprune.score(model, "px[variant=bound]", images, precision="float64")
    for name in exact:
        assert torch.equal(default[name], exact[name]), name


@pytest.mark.parametrize("peak_log2", [120, 3, -20, -130])
def test_renormalising_is_exact_at_the_ends_of_float32(peak_log2):
    """Peaks from near float32's top to its subnormals come back to [0.5, 1) exactly."""
    from pxprune.pathview import RescaledPathActivationCopy, tensor_exponent

    values = torch.tensor([2.0**peak_log2 * 1.5, 2.0 ** (peak_log2 - 3), 0.0], dtype=torch.float32)
    out = RescaledPathActivationCopy._renormalised(values.clone(), 7)
    assert 0.5 <= float(out.max()) < 1.0
    shift = tensor_exponent(out) - 7
    assert torch.equal(torch.ldexp(out.double(), torch.tensor(float(shift))), values.double())
