"""The CUDA paths, run only where a GPU is visible (CI has none; the device sessions run them):
scores in full float32, every method on the GPU, training that resumes there."""

from __future__ import annotations

import pytest
import torch
from helpers import Stop, random_masks, stop_after, synthetic, tiny_net

import pxprune
from pxprune.models import get
from pxprune.training.recipes import Recipe
from pxprune.training.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

RECIPE = Recipe(lr=0.05, momentum=0.9, weight_decay=5e-3, epochs=3, batch_size=16,
                milestones=(2,), eval_batch_size=32, precision="fp32", channels_last=False)


def _relative_error(a: dict, b: dict) -> float:
    flat_a = torch.cat([a[n].double().cpu().flatten() for n in sorted(a)])
    flat_b = torch.cat([b[n].double().cpu().flatten() for n in sorted(b)])
    return float((flat_a - flat_b).abs().max() / flat_b.abs().max())


def _resnet20_and_images(n: int = 20) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = get("resnet20").eval()
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, x


@pytest.mark.parametrize("method", ["px", "px[variant=bound]"])
def test_px_on_cuda_matches_float64_on_cpu(method):
    model, x = _resnet20_and_images()
    reference = pxprune.score(model, method, x, precision="float64")
    on_gpu = pxprune.score(model.cuda(), method, x.cuda())
    error = _relative_error(on_gpu, reference)
    assert error < 1e-4, error  # float32 on the CPU: 1e-5; TF32 would give about 1e-3


@pytest.mark.parametrize("method", sorted(set(pxprune.METHODS) - {"imp"}))
def test_every_method_prunes_on_cuda(method):
    model, x = _resnet20_and_images()
    model = model.cuda()
    y = torch.arange(len(x)).remainder(10).cuda()
    masks = pxprune.prune(model, method, 0.9, [(x.cuda(), y)], rounds=2, progress=False)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(0.1 * total)
    params = dict(model.named_parameters())
    for name, m in masks.items():
        assert params[name].is_cuda
        assert torch.count_nonzero(params[name].detach()[~m.to(params[name].device)]) == 0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_training_resumes_on_cuda(tmp_path, precision):
    recipe = Recipe.from_dict({**RECIPE.to_dict(), "precision": precision})
    train_set, test_set = synthetic(96, seed=1), synthetic(40, seed=2)
    masks = random_masks(tiny_net(), 0.3, 3)
    full = tiny_net()
    s_full = train(full, masks, train_set, test_set, recipe, out_dir=tmp_path / "full",
                   device="cuda", progress=False, log=None)
    with pytest.raises(Stop):
        train(tiny_net(), masks, train_set, test_set, recipe, out_dir=tmp_path / "cut",
              device="cuda", progress=False, log=None, callback=stop_after(1))
    messages: list[str] = []
    resumed = tiny_net(seed=123)
    s_cut = train(resumed, masks, train_set, test_set, recipe, out_dir=tmp_path / "cut",
                  device="cuda", progress=False, log=messages.append)
    assert any("resuming after epoch 1/3" in m for m in messages)
    a, b = full.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k
    assert abs(s_cut["final_test_acc"] - s_full["final_test_acc"]) <= 100 / 40 + 1e-9
    params = dict(resumed.named_parameters())
    for name, m in masks.items():
        assert torch.count_nonzero(params[name].detach().cpu()[~m]) == 0


@pytest.mark.parametrize("method, rounds, allowed", [("magnitude", 1, 0), ("px", 3, 0.001)])
def test_prune_on_cuda_keeps_the_weights_the_cpu_keeps(method, rounds, allowed):
    """The GPU's scores reach the threshold in one device-to-host copy a round (api._on_cpu):
    the masks match the CPU's (magnitude exactly, PX up to float32 summation order)."""
    model, x = _resnet20_and_images()
    on_cpu = pxprune.prune(model, method, 0.95, x, rounds=rounds, progress=False)
    model, x = _resnet20_and_images()
    on_gpu = pxprune.prune(model.cuda(), method, 0.95, x.cuda(), rounds=rounds, progress=False)
    differ = sum(int((on_cpu[n] != on_gpu[n].cpu()).sum()) for n in on_cpu) // 2
    assert on_gpu.kept == on_cpu.kept
    assert differ <= allowed * on_cpu.kept, differ
