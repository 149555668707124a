"""Baseline scores: each pinned by a property that would fail if the method were wrong."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pxprune
from pxprune import Masks, PruningError
from pxprune.errors import WeightsMismatchError
from pxprune.methods import REGISTRY
from pxprune.methods._common import shuffle_masks
from pxprune.methods.grasp import grasp_terms
from pxprune.methods.imp import imp_densities, run_imp
from pxprune.methods.synflow import synflow_terms
from pxprune.schedule import threshold

BASELINES = ("random", "magnitude", "snip", "grasp", "synflow", "synflow_l2", "ntksap")
# the contract tests run over the registry: a method registered from its own file is tested
# without editing a list (methods that train between rounds need a training set: IMP's tests)
CONTRACT = (*sorted(n for n, m in REGISTRY.items() if not m.trains), "px[variant=bound]")
CLASSES = 4


class TinyCNN(nn.Module):
    """conv-BN-ReLU-maxpool-conv-BN-ReLU-GAP-linear, with biases: exercises every code path."""

    def __init__(self, width: int = 6):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, CLASSES)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def chain_net(widths=(3, 8, 16, 16), classes: int = CLASSES, bn: bool = True) -> nn.Sequential:
    """A VGG-style plain chain (no residuals): conv(-BN)-ReLU blocks, one max-pool, GAP, linear."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers += [nn.Conv2d(a, b, 3, padding=1, bias=not bn)]
        layers += [nn.BatchNorm2d(b)] if bn else []
        layers += [nn.ReLU(inplace=True)]
        if i == 0:
            layers += [nn.MaxPool2d(2)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], classes)]
    return nn.Sequential(*layers)


def warmed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 8, 8, generator=g) * 2 + 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
    return model


def make_data(n: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % CLASSES


def half_masks(model: nn.Module, seed: int = 3) -> Masks:
    g = torch.Generator().manual_seed(seed)
    return Masks({n: torch.rand(m.shape, generator=g) < 0.5 for n, m in Masks.ones(model).items()})


def snapshot(model: nn.Module):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()])


def assert_untouched(model: nn.Module, snap) -> None:
    state, flags = snap
    now = model.state_dict()
    for k, v in state.items():
        assert torch.equal(now[k], v), f"{k} changed"
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return warmed(TinyCNN())


def test_registry_lists_every_baseline():
    assert set(BASELINES) | {"imp", "px"} <= set(pxprune.METHODS)
    assert set(BASELINES) | {"px"} <= set(CONTRACT) and "imp" not in CONTRACT


@pytest.mark.parametrize("method", CONTRACT)
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_model_left_exactly_as_found(model, method, mode):
    model.train(mode != "eval")
    if mode == "mixed":
        model.bn2.eval()
    rng = torch.get_rng_state()
    snap = snapshot(model)
    masks = half_masks(model)
    scores = pxprune.score(model, method, [make_data()], masks=masks)
    assert_untouched(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded generators, global RNG untouched
    assert set(scores) == set(masks)
    for n, s in scores.items():
        assert s.shape == masks[n].shape
        assert torch.isfinite(s).all() and (s >= 0).all()
    if method not in ("random", "grasp"):  # the masked network has no pruned weight to score
        assert all(float(scores[n][~masks[n]].abs().max()) == 0.0 for n in masks)


@pytest.mark.parametrize("method", CONTRACT)
def test_prune_keeps_exact_count(model, method):
    x, y = make_data()
    masks = pxprune.prune(model, method, 0.9, (x, y), rounds=2, progress=False)
    assert masks.kept == round(0.1 * masks.total)
    for n, p in model.named_parameters():
        if n in masks:
            assert (p[~masks[n]] == 0).all()


def test_random_is_seeded(model):
    a = pxprune.score(model, "random", seed=4)
    b = pxprune.score(model, "random", seed=4)
    c = pxprune.score(model, "random", seed=5)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert all(not torch.equal(a[n], c[n]) for n in a)
    flat = torch.cat([s.flatten() for s in a.values()])
    assert 0.0 <= float(flat.min()) and float(flat.max()) < 1.0
    assert abs(float(flat.mean()) - 0.5) < 0.05


def test_magnitude_is_abs_of_masked_weights(model):
    masks = half_masks(model)
    scores = pxprune.score(model, "magnitude", masks=masks)
    for n, p in model.named_parameters():
        if n in masks:
            assert torch.equal(scores[n], (p.detach() * masks[n]).abs())


def _mask_gradients(model: nn.Module, masks: Masks, x, y, train_bn: bool) -> dict:
    """|dL/dmask| the way SNIP's code gets it: torch.nn.utils.prune masks with requires_grad."""
    net = copy.deepcopy(model)
    masks.to_torch_prune(net)
    net.train(train_bn)
    modules = dict(net.named_modules())
    mask_tensors = {}
    for n in masks:
        module = modules[n.rpartition(".")[0]]
        module.weight_mask.requires_grad_(True)
        mask_tensors[n] = module.weight_mask
    F.cross_entropy(net(x), y).backward()
    return {n: m.grad.abs() for n, m in mask_tensors.items()}


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
@pytest.mark.parametrize("partial", [False, True])
def test_snip_equals_mask_gradient(model, bn_mode, partial):
    x, y = make_data()
    masks = half_masks(model) if partial else Masks.ones(model)
    scores = pxprune.score(model, "snip", (x, y), masks=masks, bn_mode=bn_mode)
    expected = _mask_gradients(model, masks, x, y, train_bn=bn_mode == "train")
    for n in masks:
        keep = masks[n]
        torch.testing.assert_close(scores[n][keep], expected[n][keep], rtol=1e-4, atol=1e-9)
        assert float(scores[n].max()) > 0


def test_snip_bn_mode_matters_and_sums_batches(model):
    x, y = make_data()
    train = pxprune.score(model, "snip", (x, y))
    evalm = pxprune.score(model, "snip", (x, y), bn_mode="eval")
    assert any(not torch.allclose(train[n], evalm[n]) for n in train)
    # two batches: the mask gradients of the two losses add up (before the absolute value)
    halves = [(x[:6], y[:6]), (x[6:], y[6:])]
    both = pxprune.score(model, "snip", halves, bn_mode="eval")
    a = _mask_gradients_signed(model, x[:6], y[:6])
    b = _mask_gradients_signed(model, x[6:], y[6:])
    for n in both:
        torch.testing.assert_close(both[n], (a[n] + b[n]).abs(), rtol=1e-4, atol=1e-9)
    with pytest.raises(PruningError, match="bn_mode"):
        pxprune.score(model, "snip", (x, y), bn_mode="batch")


def _mask_gradients_signed(model, x, y):
    net = copy.deepcopy(model).eval()
    params = dict(net.named_parameters())
    names = list(Masks.ones(net))
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return {n: params[n].detach() * g for n, g in zip(names, grads, strict=True)}


def test_scores_need_labels(model):
    x, _ = make_data()
    for method in ("snip", "grasp"):
        with pytest.raises(PruningError, match="labelled"):
            pxprune.score(model, method, x)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_grasp_hessian_gradient_matches_finite_difference(bn_mode):
    torch.manual_seed(0)
    net = warmed(TinyCNN(width=4)).double()
    x, y = make_data(8)
    batches = [(x[:4].double(), y[:4]), (x[4:].double(), y[4:])]
    masks = half_masks(net)
    w, g, hg = grasp_terms(net, batches, masks, temperature=200.0, bn_mode=bn_mode)
    names = list(masks)

    def grad_at(step: float):
        probe = copy.deepcopy(net)
        probe.eval()
        for mod in probe.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.train(bn_mode == "train")
        params = dict(probe.named_parameters())
        with torch.no_grad():
            for n in names:  # g is zero on pruned weights: we stay on the masked network
                params[n].copy_(w[n] + step * g[n])
        total = [torch.zeros_like(w[n]) for n in names]
        for xb, yb in batches:
            loss = F.cross_entropy(probe(xb) / 200.0, yb)
            for t, d in zip(total, torch.autograd.grad(loss, [params[n] for n in names]),
                            strict=True):
                t += d
        return total

    eps = 1e-6 / math.sqrt(sum(float(g[n].square().sum()) for n in names))
    plus, minus = grad_at(eps), grad_at(-eps)
    for n, p, m in zip(names, plus, minus, strict=True):
        fd = ((p - m) / (2 * eps)) * masks[n]  # H g of the masked network, on live weights
        assert float(g[n][~masks[n]].abs().max()) == 0.0
        torch.testing.assert_close(hg[n] * masks[n], fd, rtol=1e-6,
                                   atol=1e-6 * float(fd.abs().max()))
        assert float(hg[n].abs().max()) > 0


def test_grasp_keeps_the_intended_weights(model):
    x, y = make_data()
    masks = Masks.ones(model)
    w, _, hg = grasp_terms(model, [(x, y)], masks)
    grasp_s = {n: -w[n] * hg[n] for n in masks}  # the paper's score; GraSP removes the highest
    scores = pxprune.score(model, "grasp", (x, y))
    shifts = torch.cat([(scores[n] + grasp_s[n].double()).flatten() for n in masks])
    assert float(shifts.max() - shifts.min()) < 1e-9 * float(shifts.abs().max())  # one constant
    assert min(float(s.min()) for s in scores.values()) == 0.0
    kept = threshold(scores, 0.3, masks)
    kept_s = torch.cat([grasp_s[n][kept[n]] for n in masks])
    removed_s = torch.cat([grasp_s[n][~kept[n]] for n in masks])
    assert float(kept_s.max()) <= float(removed_s.min())  # removed: the 70 % highest -theta*Hg
    assert kept.kept == round(0.3 * masks.total)


@pytest.mark.parametrize("power", [1, 2])
def test_synflow_conservation_per_layer(power):
    torch.manual_seed(0)
    net = warmed(chain_net())
    masks = half_masks(net)
    R, shares = synflow_terms(net, [], masks, power=power, input_shape=(3, 8, 8))
    assert all((s >= 0).all() for s in shares.values())
    for n, s in shares.items():  # each layer is a cut of a chain net: its shares sum to R
        assert abs(float(s.sum()) / float(R) - 1.0) < 1e-9, n


def test_synflow_is_data_free_and_needs_a_shape(model):
    x, _ = make_data()
    a = pxprune.score(model, "synflow", x)
    b = pxprune.score(model, "synflow", torch.randn(3, 3, 8, 8))
    c = pxprune.score(model, "synflow", input_shape=(3, 8, 8))
    assert all(torch.equal(a[n], b[n]) and torch.equal(a[n], c[n]) for n in a)
    with pytest.raises(PruningError, match="input_shape"):
        pxprune.score(model, "synflow")


def test_synflow_100_rounds_avoids_layer_collapse():
    torch.manual_seed(0)
    net = chain_net(widths=(3, 16, 32, 32), classes=10)
    masks = pxprune.prune(net, "synflow", 0.999, None, progress=False, input_shape=(3, 8, 8))
    assert masks.kept == round(0.001 * masks.total)
    assert masks.collapsed_layers() == []  # measured: 4, 3, 4, 4 weights kept
    torch.manual_seed(0)
    one_shot = pxprune.prune(chain_net(widths=(3, 16, 32, 32), classes=10), "synflow", 0.999,
                             rounds=1, progress=False, input_shape=(3, 8, 8))
    assert one_shot.kept == masks.kept and one_shot.collapsed_layers() != []  # what rounds fix


def test_synflow_l2_ranks_like_px_with_all_ones_classifier():
    torch.manual_seed(0)
    net = warmed(TinyCNN())
    x, _ = make_data()
    # The classifier stays dense: a pruned classifier row makes PX's class weights Z1_k unequal
    hidden = Masks({n: m for n, m in half_masks(net).items() if n != "fc.weight"})
    px = pxprune.score(net, "px", x, masks=hidden, variant="bound", classifier="ones")
    l2 = pxprune.score(net, "synflow_l2", x, masks=hidden)
    ratios = torch.cat([(px[n][hidden[n]] / l2[n][hidden[n]]).flatten() for n in hidden])
    assert float(ratios.std() / ratios.mean()) < 1e-9  # proportional
    start = Masks({n: m for n, m in Masks.ones(net).items() if n != "fc.weight"})
    for sparsity in (0.5, 0.9, 0.98):
        a = pxprune.prune(copy.deepcopy(net), "px", sparsity, x, rounds=3, progress=False,
                          masks=start, variant="bound", classifier="ones")
        b = pxprune.prune(copy.deepcopy(net), "synflow_l2", sparsity, x, rounds=3,
                          progress=False, masks=start)
        assert all(torch.equal(a[n], b[n]) for n in a)
        assert a.kept == round((1 - sparsity) * a.total)
    # with a pruned classifier the classes weigh differently and the rankings part
    partial = half_masks(net)
    px = pxprune.score(net, "px", x, masks=partial, variant="bound", classifier="ones")
    l2 = pxprune.score(net, "synflow_l2", x, masks=partial)
    ratios = torch.cat([(px[n][partial[n]] / l2[n][partial[n]]).flatten() for n in partial])
    assert float(ratios.std() / ratios.mean()) > 1e-3


def test_ntksap_seeded_weight_agnostic_and_untouched(model):
    x, _ = make_data()
    snap = snapshot(model)
    a = pxprune.score(model, "ntksap", x, seed=3)
    b = pxprune.score(model, "ntksap", x, seed=3)
    c = pxprune.score(model, "ntksap", x, seed=4)
    assert_untouched(model, snap)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert all(not torch.equal(a[n], c[n]) for n in a)
    other = warmed(TinyCNN(), seed=9)  # other weights, same architecture: same fresh draws
    d = pxprune.score(other, "ntksap", torch.zeros_like(x), seed=3)
    assert all(torch.equal(a[n], d[n]) for n in a)  # weight- and data-agnostic (shape only)
    e = pxprune.score(model, "ntksap", x, seed=3, reinit=False)
    f = pxprune.score(other, "ntksap", x, seed=3, reinit=False)
    assert any(not torch.allclose(e[n], f[n]) for n in e)
    two = pxprune.score(model, "ntksap", x, seed=3, repeats=2)
    assert all((two[n] > 0).any() for n in two) and any(
        not torch.allclose(two[n], a[n]) for n in a)


def test_ntksap_objective_is_finite_difference_of_outputs():
    """For small epsilon the objective is eps^2 ||J delta||^2: the score scales as eps^2."""
    torch.manual_seed(0)
    net = chain_net(bn=False).double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    a = pxprune.score(net, "ntksap", x, seed=1, epsilon=1e-6)
    b = pxprune.score(net, "ntksap", x, seed=1, epsilon=2e-6)
    total_a = sum(float(s.sum()) for s in a.values())
    total_b = sum(float(s.sum()) for s in b.values())
    assert abs(total_b / total_a - 4.0) < 1e-4  # 3.99999668 measured


def _trainer(steps: int = 5, lr: float = 0.2):
    def train_fn(model: nn.Module, masks: Masks) -> None:
        x, y = make_data(16, seed=7)
        handle = masks.attach(model)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            handle.reapply()
        handle.remove()
    return train_fn


def test_imp_rewinds_kept_weights_and_reaches_target(model):
    init = copy.deepcopy(model.state_dict())
    seen = []
    masks = run_imp(model, 0.8, _trainer(), callback=lambda i, m: seen.append(m.density()))
    assert masks.kept == round(0.2 * masks.total)
    assert len(seen) == len(imp_densities(0.2)) == 8  # 0.8**7 = 0.21 > 0.2, then 0.2
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False))
    state = model.state_dict()
    for n, v in init.items():
        if n in masks:
            assert torch.equal(state[n][masks[n]], v[masks[n]])
            assert (state[n][~masks[n]] == 0).all()
        else:
            assert torch.equal(state[n], v)  # biases, BN parameters and running statistics too


def test_imp_prunes_by_trained_magnitude_and_late_rewinding(model):
    trained = copy.deepcopy(model)
    _trainer()(trained, Masks.ones(trained))
    expected = threshold(pxprune.score(trained, "magnitude"), 0.8, Masks.ones(trained))
    early = copy.deepcopy(model)
    _trainer(steps=1)(early, Masks.ones(early))
    rewind = copy.deepcopy(early.state_dict())
    masks = run_imp(model, 0.2, _trainer(), rewind_state=rewind)
    assert all(torch.equal(masks[n], expected[n]) for n in masks)
    for n, p in model.named_parameters():
        if n in masks:
            assert torch.equal(p.detach()[masks[n]], rewind[n][masks[n]])


def test_imp_schedule_and_score_error(model):
    assert imp_densities(0.5, rounds=3) == pytest.approx([0.5 ** (1 / 3), 0.5 ** (2 / 3), 0.5])
    assert imp_densities(0.64) == pytest.approx([0.8, 0.64])
    with pytest.raises(PruningError, match="run_imp"):
        pxprune.prune(model, "imp", 0.5, progress=False)


def test_imp_refuses_bad_rounds_and_rewind_states_before_training(model):
    calls = []

    def train_fn(m, masks):
        calls.append(1)

    total = Masks.ones(model).total
    with pytest.raises(PruningError, match=f"more than the {total:,} prunable weights"):
        run_imp(model, 0.5, train_fn, rounds=total + 1)
    with pytest.raises(PruningError, match="positive integer"):
        run_imp(model, 0.5, train_fn, rounds=2.5)
    rewind = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(iter(Masks.ones(model)))
    del rewind[name]
    with pytest.raises(WeightsMismatchError, match=f"rewind_state .*missing keys.*{name}"):
        run_imp(model, 0.5, train_fn, rewind_state=rewind)
    assert calls == []  # refused before the first (costly) training
    # a DataParallel-style state dict still rewinds
    wrapped = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    masks = run_imp(model, 0.5, train_fn, rewind_state=wrapped, rounds=2)
    assert len(calls) == 2 and masks.kept == round(0.5 * masks.total)


def test_shuffle_masks_permutes_within_layers(model):
    masks = half_masks(model)
    shuffled = shuffle_masks(masks, seed=0)
    assert [s.kept for s in shuffled.layer_stats()] == [s.kept for s in masks.layer_stats()]
    assert all(not torch.equal(shuffled[n], masks[n]) for n in masks)
    again = shuffle_masks(masks, seed=0)
    assert all(torch.equal(again[n], shuffled[n]) for n in masks)
    assert all(shuffled[n].shape == masks[n].shape for n in masks)
