"""An interrupted multi-round pruning resumes from its round checkpoint, to the same masks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import pxprune.api
from pxprune import checkpoint as prune_checkpoint
from pxprune import prune
from pxprune.cli.main import main
from pxprune.masks import PruningError
from pxprune.models import get

ROUNDS = 8


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return get("resnet20", num_classes=4).eval()


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 16, 16, generator=g), torch.arange(8) % 4


def interrupt_after(monkeypatch, rounds_done: int) -> None:
    """Let ``rounds_done`` thresholds through, then raise KeyboardInterrupt (a Ctrl-C)."""
    real = pxprune.api.threshold
    calls = {"n": 0}

    def threshold(*args, **kwargs):
        if calls["n"] == rounds_done:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pxprune.api, "threshold", threshold)


def prune_interrupted(monkeypatch, path, rounds_done: int) -> None:
    """Start a PX pruning with a checkpoint at ``path`` that a Ctrl-C stops after
    ``rounds_done`` rounds."""
    x, y = data()
    with monkeypatch.context() as m:
        interrupt_after(m, rounds_done)
        with pytest.raises(KeyboardInterrupt):
            prune(small_model(), "px", 0.9, (x, y), rounds=ROUNDS, progress=False,
                  checkpoint=path)


def count_scores(monkeypatch) -> dict:
    """Count the scoring rounds ``prune`` runs from now on."""
    spec = pxprune.api.get_method("px")
    real_get, calls = pxprune.api.get_method, {"n": 0}

    def counted(*args, **kwargs):
        calls["n"] += 1
        return spec.score(*args, **kwargs)

    monkeypatch.setattr(pxprune.api, "get_method",
                        lambda m: replace(spec, score=counted) if m == "px" else real_get(m))
    return calls


def test_interrupted_schedule_resumes_to_the_same_masks(tmp_path, monkeypatch):
    monkeypatch.setattr(prune_checkpoint, "CHECKPOINT_SECONDS", 0.0)  # save after every round
    x, y = data()
    reference = prune(small_model(), "px", 0.9, (x, y), rounds=ROUNDS, progress=False)

    path = tmp_path / prune_checkpoint.FILE_NAME
    prune_interrupted(monkeypatch, path, 5)
    assert path.exists()
    saved, done = prune_checkpoint.load(path, _identity_of(path))
    assert done == 5
    assert saved.kept == round(0.1 ** (5 / ROUNDS) * saved.total)

    calls = count_scores(monkeypatch)
    model = small_model()
    resumed = prune(model, "px", 0.9, (x, y), rounds=ROUNDS, progress=False, checkpoint=path)
    assert calls["n"] == ROUNDS - 5  # only the rounds after the checkpoint were scored
    assert list(resumed) == list(reference)
    assert all(torch.equal(resumed[n], reference[n]) for n in reference)
    assert not path.exists()  # removed once the schedule is done
    # the returned masks are applied to the model
    assert all(float(p.detach()[~resumed[n]].abs().sum()) == 0.0
               for n, p in model.named_parameters() if n in resumed)


def _identity_of(path):
    """The identity stored in a checkpoint (to read it back in the test)."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["extra"])
    return {k: v for k, v in meta.items() if k != "done_rounds"}


@pytest.mark.parametrize("change", ["seed", "sparsity", "data", "weights"])
def test_a_checkpoint_of_another_pruning_is_refused(tmp_path, monkeypatch, change):
    monkeypatch.setattr(prune_checkpoint, "CHECKPOINT_SECONDS", 0.0)
    path = tmp_path / "rounds.safetensors"
    prune_interrupted(monkeypatch, path, 3)
    x, y = data()
    model, sparsity, seed = small_model(), 0.9, 0
    if change == "seed":
        seed = 1
    elif change == "sparsity":
        sparsity = 0.8
    elif change == "data":
        x = x.flip(0)
        y = y.flip(0)
        x[0, 0, 0, 0] += 1.0
    else:
        with torch.no_grad():
            model.fc.weight.mul_(2.0)
    with pytest.raises(PruningError, match="belongs to another pruning"):
        prune(model, "px", sparsity, (x, y), rounds=ROUNDS, seed=seed, progress=False,
              checkpoint=path)


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "rounds.safetensors"
    path.write_bytes(b"not a safetensors file")
    x, y = data()
    with pytest.raises(PruningError, match="cannot read the pruning checkpoint"):
        prune(small_model(), "px", 0.9, (x, y), rounds=ROUNDS, progress=False, checkpoint=path)


def test_only_multi_round_schedules_write_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(prune_checkpoint, "CHECKPOINT_SECONDS", 0.0)
    saved, real_save = [], prune_checkpoint.save
    monkeypatch.setattr(prune_checkpoint, "save",
                        lambda path, masks, done, ident: saved.append(done) or real_save(
                            path, masks, done, ident))
    x, y = data()
    path = tmp_path / "rounds.safetensors"
    prune(small_model(), "snip", 0.9, (x, y), progress=False, checkpoint=path)
    assert saved == []
    prune(small_model(), "px", 0.9, (x, y), rounds=ROUNDS, progress=False, checkpoint=path)
    assert saved == list(range(1, ROUNDS))  # after every round but the last
    assert not path.exists()


@pytest.mark.integration
def test_prune_command_resumes_after_an_interruption(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prune_checkpoint, "CHECKPOINT_SECONDS", 0.0)
    images = (torch.rand(40, 3, 16, 16) * 255).to(torch.uint8)
    data_file = tmp_path / "d.pt"
    torch.save({"images": images, "labels": torch.arange(40) % 4}, data_file)
    out = tmp_path / "run"
    args = ["prune", "--model", "resnet20", "--data", str(data_file), "--per-class", "2",
            "--method", "px", "--sparsity", "0.9", "--rounds", str(ROUNDS), "--out", str(out),
            "--no-progress"]
    with monkeypatch.context() as m:
        interrupt_after(m, 4)
        assert main(args) == 130  # "interrupted; re-run the same command to resume"
    assert "re-run the same command" in capsys.readouterr().err
    assert (out / prune_checkpoint.FILE_NAME).exists()
    calls = count_scores(monkeypatch)
    assert main(args) == 0
    assert calls["n"] == ROUNDS - 4
    assert not (out / prune_checkpoint.FILE_NAME).exists()
    assert (out / "masks.safetensors").exists()
