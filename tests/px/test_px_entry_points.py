"""Method specs (``px[variant=bound]``) at every entry point, and folders written when ``px``
meant the bound are never resumed or reused under the new default."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import SHARED_DATA

from pxprune import Masks, PruningError
from pxprune.cli.main import main
from pxprune.experiments.config import RunConfig
from pxprune.experiments.run import run_experiment
from pxprune.methods.spec import resolved_spec

DATA = SHARED_DATA


def test_resolved_spec_writes_out_the_default():
    assert resolved_spec("px") == "px[variant=cvpr2024]"
    assert resolved_spec("px[variant=bound]") == "px[variant=bound]"
    assert resolved_spec("px", legacy=True) == "px[variant=bound]"  # what px meant before
    assert resolved_spec("px[variant=paper]", legacy=True) == "px[variant=bound]"
    assert resolved_spec("px[variant=cvpr2024]", legacy=True) == "px[variant=cvpr2024]"
    assert resolved_spec("snip[scope=layer]") == "snip[scope=layer]"


def _prune_argv(data_file: str, model_spec: str, out: Path, method: str) -> list[str]:
    return ["prune", "--model", model_spec, "--data", data_file, "--per-class", "4",
            "--method", method, "--sparsity", "0.5", "--rounds", "2", "--no-progress",
            "--out", str(out)]


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_prune_command_takes_specs_and_records_the_resolved_method(data_file, model_spec,
                                                                    tmp_path, capsys):
    out = tmp_path / "bound"
    assert main(_prune_argv(data_file, model_spec, out, "px[variant=bound,bn=batch]")) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["resolved_method"] == "px[bn=batch,variant=bound]"
    assert Masks.load(out / "masks.safetensors").density() == pytest.approx(0.5, abs=0.01)

    plain = tmp_path / "plain"
    assert main(_prune_argv(data_file, model_spec, plain, "px")) == 0
    assert json.loads((plain / "config.json").read_text())["resolved_method"] == (
        "px[variant=cvpr2024]")

    # a folder pruned when px meant the bound (no resolved method recorded) is not reused
    config = json.loads((plain / "config.json").read_text())
    del config["resolved_method"]
    (plain / "config.json").write_text(json.dumps(config))
    before = _digest(plain)
    capsys.readouterr()
    assert main(_prune_argv(data_file, model_spec, plain, "px")) == 2
    err = capsys.readouterr().err.strip()
    assert "another configuration" in err and "resolved_method" in err and "\n" not in err
    assert _digest(plain) == before

    assert main(_prune_argv(data_file, model_spec, tmp_path / "bad", "px[colour=red]")) == 2
    assert "px has no option colour" in capsys.readouterr().err


def _legacy(out: Path) -> None:
    """Make a run folder look as it did before the resolved method was recorded."""
    config = json.loads((out / "config.json").read_text())
    config.pop("resolved_method")
    (out / "config.json").write_text(json.dumps(config))


def test_a_cell_scored_under_the_old_default_is_refused(data_file, model_spec, tmp_path):
    cfg = RunConfig(model=model_spec, dataset=data_file, method="px", sparsity=0.5, rounds=2,
                    per_class=4, recipe="cpu_small", epochs=1, batch_size=8, lr=0.05,
                    holdout=0.25)
    summary = run_experiment(cfg, tmp_path / "cell", progress=False, log=lambda m: None)
    assert summary["config"]["resolved_method"] == "px[variant=cvpr2024]"
    # finished, then read back: still the same method, so it is "already finished"
    again = run_experiment(cfg, tmp_path / "cell", progress=False, log=lambda m: None)
    assert again == summary

    _legacy(tmp_path / "cell")  # as if written when px meant the bound
    with pytest.raises(PruningError, match=r"was pruned with 'px\[variant=bound\]', but 'px' "
                                           r"now means 'px\[variant=cvpr2024\]'"):
        run_experiment(cfg, tmp_path / "cell", progress=False, log=lambda m: None)
    # an unfinished legacy cell (masks saved, training not done) is refused the same way
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tmp_path / "cell", unfinished)
    (unfinished / "summary.json").unlink()
    with pytest.raises(PruningError, match="was pruned with 'px\\[variant=bound\\]'"):
        run_experiment(cfg, unfinished, progress=False, log=lambda m: None)
    # other methods meant the same before: a legacy snip folder resumes
    snip = replace(cfg, method="snip")
    first = run_experiment(snip, tmp_path / "snip", progress=False, log=lambda m: None)
    _legacy(tmp_path / "snip")
    assert run_experiment(snip, tmp_path / "snip", progress=False, log=lambda m: None) == first


@pytest.mark.skipif(not (DATA / "cifar10-jpeg.tar.gz").exists(), reason="no CIFAR-10 copy")
def test_ntk_command_takes_specs_keyed_by_the_resolved_method(tmp_path, monkeypatch, capsys,
                                                              model_spec):
    monkeypatch.setenv("PXPRUNE_DATA", str(DATA))
    out = tmp_path / "ntk"
    argv = ["ntk", "--model", model_spec, "--dataset", "cifar10", "--methods",
            "px[variant=bound,rounds=2],px[rounds=2]", "--sparsities", "0.5", "--n-images", "10",
            "--per-class", "1", "--top-k", "2", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    cells = json.loads((out / "ntk.json").read_text())["cells"]
    assert sorted(cells) == ["px[rounds=2,variant=bound]@50.0000",
                             "px[rounds=2,variant=cvpr2024]@50.0000"]
    assert all(c["rounds"] == 2 for c in cells.values())


def test_a_resumed_sweep_refuses_cells_of_the_old_default(tmp_path, capsys):
    """A sweep folder whose px cells were written when px meant the bound: re-running the
    sweep stops before any cell runs, with one line; the folder is left as it was."""
    from helpers import sweep_args, write_data

    data = tmp_path / "tiny.pt"
    write_data(data)
    out = tmp_path / "sweep"
    argv = sweep_args(data, out, methods="px[rounds=2],random", seeds="0")
    assert main(argv) == 0
    cell = next(out.glob("px+rounds=2/*/seed0"))
    config = json.loads((cell / "config.json").read_text())
    assert config["resolved_method"] == "px[rounds=2,variant=cvpr2024]"
    del config["resolved_method"]  # as written before 2026-11-30
    (cell / "config.json").write_text(json.dumps(config))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "was pruned with 'px[rounds=2,variant=bound]'" in err and "\n" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("spec, needle", [
    ("px[variant=cvpr2025]", "unknown PX variant 'cvpr2025'"),
    ("px[bn=batch]", "PX variant 'cvpr2024' takes no bn option"),
    ("px[variant=bound,bn=batched]", "unknown PX option bn 'batched'"),
    ("px[precision=float16]", "unknown PX option precision 'float16'"),
])
def test_bad_option_values_are_refused_when_planned_at_every_entry_point(
        spec, needle, data_file, model_spec, tmp_path, capsys):
    common = ["--model", model_spec, "--sparsity", "0.5"]
    for argv in (["prune", "--data", data_file, "--method", spec, *common],
                 ["run", "--dataset", data_file, "--holdout", "0.25", "--method", spec, *common],
                 ["sweep", "--model", model_spec, "--dataset", data_file, "--holdout", "0.25",
                  "--methods", f"random,{spec}", "--sparsities", "0.5", "--seeds", "0"],
                 ["ntk", "--model", model_spec, "--dataset", data_file, "--methods", spec,
                  "--sparsities", "0.5"]):
        out = tmp_path / argv[0]
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"'{spec}': {needle}" in err, err
        assert not out.exists()  # refused before a folder, a cell or a score
