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
