"""pxprune.analysis.ntk against explicit Jacobians, eigvalsh and path enumeration; the ``ntk``
command."""

from __future__ import annotations

import itertools
import json
import re
import warnings

import pytest
import torch
from helpers import SHARED_DATA
from torch import nn
from torch.func import functional_call

from pxprune.analysis.ntk import ntk_matrix, ntk_top_eigenvalues, ntk_trace, px_bound
from pxprune.masks import Masks, PruningError

F64 = torch.float64
DATA = SHARED_DATA


# -- models -------------------------------------------------------------------------------------
def mlp(seed: int, widths=(5, 7, 6, 3), bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b, bias=bias))
    return nn.Sequential(*layers).to(F64)


def cnn(seed: int, bias: bool = True, bn_shift: bool = True) -> nn.Sequential:
    """Conv-BN-ReLU-MaxPool-Conv-BN-ReLU-GAP-Linear with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=bias), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1, bias=bias), nn.BatchNorm2d(5), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3, bias=bias),
    ).to(F64)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                if bn_shift:
                    m.running_mean.normal_()
                    m.bias.normal_()
    return model


def random_masks(model: nn.Module, seed: int, density: float = 0.6) -> Masks:
    gen = torch.Generator().manual_seed(seed)
    return Masks({n: torch.rand(p.shape, generator=gen) < density
                  for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1})


# -- the explicit reference: a flat vector of the *kept* entries only ---------------------------
def explicit_jacobian(model: nn.Module, x: torch.Tensor, masks=None, names=None) -> torch.Tensor:
    """NK x P Jacobian of the stacked outputs w.r.t. the kept entries (jacrev, eval mode)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    if names is None:
        names = list(masks) if masks is not None else [n for n, p in params.items() if p.dim() > 1]
    keep = {n: (masks[n] if masks is not None and n in masks else torch.ones_like(params[n],
            dtype=torch.bool)) for n in names}
    fixed = {n: (p * masks[n] if masks is not None and n in masks else p)
             for n, p in params.items()}
    sizes = [int(keep[n].sum()) for n in names]

    def outputs(vec: torch.Tensor) -> torch.Tensor:
        weights = dict(fixed)
        for n, part in zip(names, vec.split(sizes), strict=True):
            weights[n] = torch.zeros_like(params[n]).masked_scatter(keep[n], part)
        return functional_call(model, weights, (x,)).reshape(-1)

    was = model.training
    model.eval()
    try:
        vec = torch.cat([params[n][keep[n]] for n in names])
        return torch.func.jacrev(outputs)(vec)
    finally:
        model.train(was)


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


# -- trace --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_trace_equals_explicit_jacobian_mlp(seed):
    model = mlp(seed)
    x = torch.randn(4, 5, dtype=F64)
    jac = explicit_jacobian(model, x)
    assert jac.shape == (4 * 3, 5 * 7 + 7 * 6 + 6 * 3)
    assert close(ntk_trace(model, x), float(jac.square().sum()))
    assert close(ntk_trace(model, x, chunk=1), ntk_trace(model, x, chunk=3), 1e-12)


def test_trace_all_params_includes_biases():
    model = mlp(3)
    x = torch.randn(3, 5, dtype=F64)
    names = [n for n, _ in model.named_parameters()]
    jac = explicit_jacobian(model, x, names=names)
    assert close(ntk_trace(model, x, params="all"), float(jac.square().sum()))
    assert ntk_trace(model, x, params="all") > ntk_trace(model, x)


def test_trace_masked_excludes_pruned_columns():
    model = mlp(4)
    x = torch.randn(5, 5, dtype=F64)
    masks = random_masks(model, 4)
    jac = explicit_jacobian(model, x, masks)
    assert jac.shape[1] == masks.kept
    sparse = ntk_trace(model, x, masks)
    assert close(sparse, float(jac.square().sum()))
    # the zeroed dense network has the same outputs but pruned weights are parameters there
    zeroed = mlp(4)
    with torch.no_grad():
        for n, p in zeroed.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    assert torch.allclose(zeroed(x), functional_call(
        model, {n: p * masks[n] if n in masks else p for n, p in model.named_parameters()}, (x,)))
    assert ntk_trace(zeroed, x) > sparse * (1 + 1e-3)
    assert close(ntk_trace(zeroed, x, masks), sparse, 1e-12)


def test_trace_masks_on_subset_only_differentiate_masked():
    model = mlp(5)
    x = torch.randn(3, 5, dtype=F64)
    masks = Masks({"0.weight": torch.rand(7, 5) < 0.5})
    jac = explicit_jacobian(model, x, masks)
    assert close(ntk_trace(model, x, masks), float(jac.square().sum()))


def test_trace_cnn_batchnorm_eval_mode_state_untouched():
    model = cnn(0)
    model.train()
    x = torch.randn(3, 2, 6, 6, dtype=F64)
    masks = random_masks(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace = ntk_trace(model, x, masks)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running stats and weights never updated
    jac = explicit_jacobian(model, x, masks)
    assert close(trace, float(jac.square().sum()))
    # eval-mode BN: each sample's Jacobian is independent of the rest of the batch
    assert close(ntk_trace(model, x[:2], masks) + ntk_trace(model, x[2:], masks), trace, 1e-10)


def test_trace_float32_model_close_to_float64():
    model = cnn(2)
    x = torch.randn(2, 2, 6, 6, dtype=F64)
    t64 = ntk_trace(model, x)
    t32 = ntk_trace(model.float(), x.float())
    assert close(t32, t64, 1e-4)


# -- kernel and eigenvalues ---------------------------------------------------------------------
def test_ntk_matrix_equals_jjt():
    model = cnn(1)
    x = torch.randn(3, 2, 6, 6, dtype=F64)
    masks = random_masks(model, 2)
    jac = explicit_jacobian(model, x, masks)
    kernel = ntk_matrix(model, x, masks, chunk=2)
    assert kernel.dtype == F64 and kernel.shape == (9, 9)
    assert torch.allclose(kernel, jac @ jac.T, rtol=1e-10, atol=1e-12)
    assert close(float(kernel.trace()), ntk_trace(model, x, masks), 1e-10)


@pytest.mark.parametrize("method", ["exact", "lanczos", "auto"])
def test_top_eigenvalues_equal_eigvalsh(method):
    model = cnn(3)
    x = torch.randn(6, 2, 6, 6, dtype=F64)
    masks = random_masks(model, 3)
    jac = explicit_jacobian(model, x, masks)
    want = torch.linalg.eigvalsh(jac @ jac.T).flip(0)
    got = ntk_top_eigenvalues(model, x, 5, masks, method=method)
    assert got.dtype == F64 and got.shape == (5,)
    assert torch.allclose(got, want[:5], rtol=1e-6, atol=1e-9 * float(want[0]))
    assert bool((got[:-1] >= got[1:]).all())


def test_lanczos_full_spectrum_and_larger_mlp():
    model = mlp(6, widths=(8, 16, 16, 4))
    x = torch.randn(10, 8, dtype=F64)
    masks = random_masks(model, 6, 0.5)
    jac = explicit_jacobian(model, x, masks)
    want = torch.linalg.eigvalsh(jac @ jac.T).flip(0)
    got = ntk_top_eigenvalues(model, x, 40, masks, method="lanczos")  # NK = 40: every eigenvalue
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-8 * float(want[0]))
    top = ntk_top_eigenvalues(model, x, 3, masks, method="lanczos", seed=5)
    assert torch.allclose(top, want[:3], rtol=1e-8)


def test_lanczos_warns_when_not_converged():
    model = mlp(7, widths=(8, 16, 16, 4))
    x = torch.randn(10, 8, dtype=F64)
    with pytest.warns(UserWarning, match="Lanczos did not reach"):
        ntk_top_eigenvalues(model, x, 3, method="lanczos", iters=4)


# -- PX's bound ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_bound_dominates_trace_bias_free_mlp(seed):
    model = mlp(seed, widths=(6, 9, 8, 7, 4), bias=False)
    x = torch.randn(5, 6, dtype=F64)
    first_only = Masks({"0.weight": random_masks(model, seed, 0.7)["0.weight"]})
    for masks in (None, random_masks(model, seed, 0.7), first_only):
        trace = ntk_trace(model, x, masks)
        b = px_bound(model, x, masks)
        assert trace > 0 or masks is not None  # a sparse net may be dead on every input
        assert b["bound"] >= trace * (1 - 1e-12)
        assert b["frobenius_product"] >= b["bound"] * (1 - 1e-12)
        assert close(b["path_activation"], float(b["A"].sum()), 1e-12)
        assert close(b["path_kernel"], float(b["B"].sum()), 1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_bound_dominates_trace_bias_free_cnn(seed):
    model = cnn(seed, bias=False, bn_shift=False)  # BN scale only: still a path network
    x = torch.randn(3, 2, 6, 6, dtype=F64)
    for masks in (None, random_masks(model, seed, 0.4)):
        trace = ntk_trace(model, x, masks)
        b = px_bound(model, x, masks)
        assert b["bound"] >= trace * (1 - 1e-12), (trace, b["bound"])
        assert b["frobenius_product"] >= b["bound"]


def test_bound_dominates_trace_resnet20_pruned():
    from pxprune import models

    torch.manual_seed(0)
    model = models.get("resnet20").to(F64)  # 1x1-conv shortcuts, BN at init (shift 0)
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    masks = random_masks(model, 0, 0.1)
    trace = ntk_trace(model, x, masks)
    b = px_bound(model, x, masks)
    assert 0 < trace <= b["bound"] <= b["frobenius_product"]


def test_bound_per_output_is_tight_for_a_single_path():
    # one path per output: Cauchy-Schwarz is an equality, bound == trace
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False),
                          nn.ReLU(), nn.Linear(1, 1, bias=False)).to(F64)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.7)
    x = torch.tensor([[0.8], [1.3]], dtype=F64)
    assert close(px_bound(model, x)["bound"], ntk_trace(model, x), 1e-12)


def brute_force_bound(model: nn.Sequential, x: torch.Tensor, masks: Masks):
    """A_nk = sum_{p->k} a_p(x_n) x_s^2, B_k = sum_{p->k} sum_{j in p} (v_p / theta_j)^2."""
    w = [(m.weight.detach() * masks[f"{i}.weight"]) for i, m in enumerate(model)
         if isinstance(m, nn.Linear)]
    n_in, n_out = w[0].shape[1], w[-1].shape[0]
    hidden = [wi.shape[0] for wi in w[:-1]]
    a = torch.zeros(x.shape[0], n_out, dtype=F64)
    b = torch.zeros(n_out, dtype=F64)
    for n in range(x.shape[0]):  # ReLU on/off patterns of the sparse network
        h, gates = x[n], []
        for wi in w[:-1]:
            h = wi @ h
            gates.append(h > 0)
            h = h.clamp_min(0)
        for path in itertools.product(range(n_in), *map(range, hidden), range(n_out)):
            edges = [(path[i + 1], path[i]) for i in range(len(w))]
            if not all(bool(masks_of(masks, i)[e]) for i, e in enumerate(edges)):
                continue  # not a path of the sparse network
            active = all(bool(gates[i][path[i + 1]]) for i in range(len(hidden)))
            a[n, path[-1]] += float(active) * x[n, path[0]] ** 2
            if n == 0:
                theta = [w[i][e] for i, e in enumerate(edges)]
                v = torch.prod(torch.stack(theta))
                b[path[-1]] += sum((v / t) ** 2 for t in theta)
    return a, b


def masks_of(masks: Masks, layer: int) -> torch.Tensor:
    return masks[f"{2 * layer}.weight"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bound_equals_path_enumeration(seed):
    model = mlp(seed, widths=(3, 4, 3, 2), bias=False)
    x = torch.randn(3, 3, dtype=F64)
    masks = random_masks(model, seed, 0.7)
    a, b = brute_force_bound(model, x, masks)
    got = px_bound(model, x, masks)
    assert torch.allclose(got["A"], a, rtol=1e-12, atol=1e-14)
    assert torch.allclose(got["B"], b, rtol=1e-12, atol=1e-14)
    assert close(got["bound"], float((a * b).sum()), 1e-12)
    # ||J_v^f||_F^2 * ||J_theta^v||_F^2 from the enumeration, and the chain it bounds
    assert close(got["frobenius_product"], float(a.sum() * b.sum()), 1e-12)
    assert got["frobenius_product"] >= got["bound"] >= ntk_trace(model, x, masks) > 0


# -- errors -------------------------------------------------------------------------------------
def test_bad_inputs_give_clear_errors():
    model = mlp(0)
    x = torch.randn(3, 5, dtype=F64)
    with pytest.raises(PruningError, match="params must be one of"):
        ntk_trace(model, x, params="weights")
    with pytest.raises(PruningError, match="has shape"):
        ntk_trace(model, x, {"0.weight": torch.ones(5, 7, dtype=torch.bool)})
    with pytest.raises(PruningError, match="no such parameter"):
        ntk_matrix(model, x, {"9.weight": torch.ones(7, 5, dtype=torch.bool)})
    with pytest.raises(PruningError, match="chunk"):
        ntk_trace(model, x, chunk=0)
    with pytest.raises(PruningError, match="non-empty batch"):
        ntk_trace(model, torch.randn(5, dtype=F64))
    with pytest.raises(PruningError, match="non-empty batch"):
        ntk_trace(model, torch.randn(0, 5, dtype=F64))
    with pytest.raises(PruningError, match="tensor"):
        ntk_trace(model, [[0.0] * 5])
    with pytest.raises(PruningError, match="method must be one of"):
        ntk_top_eigenvalues(model, x, 2, method="power")
    with pytest.raises(PruningError, match="k must be >= 1"):
        ntk_top_eigenvalues(model, x, 0)
    with pytest.raises(PruningError, match="size 9"):
        ntk_top_eigenvalues(model, x, 10)
    with pytest.raises(PruningError, match="iters >= k"):
        ntk_top_eigenvalues(model, x, 3, method="lanczos", iters=2)
    with pytest.raises(PruningError, match="Conv/Linear"):
        px_bound(cnn(0, bias=False), torch.randn(2, 2, 6, 6, dtype=F64),
                 {"1.weight": torch.ones(4, dtype=torch.bool)})


# -- the ``pxprune ntk`` command ----------------------------------------------------------------
TINY_MODEL = '''
import torch
from torch import nn


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1, bias=False),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10, bias=False))
'''


@pytest.mark.skipif(not (DATA / "cifar10-jpeg.tar.gz").exists()
                    and not (DATA / "cifar-10-batches-py").exists(), reason="no CIFAR-10 copy")
def test_ntk_command_writes_json_plots_and_resumes(tmp_path, monkeypatch, capsys):
    from pxprune.cli import main as cli

    monkeypatch.setenv("PXPRUNE_DATA", str(DATA))
    (tmp_path / "ntk_tiny_model.py").write_text(TINY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "study"
    argv = ["ntk", "--model", "ntk_tiny_model:tiny", "--dataset", "cifar10",
            "--methods", "snip,magnitude", "--sparsities", "0.5,80%", "--n-images", "10",
            "--per-class", "2", "--top-k", "5", "--out", str(out)]
    assert cli.main(argv) == 0
    first, err = capsys.readouterr()
    assert "\r" not in err and "it/s" not in err  # stderr is not a terminal: no progress bars
    data = json.loads((out / "ntk.json").read_text())
    assert data["config"]["model"] == "ntk_tiny_model:tiny" and data["config"]["n_images"] == 10
    assert data["dense"]["ntk_size"] == 100 and len(data["dense"]["top_eigenvalues"]) == 5
    assert sorted(data["cells"]) == ["magnitude@50.0000", "magnitude@80.0000",
                                     "snip@50.0000", "snip@80.0000"]
    for key, cell in data["cells"].items():
        assert not cell["collapsed_layers"], key
        assert 0 < cell["trace_ratio"] < 1  # pruning the prunable weights removes NTK mass
        assert cell["bound_holds"] and cell["bound"] >= cell["trace"]
        assert abs(cell["density"] - (1 - cell["sparsity"])) < 0.01
        assert cell["top_eigenvalues"] == sorted(cell["top_eigenvalues"], reverse=True)
    for m in ("snip", "magnitude"):  # more pruning, less trace
        assert data["cells"][f"{m}@80.0000"]["trace"] < data["cells"][f"{m}@50.0000"]["trace"]
    for png in ("ntk.png", "ntk_spectrum.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "trace ratio" in first and "snip" in first
    assert "BatchNorm in eval mode" in first
    assert data["warnings"] == [] and "warning" not in err  # a healthy network: no warning

    # a second run resumes: nothing is recomputed, the cells are byte-identical
    before = (out / "ntk.json").read_text()
    stamps = {k: c["seconds"] for k, c in data["cells"].items()}
    assert cli.main(argv) == 0
    second = capsys.readouterr().out
    assert "0 cells to run (4 already done)" in second
    again = json.loads((out / "ntk.json").read_text())
    assert {k: c["seconds"] for k, c in again["cells"].items()} == stamps
    assert again["cells"] == json.loads(before)["cells"]

    # the same folder with another configuration is refused with a clear error
    assert cli.main([*argv[:-2], "--seed", "1", "--out", str(out)]) == 2
    assert "another configuration" in capsys.readouterr().err


def test_ntk_study_file_that_is_not_this_study_is_refused_in_one_line(tmp_path):
    from pxprune.errors import DamagedFileError, PruningError
    from pxprune.experiments.ntk_study import _open_results

    path, config = tmp_path / "ntk.json", {"model": "resnet20", "seed": 0}
    fresh = _open_results(path, config)
    assert fresh["config"] == config and fresh["cells"] == {} and fresh["dense"] is None
    path.write_text(json.dumps({**fresh, "cells": {"snip@50.0000": {"trace": 1.0}}}))
    assert _open_results(path, config)["cells"] == {"snip@50.0000": {"trace": 1.0}}
    for content, error, words in (
            ("[1, 2]", PruningError, "another configuration (None)"),  # JSON, not a study
            (json.dumps({**fresh, "config": {**config, "seed": 1}}), PruningError,
             "another configuration"),
            ('{"config": ', DamagedFileError, "is unreadable")):
        path.write_text(content)
        with pytest.raises(error, match=re.escape(words)) as caught:
            _open_results(path, config)
        assert len(str(caught.value).splitlines()) == 1 and str(path) in str(caught.value)


def test_degenerate_diagnostics_are_named():
    from pxprune.experiments.ntk_study import degenerate_warnings

    vanished = degenerate_warnings({"trace": 1.2e-9}, {"snip@98.0000": {"trace": 0.0},
                                                       "px@98.0000": {"trace": 3e-10}}, 200)
    assert len(vanished) == 2
    assert vanished[0].startswith("the dense NTK trace is 1.2e-09 over 200 outputs")
    assert "1 cell(s) have an NTK trace of exactly 0" in vanished[1]
    assert "snip@98.0000" in vanished[1] and "px@" not in vanished[1]
    assert degenerate_warnings({"trace": 35.0}, {"px@98.0000": {"trace": 2.0}}, 200) == []


def test_ntk_command_rejects_unknown_method(tmp_path, capsys):
    from pxprune.cli import main as cli

    assert cli.main(["ntk", "--methods", "px,nosuch", "--out", str(tmp_path)]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_paper_sparsities():
    from pxprune.schedule import parse_sparsities

    grid = parse_sparsities("paper")
    assert len(grid) == 9 and abs(grid[0] - 0.36) < 1e-12 and abs(grid[-1] - 0.98198) < 1e-5
    assert parse_sparsities("90%,0.5") == [0.9, 0.5]


def test_no_warnings_on_exact_path():
    model = mlp(0)
    x = torch.randn(2, 5, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ntk_top_eigenvalues(model, x, 2, method="exact")
