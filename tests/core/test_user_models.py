"""Scoring and pruning the models users write: ``x.view`` flattening, several outputs, wrapped
models (torch.compile, DataParallel), bad data given to the API, activations GraSP cannot
differentiate twice, tied weights. PyTorch's default init throughout (not pxprune's)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pxprune
from pxprune.errors import PxpruneError


class Block(nn.Module):
    """The classic CIFAR basic block (kuangliu style), 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ViewResNet(nn.Module):
    """A small CIFAR ResNet (16x16 images) that flattens a 2x2 map with ``out.view(n, -1)``."""

    def __init__(self, flatten: str = "view"):
        super().__init__()
        self.flatten = flatten
        self.conv = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layers = nn.Sequential(Block(8, 8), Block(8, 16, 2))
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        out = self.layers(F.relu(self.bn(self.conv(x))))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1) if self.flatten == "view" else out.reshape(len(out), -1)
        return self.fc(out)


class TwoHeads(nn.Module):
    """Logits plus an auxiliary head, returned as a tuple, a dict or the logits alone."""

    def __init__(self, returns: str):
        super().__init__()
        self.returns = returns
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 10)
        self.aux = nn.Linear(8, 10)

    def forward(self, x):
        h = self.features(x)
        logits, aux = self.fc(h), self.aux(h)
        if self.returns == "tuple":
            return logits, aux
        if self.returns == "dict":
            return {"aux": aux, "logits": logits}
        return logits + 0 * aux  # the aux head in the graph, as in the others


class SqueezeExcite(nn.Module):
    """MobileNetV3-style: Hardswish, a squeeze-excite gate with Hardsigmoid (or the same gate
    written by hand, ``clamp(x + 3, 0, 6) / 6``)."""

    def __init__(self, by_hand: bool = False):
        super().__init__()
        self.by_hand = by_hand
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.Hardswish()
        self.se1, self.se2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.gate = nn.Hardsigmoid()
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        s = self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(h, 1))))
        h = h * ((s + 3).clamp(0, 6) / 6 if self.by_hand else self.gate(s))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def _data(n: int = 20, seed: int = 0, size: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 10


def _twin(model: nn.Module, other: nn.Module) -> nn.Module:
    other.load_state_dict(model.state_dict())
    return other


def _close(a: dict, b: dict, rtol: float = 1e-5) -> None:
    assert list(a) == list(b)
    for name in a:
        scale = float(b[name].abs().max()) or 1.0
        assert float((a[name] - b[name]).abs().max()) <= rtol * scale, name


# -- x.view flattening ---------------------------------------------------------------------

def test_px_scores_a_view_flatten_model_as_its_reshape_twin_and_in_float64():
    torch.manual_seed(0)
    user = ViewResNet("view")
    twin = _twin(user, ViewResNet("reshape"))  # runs channels-last inside PX
    x, y = _data()
    got = pxprune.score(user, "px", (x, y))
    _close(got, pxprune.score(twin, "px", (x, y)))
    _close(got, pxprune.score(user, "px", (x, y), precision="float64"), rtol=1e-4)
    assert sum(float(s.sum()) for s in got.values()) > 0
    assert all(s.is_contiguous() for s in got.values())


def test_px_prunes_a_view_flatten_model_like_its_twin():
    torch.manual_seed(1)
    user = ViewResNet("view")
    twin = _twin(user, ViewResNet("reshape"))
    x, y = _data()
    masks = pxprune.prune(user, "px", 0.9, (x, y), rounds=3, progress=False)
    same = pxprune.prune(twin, "px", 0.9, (x, y), rounds=3, progress=False)
    assert masks.kept == same.kept == round(0.1 * masks.total)
    agree = sum(int((masks[n] == same[n]).sum()) for n in masks) / masks.total
    assert agree > 0.999  # float rounding may swap a tie at the cut, no more


# -- several outputs -------------------------------------------------------------------------

DATA_METHODS = ["px", "snip", "grasp", "synflow", "ntksap", "px[variant=bound]"]


@pytest.mark.parametrize("method", DATA_METHODS)
@pytest.mark.parametrize("returns,output", [("tuple", 0), ("dict", "logits")])
def test_output_option_picks_the_logits(method, returns, output):
    torch.manual_seed(2)
    plain = TwoHeads("logits")
    user = _twin(plain, TwoHeads(returns))
    x, y = _data()
    with pytest.raises(PxpruneError, match="output="):
        pxprune.score(user, method, (x, y))
    _close(pxprune.score(user, method, (x, y), output=output),
           pxprune.score(plain, method, (x, y)))


def test_output_option_errors_are_one_line():
    x, y = _data()
    with pytest.raises(PxpruneError, match=r"output='nope' is not among.*keys \['aux', 'logits'\]"):
        pxprune.score(TwoHeads("dict"), "snip", (x, y), output="nope")
    with pytest.raises(PxpruneError, match="output=5 is not among"):
        pxprune.prune(TwoHeads("tuple"), "snip", 0.5, (x, y), output=5)
    with pytest.raises(PxpruneError, match="output must be an index"):
        pxprune.score(TwoHeads("tuple"), "snip", (x, y), output=0.5)


# -- wrapped models ----------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", ["compile", "dataparallel"])
@pytest.mark.parametrize("method", ["px", "synflow", "snip", "grasp"])
def test_wrapped_models_are_scored_through_the_module_they_wrap(wrap, method):
    torch.manual_seed(3)
    plain = ViewResNet()
    wrapped = torch.compile(plain) if wrap == "compile" else nn.DataParallel(plain)
    prefix = "_orig_mod." if wrap == "compile" else "module."
    x, y = _data()
    got = pxprune.score(wrapped, method, (x, y))
    want = pxprune.score(plain, method, (x, y))
    _close({n.removeprefix(prefix): s for n, s in got.items()}, want)
    assert all(n.startswith(prefix) for n in got)


def test_prune_of_a_wrapped_model_returns_masks_for_the_wrapper():
    torch.manual_seed(4)
    plain = ViewResNet()
    wrapped = nn.DataParallel(plain)
    x, y = _data()
    masks = pxprune.prune(wrapped, "snip", 0.8, (x, y))
    assert all(n.startswith("module.") for n in masks)
    masks.apply_(wrapped)  # names match the wrapper's parameters
    assert masks.kept == round(0.2 * masks.total)
    assert int((plain.conv.weight != 0).sum()) == int(masks["module.conv.weight"].sum())


# -- the command line's data checks, in the API --------------------------------------------

def _bad_inputs():
    x, y = _data()
    return {
        "uint8 images": ((x * 40).clamp(0, 255).to(torch.uint8), y, "floating point"),
        "grey images": (x[:, :1], y, "1 channel"),
        "small images": (x[:, :, :8, :8], y, "cannot take these images"),
        "labels out of range": (x, y + 3, "labels go up to 12 but the model has 10 outputs"),
        "negative labels": (x, y - 1, ">= 0"),
        "float labels": (x, y.float(), "must be integers"),
        "bool labels": (x, y > 4, "must be integers"),
        "one-hot labels": (x, F.one_hot(y, 10), "1-D"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
@pytest.mark.parametrize("entry", ["score", "prune"])
def test_api_refuses_what_the_command_line_refuses(case, entry):
    x, y, message = _bad_inputs()[case]
    model = ViewResNet("reshape")
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(PxpruneError, match=message):
        if entry == "score":
            pxprune.score(model, "snip", (x, y))
        else:
            pxprune.prune(model, "snip", 0.9, (x, y))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_int32_labels_score_as_int64():
    torch.manual_seed(5)
    model = SqueezeExcite()
    x, y = _data()
    _close(pxprune.score(model, "snip", (x, y.int())), pxprune.score(model, "snip", (x, y)))


def test_a_batch_of_one_through_batchnorm1d_is_refused_in_one_line():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 20), nn.BatchNorm1d(20),
                          nn.ReLU(), nn.Linear(20, 10))
    x, y = _data(n=1)
    with pytest.raises(PxpruneError, match="batch of one example cannot pass BatchNorm1d"):
        pxprune.score(model, "snip", (x, y))


# -- GraSP's double backward, float16, tied weights ----------------------------------------------

def test_grasp_on_hardsigmoid_equals_the_gate_written_by_hand():
    torch.manual_seed(6)
    user = SqueezeExcite()
    by_hand = _twin(user, SqueezeExcite(by_hand=True))
    x, y = _data()
    got = pxprune.score(user, "grasp", (x, y))
    _close(got, pxprune.score(by_hand, "grasp", (x, y)))
    assert float(got["se1.weight"].max()) > 0  # the gate's weights are ranked, not all zero


def test_grasp_on_a_float16_model_is_refused_not_all_zero():
    torch.manual_seed(7)
    model = SqueezeExcite().half()
    x, y = _data()
    with pytest.raises(PxpruneError, match="same score"):
        pxprune.score(model, "grasp", (x.half(), y))


def test_tied_weights_are_named():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 10))
    model[2].weight = model[0].weight
    with pytest.raises(PxpruneError, match=r"tied weights: '2.weight' is the same tensor as "
                                           r"'0.weight'"):
        pxprune.score(model, "magnitude")
