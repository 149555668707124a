"""Tests of the trainer's precision and memory format: bf16 autocast on CPU, channels_last."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from helpers import Stop, random_masks, stop_after, synthetic, tiny_net

from pxprune.cli.common import add_training_args, config_from_args
from pxprune.training.precision import cpu_has_bf16, resolve_channels_last, resolve_precision
from pxprune.training.recipes import Recipe, get_recipe
from pxprune.training.train import train

RECIPE = Recipe(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, epochs=2,
                batch_size=16, schedule="onecycle", milestones=())


@pytest.fixture(scope="module")
def data():
    return synthetic(96, seed=1), synthetic(40, seed=2)


def _train(tmp_path, data, name, **recipe_fields):
    model = tiny_net()
    masks = random_masks(model, 0.3, 3)
    recipe = Recipe(**{**RECIPE.to_dict(), "milestones": (), **recipe_fields})
    summary = train(model, masks, data[0], data[1], recipe, out_dir=tmp_path / name,
                    progress=False, log=None, keep_checkpoint=True)
    return model, masks, summary


def test_bf16_channels_last_keeps_masks_zero_and_fp32_state(tmp_path, data):
    model, masks, summary = _train(tmp_path, data, "bf16", precision="bf16", channels_last=True)
    assert (summary["precision"], summary["memory_format"]) == ("bf16", "channels_last")
    assert summary["eval_precision"] == "fp32"
    params = dict(model.named_parameters())
    for name, m in masks.items():
        p = params[name].detach()
        assert torch.count_nonzero(p[~m]) == 0, name  # exactly zero after bf16 steps
        assert torch.count_nonzero(p[m]) == int(m.sum()), name
    assert all(p.dtype == torch.float32 for p in model.parameters())
    conv = params["0.weight"]
    assert conv.is_contiguous(memory_format=torch.channels_last)
    ckpt = torch.load(tmp_path / "bf16" / "checkpoint.pt", weights_only=True)
    state = ckpt["optimizer"]["state"]
    bufs = [s["momentum_buffer"] for s in state.values()]
    assert len(bufs) == len(params) and all(b.dtype == torch.float32 for b in bufs)
    assert (ckpt["precision"], ckpt["memory_format"]) == ("bf16", "channels_last")
    lines = [json.loads(s) for s in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]  # it learns in bf16


def test_bf16_really_trains_in_bf16_and_fp32_nchw_stays_as_before(tmp_path, data):
    bf, _, s_bf = _train(tmp_path, data, "bf", precision="bf16", channels_last=False)
    fp, _, s_fp = _train(tmp_path, data, "fp", precision="fp32", channels_last=False)
    cl, _, s_cl = _train(tmp_path, data, "cl", precision="fp32", channels_last=True)
    assert s_fp["precision"] == "fp32" and s_fp["memory_format"] == "contiguous"
    w = "0.weight"
    diff_bf = (bf.state_dict()[w] - fp.state_dict()[w]).abs().max().item()
    diff_cl = (cl.state_dict()[w] - fp.state_dict()[w]).abs().max().item()
    assert diff_bf > 1e-4  # bf16 rounding changed the trajectory: autocast was on
    assert diff_cl < diff_bf  # the memory format alone changes only summation order
    assert not fp.state_dict()[w].is_contiguous(memory_format=torch.channels_last)


def test_resume_adopts_the_checkpoints_precision_unless_another_is_asked(tmp_path, data):
    model = tiny_net()
    masks = random_masks(model, 0.3, 3)
    bf16 = Recipe(**{**RECIPE.to_dict(), "milestones": (), "precision": "bf16"})
    with pytest.raises(Stop):
        train(model, masks, data[0], data[1], bf16, out_dir=tmp_path / "r", progress=False,
              log=None, callback=stop_after(1))
    fp32 = Recipe(**{**bf16.to_dict(), "milestones": (), "precision": "fp32"})
    with pytest.raises(ValueError, match="precision 'bf16'"):
        train(tiny_net(), masks, data[0], data[1], fp32, out_dir=tmp_path / "r",
              progress=False, log=None)
    auto = Recipe(**{**bf16.to_dict(), "milestones": (), "precision": "auto"})
    messages: list[str] = []
    summary = train(tiny_net(), masks, data[0], data[1], auto, out_dir=tmp_path / "r",
                    progress=False, log=messages.append)
    assert summary["precision"] == "bf16"
    assert any("resuming after epoch 1/2 (bf16" in m for m in messages)


CPUINFO_X86 = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx512f avx512bw {}\n"


def test_cpu_bf16_detection_reads_the_named_flags():
    assert cpu_has_bf16(CPUINFO_X86.format("avx512_bf16")) is torch.backends.mkldnn.is_available()
    assert cpu_has_bf16(CPUINFO_X86.format("amx_bf16 amx_tile")) is (
        torch.backends.mkldnn.is_available())
    assert cpu_has_bf16(CPUINFO_X86.format("avx512_vnni")) is False  # AVX-512 alone: emulated
    assert cpu_has_bf16("") is False


def test_resolve_precision_and_memory_format():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda, amp=True, amp_dtype="float16") == "fp16"
    assert resolve_precision("auto", cuda, amp=True, amp_dtype="bfloat16") == "bf16"
    assert resolve_precision("auto", cuda, amp=False) == "fp32"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="needs CUDA"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision"):
        Recipe(precision="int8")
    assert resolve_channels_last(None, cpu, "bf16") is True
    assert resolve_channels_last(None, cpu, "fp32") is False  # see resolve_channels_last
    assert resolve_channels_last(None, cuda, "fp16") is False
    assert resolve_channels_last(False, cpu) is False


def test_precision_flag_reaches_the_recipe(tmp_path):
    parser = argparse.ArgumentParser()
    add_training_args(parser)
    for flag, want in ((["--precision", "fp32"], "fp32"), ([], "auto")):
        ns = parser.parse_args([*flag, "--method", "dense", "--device", "cpu"])
        cfg = config_from_args(ns)
        recipe = get_recipe(cfg.recipe, **cfg.recipe_overrides())
        assert recipe.precision == want
        assert json.loads(json.dumps(recipe.to_dict()))["precision"] == want


def test_fp16_skipped_steps_do_not_warn_about_the_schedule():
    """GradScaler skips overflowed fp16 steps; torch's 'scheduler before optimizer' warning is
    then a false alarm and is silenced, for fp16 only."""
    import warnings

    from pxprune.training.optim import step_schedule as _step_schedule

    def fresh():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        return torch.optim.lr_scheduler.StepLR(opt, step_size=1)  # no optimiser step taken

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _step_schedule(fresh(), skips_allowed=True)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _step_schedule(fresh(), skips_allowed=False)
    assert [w for w in caught if "lr_scheduler.step()" in str(w.message)]
