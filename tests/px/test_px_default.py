"""The default PX (the authors' 2024 scoring) against copies built by hand, on the blocks of
ResNet, EfficientNet / MobileNetV3 and ConvNeXt style networks (DESIGN §3.1)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pxprune
from pxprune.masks import Masks, PruningError
from pxprune.methods.px import PXNumericsError
from pxprune.pathview import UnsupportedLayerError

F64 = torch.float64


class Ops:
    """The operations of one hand-built copy: the real network (``square=False``, BatchNorm with
    batch statistics) or the copy without nonlinearities and with squared weights and biases."""

    def __init__(self, model: nn.Module, square: bool, leaves: dict | None = None,
                 eval_bn: bool = False):
        self.params = dict(model.named_parameters())
        self.square, self.leaves, self.eval_bn = square, leaves or {}, eval_bn
        self.modules = dict(model.named_modules())

    def w(self, name: str) -> torch.Tensor:
        if self.square:
            return self.leaves[name] if name in self.leaves else self.params[name].detach() ** 2
        return self.params[name].detach()

    def b(self, name: str):
        p = self.params.get(name)
        if p is None:
            return None
        return p.detach() ** 2 if self.square else p.detach()

    def conv(self, x, m: str):
        mod = self.modules[m]
        return F.conv2d(x, self.w(f"{m}.weight"), self.b(f"{m}.bias"), mod.stride, mod.padding,
                        mod.dilation, mod.groups)

    def linear(self, x, m: str):
        return F.linear(x, self.w(f"{m}.weight"), self.b(f"{m}.bias"))

    def bn(self, x, m: str):
        mod = self.modules[m]
        if self.eval_bn:
            return F.batch_norm(x, mod.running_mean, mod.running_var, mod.weight, mod.bias,
                                False, 0.0, mod.eps)
        return F.batch_norm(x, None, None, mod.weight.detach(), mod.bias.detach(), True, 0.0,
                            mod.eps)

    def ln(self, x, m: str):
        mod = self.modules[m]
        return F.layer_norm(x, mod.normalized_shape, mod.weight.detach(), mod.bias.detach(),
                            mod.eps)

    def act(self, x, fn):
        return x if self.square else fn(x)


class ResNetStyle(nn.Module):
    """conv-BN-ReLU, max-pool, a block with a 1x1 conv+BN shortcut, average pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.conv2, self.bn2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), \
            nn.BatchNorm2d(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.short, self.short_bn = nn.Conv2d(6, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        h = F.relu(self.bn2(self.conv2(x)))
        h = self.bn3(self.conv3(h))
        x = F.relu(h + self.short_bn(self.short(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    @staticmethod
    def by_hand(o: Ops, x):
        x = F.max_pool2d(o.act(o.bn(o.conv(x, "conv1"), "bn1"), F.relu), 2)
        h = o.act(o.bn(o.conv(x, "conv2"), "bn2"), F.relu)
        h = o.bn(o.conv(h, "conv3"), "bn3")
        x = o.act(h + o.bn(o.conv(x, "short"), "short_bn"), F.relu)
        return o.linear(F.adaptive_avg_pool2d(x, 1).flatten(1), "fc")


class EfficientNetStyle(nn.Module):
    """MBConv: SiLU stem, expand, depthwise conv, squeeze-excite (SiLU, sigmoid), Hardswish,
    projection with a residual, a Hardsigmoid-gated head (MobileNetV3), linear with bias."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.expand, self.expand_bn = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.dw, self.dw_bn = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), \
            nn.BatchNorm2d(16)
        self.se_reduce, self.se_expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.project, self.project_bn = nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.gate = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 5)
        self.silu, self.hswish, self.hsig = nn.SiLU(), nn.Hardswish(), nn.Hardsigmoid()

    def forward(self, x):
        x = self.silu(self.stem_bn(self.stem(x)))
        h = self.silu(self.expand_bn(self.expand(x)))
        h = self.hswish(self.dw_bn(self.dw(h)))
        s = F.adaptive_avg_pool2d(h, 1)
        s = self.se_expand(self.silu(self.se_reduce(s))).sigmoid()
        h = h * s
        x = x + self.project_bn(self.project(h))
        v = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(v * self.hsig(self.gate(v)))

    @staticmethod
    def by_hand(o: Ops, x):
        x = o.act(o.bn(o.conv(x, "stem"), "stem_bn"), F.silu)
        h = o.act(o.bn(o.conv(x, "expand"), "expand_bn"), F.silu)
        h = o.act(o.bn(o.conv(h, "dw"), "dw_bn"), F.hardswish)
        s = F.adaptive_avg_pool2d(h, 1)
        s = o.act(o.conv(o.act(o.conv(s, "se_reduce"), F.silu), "se_expand"), torch.sigmoid)
        h = h * s
        x = x + o.bn(o.conv(h, "project"), "project_bn")
        v = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return o.linear(v * o.act(o.linear(v, "gate"), F.hardsigmoid), "fc")


class ConvNeXtStyle(nn.Module):
    """Patchify stem + LayerNorm, a ConvNeXt block (depthwise 7x7, LayerNorm, Linear, GELU,
    Linear, layer scale, residual), pooled LayerNorm head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.stem_norm = nn.LayerNorm(8)
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8)
        self.pw1, self.pw2 = nn.Linear(8, 32), nn.Linear(32, 8)
        self.gamma = nn.Parameter(torch.full((8,), 0.5))
        self.head_norm, self.fc = nn.LayerNorm(8), nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.pw2(F.gelu(self.pw1(self.norm(h)))) * self.gamma
        x = x + h.permute(0, 3, 1, 2)
        return self.fc(self.head_norm(x.mean((2, 3))))

    @staticmethod
    def by_hand(o: Ops, x):
        x = o.ln(o.conv(x, "stem").permute(0, 2, 3, 1), "stem_norm").permute(0, 3, 1, 2)
        h = o.conv(x, "dw").permute(0, 2, 3, 1)
        h = o.linear(o.act(o.linear(o.ln(h, "norm"), "pw1"), F.gelu), "pw2")
        h = h * o.params["gamma"].detach()
        x = x + h.permute(0, 3, 1, 2)
        return o.linear(o.ln(x.mean((2, 3)), "head_norm"), "fc")


def _randomise(model: nn.Module) -> nn.Module:
    """float64, with BatchNorm / LayerNorm affine parameters and running statistics not at
    their defaults, so that a wrong treatment of any of them shows."""
    torch.manual_seed(0)
    model = model.double()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def by_hand_scores(model: nn.Module, x: torch.Tensor, masks: Masks | None = None) -> dict:
    """The 2024 scoring written out: R = sum z1 . z2, score |dR/d(theta^2)| |theta|^5."""
    model = copy.deepcopy(model)
    masks = masks or Masks.ones(model)
    masks.apply_(model)
    prunable = {n: p for n, p in model.named_parameters() if n in masks}
    leaves = {n: (p.detach() ** 2).requires_grad_(True) for n, p in prunable.items()}
    with torch.no_grad():
        z1 = type(model).by_hand(Ops(model, square=False), x)
    z2 = type(model).by_hand(Ops(model, square=True, leaves=leaves), x)
    grads = torch.autograd.grad((z1 * z2).sum(), list(leaves.values()))
    return {n: g.abs() * prunable[n].detach().abs() ** 5 for n, g in zip(leaves, grads,
                                                                          strict=True)}


ARCHITECTURES = [ResNetStyle, EfficientNetStyle, ConvNeXtStyle]


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.__name__)
def test_hand_built_copy_replicates_the_model(arch):
    """The hand-built copy with real ops and eval BatchNorm is the model itself."""
    model = _randomise(arch())
    x = torch.randn(6, 3, 16, 16, dtype=F64)
    with torch.no_grad():
        want = model(x)
        got = arch.by_hand(Ops(model, square=False, eval_bn=True), x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.__name__)
def test_default_equals_hand_built_copies(arch):
    model = _randomise(arch())
    x = torch.randn(6, 3, 16, 16, dtype=F64)
    masks = Masks({n: torch.rand_like(m, dtype=F64) > 0.3 for n, m in Masks.ones(model).items()})
    want = by_hand_scores(model, x, masks)
    got = pxprune.score(model, "px", x, masks=masks, precision="float64")
    assert set(got) == set(want)
    for name in want:
        assert want[name].max() > 0, name
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12 * want[
            name].max())
        assert (got[name][~masks[name]] == 0).all()


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.__name__)
def test_default_float32_keeps_the_float64_top_two_percent(arch):
    torch.manual_seed(0)  # the init and data no longer depend on the tests that ran before
    model = _randomise(arch())
    x = torch.randn(16, 3, 16, 16, dtype=F64)
    s64 = pxprune.score(model, "px", x, precision="float64")
    s32 = pxprune.score(model.float(), "px", x.float())
    flat64 = torch.cat([s64[n].flatten() for n in sorted(s64)])
    flat32 = torch.cat([s32[n].flatten() for n in sorted(s32)])
    k = max(1, flat64.numel() // 50)
    top64, top32 = set(flat64.topk(k).indices.tolist()), set(flat32.topk(k).indices.tolist())
    assert len(top64 ^ top32) <= 2  # at most a tie-level swap at the boundary
    torch.testing.assert_close(flat32, flat64, rtol=1e-3, atol=1e-5 * flat64.max())


@pytest.mark.parametrize("seed", [1, 4])
def test_default_float32_is_stable_across_calls_and_threads(seed):
    """Channels-last copies on a 2-thread CPU gave 3e-7 in some calls and 2e-2 of the largest
    score in others, for these two inits; every call must now equal float64 to rounding."""
    torch.manual_seed(seed)
    model = _randomise(ResNetStyle())
    x = torch.randn(16, 3, 16, 16, dtype=F64)
    s64 = pxprune.score(model, "px", x, precision="float64")
    flat64 = torch.cat([s64[n].flatten() for n in sorted(s64)])
    model.float()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runs = [pxprune.score(model, "px", x.float()) for _ in range(6)]
    finally:
        torch.set_num_threads(threads)
    for s32 in runs:
        flat32 = torch.cat([s32[n].flatten() for n in sorted(s32)])
        torch.testing.assert_close(flat32, flat64, rtol=1e-4, atol=1e-6 * flat64.max())


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_single_distinct_example_is_one_clear_error_and_model_unchanged():
    model = _randomise(ResNetStyle())
    before = _state(model)
    x = torch.randn(1, 3, 16, 16, dtype=F64).repeat(4, 1, 1, 1)
    with pytest.raises(PXNumericsError, match="at least two different examples"):
        pxprune.prune(model, "px", 0.5, x, rounds=2, progress=False)
    assert _unchanged(model, before)


def test_linear_model_is_one_clear_error():
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3))
    before = _state(model)
    with pytest.raises(PruningError, match="needs a network with a nonlinearity or a "
                                           "normalisation layer"):
        pxprune.score(model, "px", torch.randn(5, 4))
    assert _unchanged(model, before)


class WithAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.embed(x))
        return self.fc(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_attention_is_refused_naming_the_module():
    model = WithAttention()
    before = _state(model)
    with pytest.raises(UnsupportedLayerError, match=r"attention .* in module attn "
                                                    r"\(MultiheadAttention\)"):
        pxprune.score(model, "px", torch.randn(5, 6, 4))
    assert _unchanged(model, before)
    with pytest.raises(UnsupportedLayerError, match="attn"):
        pxprune.prune(model, "px", 0.5, torch.randn(5, 6, 4), rounds=1, progress=False)
    assert _unchanged(model, before)


def test_bn_batch_equals_bn_running_when_running_statistics_are_the_batch_statistics():
    """``bn="batch"`` takes BatchNorm's scales and the gates from a batch-statistics forward;
    with running statistics set to exactly those batch statistics, it equals ``bn="running"``."""
    model = _randomise(ResNetStyle())
    x = torch.randn(8, 3, 16, 16, dtype=F64)
    # momentum 1: one train-mode forward stores each BatchNorm's batch mean and (unbiased)
    # variance, layer after layer; normalisation uses the biased one, so rescale it
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.train()
    for m in bns:
        m.momentum = 1.0
    with torch.no_grad():
        model(x)
    sizes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: sizes.__setitem__(
        mod, i[0].numel() // i[0].shape[1])) for m in bns]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for m in bns:
        n = sizes[m]
        m.running_var.mul_((n - 1) / n)
    running = pxprune.score(model, "px[variant=bound,bn=running]", x, precision="float64")
    batch = pxprune.score(model, "px[variant=bound,bn=batch]", x, precision="float64")
    for name in running:
        torch.testing.assert_close(batch[name], running[name], rtol=1e-9, atol=0.0)
    # and it is a different score when they are not (the running statistics at init)
    fresh = _randomise(ResNetStyle())
    a = pxprune.score(fresh, "px[variant=bound,bn=running]", x, precision="float64")
    b = pxprune.score(fresh, "px[variant=bound,bn=batch]", x, precision="float64")
    assert any(not torch.allclose(a[n], b[n], rtol=1e-3) for n in a)


def test_bn_batch_leaves_running_statistics_untouched():
    model = _randomise(ResNetStyle())
    before = _state(model)
    pxprune.prune(model, "px[variant=bound,bn=batch]", 0.5, torch.randn(6, 3, 16, 16,
                                                                        dtype=F64),
                  rounds=2, progress=False)
    after = model.state_dict()
    for k, v in before.items():
        if "running" in k or "num_batches" in k:
            assert torch.equal(after[k], v), k


def test_bn_batch_pools_variances_over_batches():
    """Two batches: the scales use the size-weighted mean of the two batch variances, so the
    result differs from either batch alone and does not depend on the batch order."""
    model = _randomise(ResNetStyle())
    x = torch.randn(10, 3, 16, 16, dtype=F64)
    split = pxprune.score(model, "px[variant=bound,bn=batch]", [x[:4], x[4:]],
                          precision="float64")
    swapped = pxprune.score(model, "px[variant=bound,bn=batch]", [x[4:], x[:4]],
                            precision="float64")
    for name in split:
        torch.testing.assert_close(split[name], swapped[name], rtol=1e-9, atol=0.0)


def test_spec_options_are_checked_like_keywords():
    model = _randomise(ResNetStyle())
    x = torch.randn(4, 3, 16, 16, dtype=F64)
    with pytest.raises(PruningError, match="px has no option colour"):
        pxprune.score(model, "px", x, colour=1)
    with pytest.raises(PruningError, match="'px\\[colour=1\\]': px has no option colour"):
        pxprune.score(model, "px[colour=1]", x)
    with pytest.raises(PruningError, match="given both in the spec and as a keyword"):
        pxprune.score(model, "px[variant=bound]", x, variant="cvpr2024")
    with pytest.raises(PruningError, match="rounds"):
        pxprune.score(model, "px[rounds=3]", x)  # a schedule option: prune's, not score's
    with pytest.raises(PruningError, match="unknown method 'pxx'"):
        pxprune.prune(model, "pxx[variant=bound]", 0.5, x)
    masks = pxprune.prune(copy.deepcopy(model), "px[rounds=2,variant=bound]", 0.5, x,
                          progress=False)
    same = pxprune.prune(copy.deepcopy(model), "px", 0.5, x, rounds=2, variant="bound",
                         progress=False)
    assert all(torch.equal(masks[n], same[n]) for n in masks)


def test_attention_weights_left_whole_are_listed_in_the_layer_table():
    """in_proj_weight is not a Conv/Linear weight: no method prunes it, and the per-layer table
    lists it as not pruned instead of silently leaving it out of the counts."""
    from pxprune.analysis.layers import format_layer_table, layer_rows
    from pxprune.masks import unpruned_matrices

    model = WithAttention()
    masks = pxprune.prune(model, "magnitude", 0.5, progress=False)
    assert "attn.in_proj_weight" not in masks and "attn.out_proj.weight" in masks
    unpruned = unpruned_matrices(model, masks)
    assert unpruned == {"attn.in_proj_weight": (24, 8)}
    table = format_layer_table(masks, None, unpruned)
    row = next(line for line in table.splitlines() if line.startswith("attn.in_proj_weight"))
    assert "24x8" in row and "192" in row and "NOT PRUNED" in row
    whole = 24 * 8
    want = (masks.kept + whole) / (masks.total + whole)
    assert f"density over all weights {want:.4f}" in table
    assert len(layer_rows(masks)) == len(masks)  # the masked rows are unchanged


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.__name__)
def test_float32_copies_of_a_float64_model(arch):
    """The copies run in the precision asked for, whatever the model's dtype (a float64 layer
    scale must not promote copy activations and break the float32 convolutions)."""
    model = _randomise(arch())
    x = torch.randn(4, 3, 16, 16, dtype=F64)
    s32 = pxprune.score(model, "px", x)
    s64 = pxprune.score(model, "px", x, precision="float64")
    for name in s64:
        torch.testing.assert_close(s32[name], s64[name], rtol=0, atol=1e-4 * s64[name].max())


def test_default_float32_keeps_the_float64_weights_on_a_deep_net_without_normalisation():
    """Without BatchNorm nothing rescales copy 2: at 5 % density the scores here span about
    1e-46..1e-6, the smallest below float32's range, and one layer's scores are 42 % off in
    float32 (norm-wise). Those are far below any threshold: float32 keeps exactly the weights
    float64 keeps."""
    torch.manual_seed(1)
    layers: list[nn.Module] = []
    for i in range(16):
        layers += [nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1), nn.ReLU()]
        if i % 5 == 4:
            layers.append(nn.MaxPool2d(2))
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    masks = pxprune.Masks({n: torch.rand(w.shape) < 0.05
                           for n, w in pxprune.Masks.ones(model).items()})
    x = torch.randn(16, 3, 16, 16)
    s32 = pxprune.score(model, "px", x, masks=masks)
    s64 = pxprune.score(model.double(), "px", x.double(), masks=masks, precision="float64")
    flat32 = torch.cat([s32[n].flatten() for n in sorted(s32)])
    flat64 = torch.cat([s64[n].flatten() for n in sorted(s64)])
    assert flat64[flat64 > 0].min() < 1e-40 < flat64.max() < 1e-5  # the regime in question
    worst = max(float((s32[n] - s64[n]).norm() / s64[n].norm()) for n in s64 if s64[n].any())
    assert worst > 0.1  # float32 is visibly wrong somewhere in the tail ...
    for keep in (0.5, 0.2, 0.02):  # ... and keeps the same weights all the same
        k = int(keep * masks.kept)
        assert set(flat32.topk(k).indices.tolist()) == set(flat64.topk(k).indices.tolist())
    top = flat64 > 1e-6 * flat64.max()
    torch.testing.assert_close(flat32[top], flat64[top], rtol=1e-4, atol=0)
