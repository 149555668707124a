"""pxprune.models.weights: the one strict state-dict loader (wrapper prefixes, one-line errors
naming a few keys, safetensors and weights-only files, never unpickling)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pxprune.errors import PxpruneError, WeightsMismatchError
from pxprune.models.weights import (
    load_state_dict_strictly,
    load_weights_file,
    read_state_dict,
    strip_wrapper_prefixes,
)


def net(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "_orig_mod.module."])
def test_wrapper_prefixes_are_stripped_and_every_tensor_loads(prefix):
    src, dst = net(1), net(2)
    state = {prefix + k: v for k, v in src.state_dict().items()}
    assert load_state_dict_strictly(dst, state) == []
    assert same(src, dst)


def test_a_prefix_only_some_keys_carry_is_a_real_name_and_stays():
    state = {"module.w": torch.zeros(1), "other.w": torch.zeros(1)}
    assert strip_wrapper_prefixes(state) == state
    # the model's own keys carry it too (a submodule called "module"): kept
    own = ["module.0.weight"]
    assert list(strip_wrapper_prefixes({"module.0.weight": torch.zeros(1)}, own)) == own


def test_a_wrapped_model_takes_a_plain_state_dict():
    src, dst = net(1), net(2)
    load_state_dict_strictly(nn.DataParallel(dst), src.state_dict())
    assert same(src, dst)


def test_mismatches_are_one_line_naming_a_few_keys_of_each_kind():
    dst = net()
    state = dict(net(1).state_dict())
    del state["0.weight"]
    state["5.weight"] = torch.zeros(7, 4)
    for i in range(6):
        state[f"extra.{i}"] = torch.zeros(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as info:
        load_state_dict_strictly(dst, state, source="weights file w.pt", hint="; a hint")
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, PxpruneError)
    assert msg.startswith("weights file w.pt does not match the model Sequential: ")
    assert "missing keys ['0.weight']" in msg
    assert "unexpected keys ['extra.0', 'extra.1', 'extra.2', 'extra.3', ... 2 more]" in msg
    assert "shape mismatches ['5.weight: file (7, 4) vs model (3, 4)']" in msg
    assert msg.endswith("; a hint")
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # untouched


def test_skipped_keys_and_old_checkpoints_without_num_batches_tracked():
    src, dst = net(1, classes=1000), net(2, classes=3)
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    skipped = load_state_dict_strictly(dst, state, skip=("5.",))
    assert skipped == ["5.weight", "5.bias"]
    assert torch.equal(dst[0].weight, src[0].weight) and dst[5].out_features == 3


def test_files_safetensors_and_weights_only_torch(tmp_path):
    src = net(1)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}},
               tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        dst = load_weights_file(net(2), tmp_path / name)
        assert same(src, dst), name
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PxpruneError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "bad.safetensors")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(PxpruneError, match="holds a list, not a state dict"):
        read_state_dict(tmp_path / "list.pt")
    with pytest.raises(PxpruneError, match="does not exist"):
        read_state_dict(tmp_path / "none.safetensors")
    for name in ("bad.safetensors", "list.pt", "none.safetensors"):  # the hint ends each line
        with pytest.raises(PxpruneError, match="; try another file$"):
            read_state_dict(tmp_path / name, hint="try another file")
