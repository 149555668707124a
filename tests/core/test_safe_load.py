"""No user-reachable file is unpickled with code: weights_only everywhere, one-line errors."""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch
from helpers import SHARED_DATA
from torch import nn

from pxprune.data import ImageDataset
from pxprune.errors import FileFormatError, PxpruneError
from pxprune.io import load_tensors
from pxprune.models.cifar_resnet import cifar_resnet, load_cifar_pretrained
from pxprune.training.recipes import Recipe
from pxprune.training.train import train
from pxprune.transfer.backbones import _read_state

SHARED = SHARED_DATA / "pretrained"


class Payload:
    """Unpickling this object would create ``marker``: proof that a file ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path(self.marker).touch, ()


def payload_file(tmp_path: Path, name: str = "evil.pt") -> tuple[Path, Path]:
    """A torch.save'd state_dict-looking file with a code-running object inside, and its marker."""
    marker = tmp_path / "marker"
    path = tmp_path / name
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "extra": Payload(marker)}, path)
    return path, marker


def test_a_payload_is_refused_by_every_loader_and_runs_nothing(tmp_path):
    path, marker = payload_file(tmp_path)
    with pytest.raises(FileFormatError, match="could run code"):
        load_tensors(path, "weights")
    with pytest.raises(PxpruneError, match="could run code"):
        _read_state(path)  # pxprune transfer --weights
    with pytest.raises(PxpruneError, match="could run code"):
        load_cifar_pretrained(cifar_resnet(20), path)
    assert not marker.exists()


def test_truncated_and_missing_files_are_one_line_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(10_000.0)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FileFormatError, match="truncated or corrupt") as info:
        load_tensors(cut, "the checkpoint", hint="delete it")
    assert "\n" not in str(info.value) and str(info.value).endswith("delete it")
    with pytest.raises(FileFormatError, match="does not exist"):
        load_tensors(tmp_path / "nope.pt", "weights")
    assert torch.equal(load_tensors(good, "weights")["w"], torch.arange(10_000.0))


@pytest.mark.skipif(not (SHARED / "resnet20-12fca82f.th").exists(), reason="no shared weights")
def test_the_shared_resnet_th_files_still_load():
    model = load_cifar_pretrained(cifar_resnet(20, shortcut="pad"),
                                  SHARED / "resnet20-12fca82f.th")
    blob = torch.load(SHARED / "resnet20-12fca82f.th", map_location="cpu", weights_only=True)
    assert torch.equal(model.conv1.weight, blob["state_dict"]["module.conv1.weight"])


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def _data() -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(16) % 2, ["a", "b"], (0.5,) * 3, (0.25,) * 3, "t")


class Stop(Exception):
    pass


def _stop(record):
    raise Stop


def test_training_checkpoints_hold_only_tensors_and_plain_values(tmp_path):
    data = _data()
    recipe = Recipe(lr=0.01, epochs=2, batch_size=8, milestones=())
    with pytest.raises(Stop):
        train(_tiny(), None, data, None, recipe, out_dir=tmp_path / "r", progress=False,
              log=None, callback=_stop)
    ckpt = tmp_path / "r" / "checkpoint.pt"
    torch.load(ckpt, map_location="cpu", weights_only=True)  # would raise on a numpy array
    good = ckpt.read_bytes()

    path, marker = payload_file(tmp_path)
    ckpt.write_bytes(path.read_bytes())
    with pytest.raises(FileFormatError, match="could run code"):
        train(_tiny(), None, data, None, recipe, out_dir=tmp_path / "r", progress=False, log=None)
    assert not marker.exists()

    ckpt.write_bytes(good[: len(good) // 3])
    with pytest.raises(FileFormatError, match="truncated or corrupt.*restart training"):
        train(_tiny(), None, data, None, recipe, out_dir=tmp_path / "r", progress=False, log=None)

    ckpt.write_bytes(good)  # the real one resumes
    messages: list[str] = []
    train(_tiny(), None, data, None, recipe, out_dir=tmp_path / "r", progress=False,
          log=messages.append)
    assert any("resuming after epoch 1/2" in m for m in messages)
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2
