"""PX against brute-force enumeration of every input-output path (DESIGN §3), in float64."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pxprune
from pxprune.methods.px.bound import px_terms

# -- a tiny path enumerator ---------------------------------------------------------------------
# A layer is a list of edges (in_unit, out_unit, weight_key | None, c1, c2): the weight entry the
# edge carries (None for fixed edges such as pooling), and constant factors of the edge in copy 1
# and copy 2. After each hidden layer, units may carry a gate value (copy 1 multiplies by it).


def enumerate_paths(layers, n_inputs):
    """Yield (input_unit, output_unit, [edges]) for every path through the layered graph."""
    incoming = [defaultdict(list) for _ in layers]
    for li, edges in enumerate(layers):
        for e in edges:
            incoming[li][e[1]].append(e)
    outputs = sorted({e[1] for e in layers[-1]})

    def back(li, unit):
        if li < 0:
            yield unit, []
            return
        for e in incoming[li][unit]:
            for start, tail in back(li - 1, e[0]):
                yield start, [*tail, e]

    for k in outputs:
        for start, path in back(len(layers) - 1, k):
            yield start, k, path


def brute_force_px(layers, gates_per_x, inputs, weights, bn2, classifier_key):
    """Scores S_j from the formulas: Z1_k = sum_x sum_{p->k} a_p(x) x_s^2 (classifier real)."""
    paths = list(enumerate_paths(layers, None))
    n_classes = 1 + max(k for _, k, _ in paths)
    z1 = torch.zeros(n_classes, dtype=torch.float64)
    for x, gates in zip(inputs, gates_per_x, strict=True):
        for s, k, path in paths:
            term = x[s] ** 2
            for li, e in enumerate(path):
                key = e[2]
                if key is not None and key[0] == classifier_key:
                    term = term * weights[key]
                term = term * e[3] * gates[li].get(e[1], 1.0)
            z1[k] += term
    scores = defaultdict(float)
    r_total = 0.0
    for _s, k, path in paths:
        term = 1.0
        for e in path:
            key = e[2]
            if key is None:
                term *= e[4]
            elif key[0] == classifier_key:
                term *= weights[key]
            else:
                term *= weights[key] ** 2 * bn2.get((key[0], key[1][0]), 1.0)
            term *= e[4] if key is not None else 1.0
        r_total += z1[k] * term
        for e in path:
            if e[2] is not None:
                scores[e[2]] += z1[k] * term  # each path term is degree 1 in theta_j^2 (theta_c)
    return float(r_total), scores


def linear_edges(name, w, in_units, out_units):
    return [(in_units[i], out_units[o], (name, (o, i)), 1.0, 1.0)
            for o in range(w.shape[0]) for i in range(w.shape[1])]


def conv_edges(name, w, in_shape, out_shape):
    """Edges of a stride-1, unpadded conv between unit grids (c, y, x)."""
    co_n, ci_n, kh, kw = w.shape
    _, oh, ow = out_shape
    return [((ci, y + dy, x + dx), (co, y, x), (name, (co, ci, dy, dx)), 1.0, 1.0)
            for co, y, x in itertools.product(range(co_n), range(oh), range(ow))
            for ci, dy, dx in itertools.product(range(ci_n), range(kh), range(kw))]


# -- tiny networks --------------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self, act: str = "relu", bn: bool = False):
        super().__init__()
        self.l1 = nn.Linear(4, 5, bias=True)
        self.bn = nn.BatchNorm1d(5) if bn else nn.Identity()
        self.l2 = nn.Linear(5, 3, bias=True)
        self.fc = nn.Linear(3, 3, bias=True)
        self.act = act
        self.relu_module = nn.ReLU(inplace=True)
        self.leaky_module = nn.LeakyReLU(0.3)
        with torch.no_grad():  # positive biases keep units alive on a few inputs
            self.l1.bias.uniform_(0.1, 0.5)
            self.l2.bias.uniform_(0.1, 0.5)

    def nonlin(self, h):
        if self.act == "relu":
            return F.relu(h)
        if self.act == "inplace":
            return self.relu_module(h)
        if self.act == "torch":
            return torch.relu(h)
        if self.act == "method":
            return h.relu()
        if self.act == "method_":
            return h.clone().relu_()
        if self.act == "leaky":
            return self.leaky_module(h)
        if self.act == "relu6":
            return nn.ReLU6()(h)
        raise AssertionError(self.act)

    def forward(self, x):
        return self.fc(self.nonlin(self.l2(self.nonlin(self.bn(self.l1(x))))))


def mlp_bruteforce(model: MLP, xs):
    w = {("l1.weight", idx): model.l1.weight[idx].item()
         for idx in itertools.product(range(5), range(4))}
    w.update({("l2.weight", idx): model.l2.weight[idx].item()
              for idx in itertools.product(range(3), range(5))})
    w.update({("fc.weight", idx): model.fc.weight[idx].item()
              for idx in itertools.product(range(3), range(3))})
    layers = [
        linear_edges("l1.weight", model.l1.weight, list(range(4)), list(range(5))),
        linear_edges("l2.weight", model.l2.weight, list(range(5)), list(range(3))),
        linear_edges("fc.weight", model.fc.weight, list(range(3)), list(range(3))),
    ]
    bn2 = {}
    if isinstance(model.bn, nn.BatchNorm1d):
        s = model.bn.weight.detach() / torch.sqrt(model.bn.running_var + model.bn.eps)
        bn2 = {("l1.weight", c): float(s[c] ** 2) for c in range(5)}

    def gate(h):
        if model.act == "leaky":
            return [1.0 if v > 0 else 0.3**2 for v in h]
        if model.act == "relu6":
            return [1.0 if 0 < v < 6 else 0.0 for v in h]
        return [1.0 if v > 0 else 0.0 for v in h]

    gates = []
    with torch.no_grad():
        for x in xs:
            h1 = model.bn(model.l1(x[None]))[0]
            h2 = model.l2(model.nonlin(h1[None]))[0]
            g1, g2 = gate(h1), gate(h2)
            gates.append([dict(enumerate(g1)), dict(enumerate(g2)), {}])
    return brute_force_px(layers, gates, [x.tolist() for x in xs], w, bn2, "fc.weight")


def check_against_bruteforce(model, xs, r_bf, s_bf):
    r, shares = px_terms(model, [(xs, None)], pxprune.Masks.ones(model), precision="float64")
    assert r.item() == pytest.approx(r_bf, rel=1e-9)
    for name, t in shares.items():
        for idx in itertools.product(*map(range, t.shape)):
            expected = float(s_bf[(name, idx)])
            assert t[idx].item() == pytest.approx(expected, rel=1e-9, abs=1e-12 * r_bf)


@pytest.mark.parametrize("act", ["relu", "leaky", "relu6"])
@pytest.mark.parametrize("bn", [False, True])
def test_mlp_matches_bruteforce(act, bn):
    torch.manual_seed(3)
    model = MLP(act, bn).double()
    if bn:
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.running_mean.uniform_(-0.3, 0.3)
        model.bn.weight.data.uniform_(0.5, 1.5)
        model.bn.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    xs = torch.randn(6, 4, dtype=torch.float64) * 2
    r_bf, s_bf = mlp_bruteforce(model, xs)
    check_against_bruteforce(model, xs, r_bf, s_bf)


class TinyCNN(nn.Module):
    """conv 2x2 -> relu -> maxpool 2x2 -> conv 1x1 -> relu -> flatten -> linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 2, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(3, 2, 1, bias=False)
        self.fc = nn.Linear(2 * 2 * 2, 3, bias=False)

    def forward(self, x):
        h = self.pool(torch.relu(self.c1(x)))
        return self.fc(F.relu(self.c2(h)).flatten(1))


def test_cnn_with_maxpool_matches_bruteforce():
    torch.manual_seed(5)
    model = TinyCNN().double().eval()
    xs = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    c1o, pooled = (3, 4, 4), (3, 2, 2)
    layers = [conv_edges("c1.weight", model.c1.weight, (2, 5, 5), c1o)]
    # max-pool: copy 1 keeps the arg-max edge (gate on the edge's input unit), copy 2 averages.
    pool_edges = [((c, 2 * y + dy, 2 * x + dx), (c, y, x), None, 1.0, 0.25)
                  for c, y, x in itertools.product(range(3), range(2), range(2))
                  for dy, dx in itertools.product(range(2), range(2))]
    layers.append(pool_edges)
    layers.append(conv_edges("c2.weight", model.c2.weight, pooled, (2, 2, 2)))
    flat = [(c, y, x) for c, y, x in itertools.product(range(2), range(2), range(2))]
    layers.append(linear_edges("fc.weight", model.fc.weight, flat, list(range(3))))
    weights = {}
    for name, p in model.named_parameters():
        for idx in itertools.product(*map(range, p.shape)):
            weights[(name, idx)] = p[idx].item()

    inputs, gates = [], []
    with torch.no_grad():
        for x in xs:
            a1 = model.c1(x[None])[0]
            r1 = a1.relu()
            _, arg = F.max_pool2d(r1[None], 2, return_indices=True)
            a2 = model.c2(model.pool(r1[None]))[0]
            g_conv1 = {u: float(a1[u] > 0) for u in itertools.product(range(3), range(4), range(4))}
            chosen = {}
            for c, y, xx in itertools.product(range(3), range(2), range(2)):
                flat_idx = int(arg[0, c, y, xx])
                chosen[(c, y, xx)] = (c, flat_idx // 4, flat_idx % 4)
            g_conv2 = {u: float(a2[u] > 0) for u in itertools.product(range(2), range(2), range(2))}
            # gates live on edges' out-units; the pool gate is per (out unit, chosen in unit):
            gates.append([g_conv1, chosen, g_conv2, {}])
            inputs.append({(c, y, xx): x[c, y, xx].item()
                           for c, y, xx in itertools.product(range(2), range(5), range(5))})

    # Expand the pool gate into per-edge factors by rewriting the pool layer per example.
    r_total, scores = 0.0, defaultdict(float)
    z1 = torch.zeros(3, dtype=torch.float64)
    paths = list(enumerate_paths(layers, None))
    for inp, g in zip(inputs, gates, strict=True):
        for s, k, path in paths:
            term = inp[s] ** 2 * g[0].get(path[0][1], 1.0)
            term *= 1.0 if g[1][path[1][1]] == path[1][0] else 0.0
            term *= g[2].get(path[2][1], 1.0) * weights[path[3][2]]
            z1[k] += term
    for _s, k, path in paths:
        term = (weights[path[0][2]] ** 2) * 0.25 * (weights[path[2][2]] ** 2) * weights[path[3][2]]
        r_total += z1[k] * term
        for e in path:
            if e[2] is not None:
                scores[e[2]] += z1[k] * term
    check_against_bruteforce(model, xs, float(r_total), scores)


@pytest.mark.parametrize("act", ["inplace", "torch", "method", "method_"])
def test_every_relu_style_gives_identical_scores(act):
    torch.manual_seed(11)
    reference = MLP("relu").eval()
    other = MLP(act).eval()
    other.load_state_dict(reference.state_dict())
    xs = torch.randn(8, 4)
    a = pxprune.score(reference, "px[variant=bound]", xs, precision="float64")
    b = pxprune.score(other, "px[variant=bound]", xs, precision="float64")
    for name in a:
        assert torch.equal(a[name], b[name])


def test_layer_sums_equal_R_on_a_chain():
    """Every layer of a plain chain is a cut: its signed shares sum to R (Euler's theorem)."""
    torch.manual_seed(2)
    model = MLP("relu", bn=True).double().eval()
    xs = torch.randn(16, 4, dtype=torch.float64)
    r, shares = px_terms(model, [(xs, None)], pxprune.Masks.ones(model), precision="float64")
    for name, s in shares.items():
        assert s.sum().item() == pytest.approx(r.item(), rel=1e-10), name


def test_dilated_max_pool_is_refused_by_name():
    """A dilated max-pool window has no average-pool equivalent in copy 2: clear error."""
    from pxprune.pathview import UnsupportedLayerError

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.ReLU(),
                          nn.MaxPool2d(2, dilation=2), nn.Flatten(), nn.Linear(2 * 2 * 2, 3,
                                                                               bias=False))
    with pytest.raises(UnsupportedLayerError, match=r"dilated max-pool in 2 \(MaxPool2d\)"):
        pxprune.score(model, "px[variant=bound]", torch.randn(4, 1, 8, 8))
