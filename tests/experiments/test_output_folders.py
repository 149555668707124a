"""Output folders: another command's or configuration's work is refused, files are atomic."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pxprune import Masks, PruningError
from pxprune.analysis.layers import format_layer_table
from pxprune.cli.main import main
from pxprune.errors import OutputError
from pxprune.experiments.folder import claim


@pytest.fixture()
def tiny_model(tmp_path, monkeypatch) -> str:
    (tmp_path / "folder_models.py").write_text(textwrap.dedent("""
        from torch import nn

        def tiny():
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("folder_models", None)
    return "folder_models:tiny"


@pytest.fixture()
def data(tmp_path) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, images=rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
             labels=np.repeat(np.arange(3), 4))
    return str(path)


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def prune(data: str, model: str, out: Path, *extra: str) -> list[str]:
    return ["prune", "--data", data, "--model", model, "--per-class", "2", "--method", "snip",
            "--out", str(out), "--no-progress", "--device", "cpu", *extra]


def one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_prune_refuses_a_folder_of_another_pruning_and_finishes_once(data, tiny_model,
                                                                     tmp_path, capsys):
    out = tmp_path / "p"
    assert main(prune(data, tiny_model, out, "--sparsity", "0.5")) == 0
    before = hashes(out)
    capsys.readouterr()
    code = main(prune(data, tiny_model, out, "--sparsity", "0.9"))
    one_line(code, capsys.readouterr().err, "another configuration", "sparsity")
    assert hashes(out) == before
    assert main(prune(data, tiny_model, out, "--sparsity", "0.5")) == 0  # the same: done
    assert "already finished" in capsys.readouterr().out
    assert hashes(out) == before


def test_prune_refuses_another_commands_folder(data, tiny_model, tmp_path, capsys):
    run_folder = tmp_path / "r"
    run_folder.mkdir()
    (run_folder / "config.json").write_text(json.dumps({"model": "resnet20", "recipe": "x"}))
    Masks({"w": torch.ones(3, dtype=torch.bool)}).save(run_folder / "masks.safetensors")
    (run_folder / "summary.json").write_text('{"density": 1.0}')
    before = hashes(run_folder)
    code = main(prune(data, tiny_model, run_folder))
    one_line(code, capsys.readouterr().err, "pxprune run")
    assert hashes(run_folder) == before


def test_a_config_left_by_a_failed_command_blocks_nothing(data, tiny_model, tmp_path, capsys):
    out = tmp_path / "p"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"command": "prune", "sparsity": 0.1}))
    assert main(prune(data, tiny_model, out, "--sparsity", "0.5")) == 0
    assert json.loads((out / "config.json").read_text())["sparsity"] == 0.5


def test_out_naming_a_file_or_under_a_file(data, tiny_model, tmp_path, capsys):
    a_file = tmp_path / "f"
    a_file.write_text("keep me")
    code = main(prune(data, tiny_model, a_file))
    one_line(code, capsys.readouterr().err, "is a file")
    code = main(prune(data, tiny_model, a_file / "sub"))
    one_line(code, capsys.readouterr().err, "cannot create")
    assert a_file.read_text() == "keep me"


def test_disk_full_while_saving_masks_is_one_line_and_leaves_no_masks(data, tiny_model,
                                                                      tmp_path, capsys,
                                                                      monkeypatch):
    real = os.replace

    def full(src, dst):
        if str(dst).endswith("masks.safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "p"
    code = main(prune(data, tiny_model, out, "--sparsity", "0.5"))
    one_line(code, capsys.readouterr().err, "no space left")
    assert not (out / "masks.safetensors").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(os, "replace", real)  # space again: the same command finishes
    assert main(prune(data, tiny_model, out, "--sparsity", "0.5")) == 0
    assert (out / "masks.safetensors").exists()


def test_claim_refuses_work_without_a_config(tmp_path):
    (tmp_path / "sweep.json").write_text("{}")
    with pytest.raises(OutputError, match="without a config.json"):
        claim(tmp_path, "prune")
    assert claim(tmp_path / "new", "prune").is_dir()


def test_masks_load_refuses_a_file_of_float_weights(tmp_path):
    from safetensors.torch import save_file

    save_file({"0.weight": torch.randn(4, 3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(PruningError, match="float32 values, masks are bool"):
        Masks.load(tmp_path / "w.safetensors")


def test_printed_table_has_a_macs_column():
    masks = Masks({"conv.weight": torch.tensor([[True, False]]),
                   "fc.weight": torch.zeros(1, 2, dtype=torch.bool)})
    flops = {"layers": {"conv": {"kept_macs": 1234}, "fc": {"kept_macs": 0}},
             "kept_macs": 1234, "dense_macs": 5000}
    lines = format_layer_table(masks, flops).splitlines()
    assert lines[0].split() == ["layer", "shape", "kept", "total", "density", "kept_macs",
                                "warning"]
    assert "1,234" in lines[2] and "COLLAPSED" in lines[3]


def test_transfer_refuses_a_pruning_folder_before_loading_anything(data, tiny_model, tmp_path,
                                                                   capsys):
    out = tmp_path / "p"
    assert main(prune(data, tiny_model, out, "--sparsity", "0.5")) == 0
    before = hashes(out)
    capsys.readouterr()
    code = main(["transfer", "--backbone", "resnet20_a", "--dataset", "no-such-dataset",
                 "--method", "random", "--out", str(out), "--device", "cpu"])
    one_line(code, capsys.readouterr().err, "pxprune prune", "pxprune transfer")
    assert hashes(out) == before


# --- one writer per folder; what a killed writer or a foreign file leaves --------------------

HOLD_LOCK = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from pxprune.experiments.cell_lock import CellLock
    out = Path(sys.argv[1])
    with CellLock(out):
        # what a pruning that has just started leaves: its config, no work yet
        (out / "config.json").write_text(json.dumps({"command": "prune", "sparsity": 0.9}))
        print("held", flush=True)
        time.sleep(120)
""")


def run_cmd(data: str, model: str, out, *extra: str) -> list[str]:
    return ["run", "--model", model, "--dataset", data, "--holdout", "0.25", "--method",
            "snip", "--sparsity", "0.5", "--per-class", "2", "--epochs", "1", "--batch-size",
            "4", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def transfer_cmd(data: str, model: str, out) -> list[str]:
    return ["transfer", "--backbone", model, "--dataset", data, "--holdout", "0.25",
            "--train-per-class", "0", "--test-per-class", "0", "--method", "snip",
            "--sparsity", "0.5", "--per-class", "2", "--device", "cpu", "--no-progress",
            "--out", str(out)]


def ntk_cmd(model: str, out) -> list[str]:
    return ["ntk", "--model", model, "--dataset", "cifar10", "--methods", "random",
            "--sparsities", "0.5", "--n-images", "10", "--per-class", "1", "--top-k", "2",
            "--no-plots", "--no-progress", "--out", str(out)]


RESULT = {"prune": "masks.safetensors", "run": "summary.json", "transfer": "summary.json",
          "ntk": "ntk.json"}


@pytest.mark.parametrize("command", ["prune", "run", "transfer", "ntk"])
def test_a_folder_has_one_writer_and_a_dead_writers_lock_is_taken_over(command, data,
                                                                       tiny_model, tmp_path,
                                                                       capsys):
    import subprocess

    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = hashes(out)
        argv = {"prune": lambda: prune(data, tiny_model, out, "--sparsity", "0.5"),
                "run": lambda: run_cmd(data, tiny_model, out),
                "transfer": lambda: transfer_cmd(data, tiny_model, out),
                "ntk": lambda: ntk_cmd(tiny_model, out)}[command]()
        code = main(argv)
        one_line(code, capsys.readouterr().err, "being written by another pxprune process",
                 f"pid {holder.pid}")
        assert hashes(out) == before  # the other writer's config.json is left as it was
    finally:
        holder.kill()  # SIGKILL: its running.json stays behind, naming a dead pid
        holder.wait()
    assert (out / "running.json").exists()
    assert main(argv) == 0  # the stale lock is taken over
    assert (out / RESULT[command]).exists() and not (out / "running.json").exists()
    if command != "ntk":  # the only command without a config.json of its own
        assert json.loads((out / "config.json").read_text())["sparsity"] == 0.5


@pytest.mark.parametrize("command", ["prune", "run"])
def test_a_config_json_pxprune_did_not_write_is_refused_and_kept(command, data, tiny_model,
                                                                 tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"learning_rate": 0.1, "layers": [64, 64]}\n')
    before = hashes(out)
    argv = (prune(data, tiny_model, out, "--sparsity", "0.5") if command == "prune"
            else run_cmd(data, tiny_model, out))
    one_line(main(argv), capsys.readouterr().err, "config.json that pxprune did not write")
    assert hashes(out) == before


def test_an_empty_out_is_refused_not_taken_for_the_current_folder(data, tiny_model, tmp_path,
                                                                  capsys, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for argv in (prune(data, tiny_model, "", "--sparsity", "0.5"),
                 run_cmd(data, tiny_model, "")):
        one_line(main(argv), capsys.readouterr().err, "--out is empty")
    assert list(here.iterdir()) == []


def dead_pid() -> int:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("command", ["prune", "run"])
def test_temporary_files_of_killed_writers_are_removed_when_the_folder_is_opened(
        command, data, tiny_model, tmp_path):
    import subprocess

    out = tmp_path / "o"
    out.mkdir()
    gone = dead_pid()
    stale = [out / f".checkpoint.pt.{gone}.tmp", out / f".masks.safetensors.{gone}.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * (1 << 20))  # what kill -9 during a write leaves
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = out / f".notes.txt.{live.pid}.tmp"  # a live writer's file is never touched
        alive.write_bytes(b"x")
        user = out / ".my.123.tmpfile"
        user.write_bytes(b"y")
        argv = (prune(data, tiny_model, out, "--sparsity", "0.5") if command == "prune"
                else run_cmd(data, tiny_model, out))
        assert main(argv) == 0
        assert not any(p.exists() for p in stale)
        assert alive.read_bytes() == b"x" and user.read_bytes() == b"y"
    finally:
        live.kill()
        live.wait()


def test_a_file_size_limit_is_one_line_and_leaves_the_folder_intact(data, tmp_path):
    import subprocess

    out = tmp_path / "p"
    limited = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past it is EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        from pxprune.cli.main import main
        sys.exit(main(sys.argv[1:]))
    """)
    argv = ["prune", "--data", data, "--model", "resnet20", "--per-class", "2", "--method",
            "snip", "--sparsity", "0.5", "--out", str(out), "--no-progress", "--device", "cpu"]
    done = subprocess.run([sys.executable, "-c", limited, *argv], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "masks.safetensors" in done.stderr and "file too large" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "layers.csv", "layers.txt"]
    assert main(argv) == 0  # no limit: the same command finishes the folder
    assert Masks.load(out / "masks.safetensors").density() == pytest.approx(0.5, abs=1e-4)
