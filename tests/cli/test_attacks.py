"""The CLI under hostile and broken input: one line on stderr, exit 2, the folder's files
unchanged, and no code from a file ever runs."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pxprune.cli.main import main

MODULE = "attack_models"


class Payload:
    """Unpickling this creates ``marker``: proof that loading a file ran its code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path(self.marker).touch, ()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A model module, a data file, and one finished ``pxprune run`` folder."""
    root = tmp_path_factory.mktemp("attacks")
    (root / f"{MODULE}.py").write_text(textwrap.dedent("""
        from torch import nn

        def tiny():
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    """))
    sys.path.insert(0, str(root))
    sys.modules.pop(MODULE, None)
    rng = np.random.default_rng(0)
    data = root / "d.npz"
    np.savez(data, images=rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8),
             labels=np.repeat(np.arange(3), 8))
    marker = root / "marker"
    evil = root / "evil.pt"
    torch.save({"state_dict": {"0.weight": torch.zeros(4, 3, 3, 3)}, "x": Payload(marker)}, evil)
    finished = root / "finished"
    assert main(run_cmd(str(data), finished)) == 0
    yield {"root": root, "data": str(data), "finished": finished, "evil": evil,
           "marker": marker}
    sys.path.remove(str(root))


def run_cmd(data: str, out: Path, *extra: str) -> list[str]:
    return ["run", "--model", f"{MODULE}:tiny", "--dataset", data, "--holdout", "0.25",
            "--method", "magnitude", "--sparsity", "0.5", "--per-class", "2", "--epochs", "1",
            "--batch-size", "6", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def prune_cmd(data: str, out: Path, *extra: str) -> list[str]:
    return ["prune", "--model", f"{MODULE}:tiny", "--data", data, "--method", "magnitude",
            "--sparsity", "0.5", "--per-class", "2", "--device", "cpu", "--no-progress",
            "--out", str(out), *extra]


def hashes(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def attack(world, argv: list[str], folder: Path, capsys, *needles: str) -> str:
    """Run ``argv``: exit 2, one line naming ``needles``, ``folder`` unchanged, no marker."""
    before = hashes(folder)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert hashes(folder) == before
    assert not world["marker"].exists()
    return err


def test_a_finished_run_folder_as_out(world, capsys):
    done = world["finished"]
    attack(world, prune_cmd(world["data"], done), done, capsys, "pxprune run")
    attack(world, run_cmd(world["data"], done, "--seed", "1"), done, capsys,
           "another configuration", "seed 0 there, 1 now")
    attack(world, ["transfer", "--backbone", "resnet20_a", "--dataset", world["data"],
                   "--out", str(done)], done, capsys, "pxprune run")


def test_a_pickle_payload_as_checkpoint_and_as_weights(world, tmp_path, capsys):
    cell = tmp_path / "cell"
    shutil.copytree(world["finished"], cell)
    for name in ("summary.json", "model.pt"):
        (cell / name).unlink()
    shutil.copy(world["evil"], cell / "checkpoint.pt")  # a crafted checkpoint in a run folder
    attack(world, run_cmd(world["data"], cell), cell, capsys, "checkpoint", "could run code")
    out = tmp_path / "w"
    attack(world, prune_cmd(world["data"], out, "--weights", str(world["evil"])), out, capsys,
           "cannot read weights")
    attack(world, ["transfer", "--backbone", "resnet20_a", "--dataset", world["data"],
                   "--weights", str(world["evil"]), "--out", str(out), "--device", "cpu",
                   "--no-progress"], out, capsys)


def test_a_truncated_checkpoint(world, tmp_path, capsys):
    cell = tmp_path / "cell"
    shutil.copytree(world["finished"], cell)
    for name in ("summary.json", "model.pt"):
        (cell / name).unlink()
    whole = tmp_path / "whole.pt"
    torch.save({"epoch": 1, "model": {"w": torch.arange(5000.0)}}, whole)
    (cell / "checkpoint.pt").write_bytes(whole.read_bytes()[:3000])
    attack(world, run_cmd(world["data"], cell), cell, capsys, "truncated or corrupt",
           "restart training")


def test_labels_out_of_range_and_wrong_channels(world, tmp_path, capsys):
    rng = np.random.default_rng(1)
    wide = tmp_path / "wide.npz"
    np.savez(wide, images=rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8),
             labels=np.repeat(np.arange(10), 2))
    out = tmp_path / "o"
    attack(world, prune_cmd(str(wide), out, "--num-classes", "3"), out, capsys,
           "labels go up to 9", "3 outputs")
    for channels in (1, 4):
        odd = tmp_path / f"c{channels}.npz"
        np.savez(odd, images=rng.integers(0, 256, (6, 8, 8, channels), dtype=np.uint8),
                 labels=np.arange(6) % 3)
        attack(world, prune_cmd(str(odd), out), out, capsys, f"{channels} channel(s)")
    assert not out.exists() or not any(out.iterdir())


def test_an_unwritable_out(world, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    attack(world, prune_cmd(world["data"], a_file), tmp_path, capsys, "is a file")
    attack(world, prune_cmd(world["data"], a_file / "sub"), tmp_path, capsys, "cannot create")
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            attack(world, prune_cmd(world["data"], locked / "out"), locked, capsys)
        finally:
            locked.chmod(0o755)


def test_a_sparsity_that_keeps_nothing(world, tmp_path, capsys):
    out = tmp_path / "o"
    attack(world, prune_cmd(world["data"], out, "--sparsity", "0.99999"), out, capsys,
           "keeps 0 of")
    attack(world, run_cmd(world["data"], out, "--sparsity", "0.99999"), out, capsys,
           "keeps 0 of")


def test_wrong_channels_through_run_and_a_full_disk_while_checkpointing(world, tmp_path, capsys,
                                                                        monkeypatch):
    rng = np.random.default_rng(2)
    grey = tmp_path / "grey.npz"
    np.savez(grey, images=rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8),
             labels=np.arange(12) % 3)
    out = tmp_path / "g"
    attack(world, run_cmd(str(grey), out), out, capsys, "1 channel(s)", "expects 3")
    assert not out.exists()  # a failed start leaves no folder behind

    real = os.replace

    def full(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "full"
    capsys.readouterr()
    code = main(run_cmd(world["data"], out))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no space left" in err, err
    assert not (out / "checkpoint.pt").exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(os, "replace", real)  # space again: the same command finishes
    assert main(run_cmd(world["data"], out)) == 0


def test_the_finished_folder_still_reads_back(world, capsys):
    """After every attack the finished run is intact and says so."""
    assert main(run_cmd(world["data"], world["finished"])) == 0
    assert "already finished" in capsys.readouterr().out
    summary = json.loads((world["finished"] / "summary.json").read_text())
    assert summary["density"] == pytest.approx(0.5, abs=0.02)


def test_sweep_and_ntk_refuse_a_run_folder(world, capsys):
    done = world["finished"]
    attack(world, ["sweep", "--model", f"{MODULE}:tiny", "--dataset", world["data"],
                   "--holdout", "0.25", "--methods", "random", "--sparsities", "0.5",
                   "--seeds", "0", "--epochs", "1", "--device", "cpu", "--no-progress",
                   "--out", str(done)], done, capsys, "pxprune run", "pxprune sweep")
    attack(world, ["ntk", "--model", f"{MODULE}:tiny", "--dataset", "cifar10", "--methods",
                   "random", "--sparsities", "0.5", "--out", str(done)], done, capsys,
           "pxprune run", "pxprune ntk")


def test_a_model_built_on_the_meta_device(world, tmp_path, capsys, monkeypatch):
    (tmp_path / "meta_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def meta():
            with torch.device("meta"):
                return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("meta_models", None)
    out = tmp_path / "o"
    argv = prune_cmd(world["data"], out)
    argv[argv.index("--model") + 1] = "meta_models:meta"
    attack(world, argv, out, capsys, "'meta' device")
