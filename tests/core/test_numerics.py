"""Scores are computed in full float32: TF32 is off inside pxprune.score and pxprune.prune."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_net

import pxprune
from pxprune.methods import REGISTRY, register
from pxprune.numerics import _precision_settings, exact_float32, tf32_allowed


def test_exact_float32_switches_tf32_off_and_restores_it_even_after_an_error():
    settings = _precision_settings()
    before = [getattr(obj, attr) for obj, attr in settings]
    with pytest.raises(RuntimeError, match="inside"):
        with exact_float32():
            assert not tf32_allowed()
            assert all(getattr(obj, attr) in ("ieee", False) for obj, attr in settings)
            raise RuntimeError("inside")
    assert [getattr(obj, attr) for obj, attr in settings] == before


def test_score_and_prune_run_the_method_without_tf32():
    seen: list[bool] = []

    @register("tf32probe", needs_data=False)
    def probe(model, batches, masks, *, seed=0):
        seen.append(tf32_allowed())
        params = dict(model.named_parameters())
        return {n: params[n].detach().abs() + 1e-3 * torch.rand(params[n].shape) for n in masks}

    settings = _precision_settings()
    conv = settings[0]
    saved = getattr(*conv)
    setattr(*conv, "tf32" if conv[1] == "fp32_precision" else True)  # the GPU default
    try:
        assert tf32_allowed()
        model = tiny_net()
        pxprune.score(model, "tf32probe")
        pxprune.prune(model, "tf32probe", 0.5, rounds=2, progress=False)
        assert seen == [False, False, False]
        assert tf32_allowed()  # restored for the user's own training
    finally:
        setattr(*conv, saved)
        REGISTRY.pop("tf32probe", None)


def test_ntk_diagnostics_run_without_tf32(monkeypatch):
    from pxprune.analysis import ntk

    seen: list[bool] = []
    original = ntk._jacobian

    def spy(*args, **kwargs):
        seen.append(tf32_allowed())
        return original(*args, **kwargs)

    monkeypatch.setattr(ntk, "_jacobian", spy)
    settings = _precision_settings()
    conv = settings[0]
    saved = getattr(*conv)
    setattr(*conv, "tf32" if conv[1] == "fp32_precision" else True)
    try:
        ntk.ntk_matrix(tiny_net().eval(), torch.randn(3, 3, 8, 8))
        assert seen == [False]
        assert tf32_allowed()
    finally:
        setattr(*conv, saved)


def test_the_legacy_flags_of_torch_before_2_9_are_switched_and_restored(monkeypatch):
    """torch < 2.9 has only ``allow_tf32``: the same context drives those two booleans."""
    from pxprune import numerics

    new_api = [(torch.backends.cudnn.conv, "fp32_precision"),
               (torch.backends.cuda.matmul, "fp32_precision")]
    saved = [getattr(obj, attr) for obj, attr in new_api]
    monkeypatch.setattr(numerics, "_new_api", lambda: False)
    try:
        assert [attr for _, attr in numerics._precision_settings()] == ["allow_tf32"] * 2
        torch.backends.cudnn.allow_tf32 = True
        with exact_float32():
            assert torch.backends.cudnn.allow_tf32 is False
            assert torch.backends.cuda.matmul.allow_tf32 is False
            assert not tf32_allowed()
        assert torch.backends.cudnn.allow_tf32 is True and tf32_allowed()
    finally:
        for (obj, attr), value in zip(new_api, saved, strict=True):
            setattr(obj, attr, value)


def test_first_nonfinite_names_the_first_bad_tensor_and_skips_integers():
    from pxprune.numerics import first_nonfinite

    good = [("a", torch.ones(3)), ("b", torch.zeros(2, 2, dtype=torch.float64)),
            ("steps", torch.tensor(7))]
    assert first_nonfinite(good) is None
    assert first_nonfinite([]) is None
    nan = torch.ones(4)
    nan[2] = float("nan")
    inf = torch.ones(2, dtype=torch.float64)
    inf[0] = -float("inf")
    assert first_nonfinite([*good, ("c", inf), ("d", nan)]) == "c"
    assert first_nonfinite([("d", nan), *good]) == "d"


def test_a_px_round_synchronises_a_handful_of_times_not_once_per_tensor():
    """On a GPU each bool(tensor) / .item() stalls the device: a PX round on ResNet-20 used to
    make ~155 of them (a NaN check per parameter, buffer and score); now one per check."""
    from pxprune.models import get

    torch.manual_seed(0)
    model = get("resnet20").eval()
    x = torch.randn(8, 3, 32, 32)
    calls = 0
    item, to_bool = torch.Tensor.item, torch.Tensor.__bool__

    def counted(original):
        def wrapper(self, *args):
            nonlocal calls
            calls += 1
            return original(self, *args)
        return wrapper

    try:
        torch.Tensor.item, torch.Tensor.__bool__ = counted(item), counted(to_bool)
        pxprune.score(model, "px", x)
    finally:
        torch.Tensor.item, torch.Tensor.__bool__ = item, to_bool
    n_tensors = len([*model.parameters(), *model.buffers()])
    assert n_tensors > 100
    assert calls <= 12, calls
