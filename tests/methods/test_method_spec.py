"""Method specs ``name[key=value,...]``: parsing, canonical form, folders, options in a run."""

from __future__ import annotations

import pytest
import torch

from pxprune.experiments.config import RunConfig
from pxprune.experiments.resolve import UsageError
from pxprune.experiments.run import split_method
from pxprune.experiments.sweep.grid import Cell, canonical_methods, plan_cells
from pxprune.masks import PruningError
from pxprune.methods.spec import (
    canonical,
    check_method_spec,
    folder_name,
    parse_method_spec,
    split_method_list,
)


def test_parse_values_are_typed():
    name, opts = parse_method_spec(" px[ variant = cvpr2024 , rounds=20, eps=1e-3, t=-0.5 ] ")
    assert name == "px"
    assert opts == {"variant": "cvpr2024", "rounds": 20, "eps": 0.001, "t": -0.5}
    assert isinstance(opts["rounds"], int) and isinstance(opts["eps"], float)
    assert parse_method_spec("snip") == ("snip", {})


@pytest.mark.parametrize("spec, message", [
    ("px[", "one pair of brackets"),
    ("px]variant=a", "one pair of brackets"),
    ("px[variant=a]x", "one pair of brackets"),
    ("px[[a=1]]", "one pair of brackets"),
    ("px[]", "empty brackets"),
    ("px[variant]", "not key=value"),
    ("px[=a]", "not key=value"),
    ("px[a=]", "not key=value"),
    ("px[a=1,a=2]", "given twice"),
    ("px[1a=2]", "not an identifier"),
    ("px[a=__import__('os')]", "must be a number or a word"),
    ("px[a=1;b]", "must be a number or a word"),
    ("p x", "bad method name"),
    ("[a=1]", "method name"),
    ("px[a=1e999]", "not finite"),
])
def test_bad_specs_give_clear_errors(spec, message):
    with pytest.raises(PruningError, match=message):
        parse_method_spec(spec)


def test_canonical_and_folder_are_distinct_and_safe():
    assert canonical("px[variant=cvpr2024, scope=layer]") == "px[scope=layer,variant=cvpr2024]"
    assert canonical("px[scope=layer,variant=cvpr2024]") == "px[scope=layer,variant=cvpr2024]"
    specs = ["px", "px[variant=cvpr2024]", "px[scope=layer]", "px[rounds=20]",
             "px[rounds=20.0]", "px[scope=layer,variant=cvpr2024]", "snip[scope=layer]"]
    folders = [folder_name(s) for s in specs]
    assert len(set(folders)) == len(folders)
    assert folder_name("px[variant=cvpr2024]") == "px+variant=cvpr2024"
    for f in folders:
        assert all(c.isalnum() or c in "_.-+=" for c in f), f
    for s in specs:  # the canonical form reads back to itself
        assert canonical(canonical(s)) == canonical(s)


def test_split_method_list_respects_brackets():
    assert split_method_list("px, px[variant=cvpr2024,scope=layer] ,snip,") == [
        "px", "px[variant=cvpr2024,scope=layer]", "snip"]
    with pytest.raises(PruningError, match="unbalanced"):
        split_method_list("px[variant=a,snip")
    with pytest.raises(PruningError, match="unbalanced"):
        split_method_list("px]")


def test_check_method_spec_knows_the_options():
    assert check_method_spec("px[variant=cvpr2024,scope=layer]")[1] == {
        "variant": "cvpr2024", "scope": "layer"}
    with pytest.raises(PruningError, match="unknown method 'pxx'"):
        check_method_spec("pxx[scope=layer]")
    with pytest.raises(PruningError, match="has no option colour"):
        check_method_spec("px[colour=red]")
    with pytest.raises(PruningError, match="seed"):
        check_method_spec("px[seed=3]")
    with pytest.raises(PruningError, match="rounds must be a positive integer"):
        check_method_spec("px[rounds=2.5]")
    with pytest.raises(PruningError, match="scope must be one of"):
        check_method_spec("px[scope=block]")


def test_sweep_cells_use_spec_folders():
    methods = canonical_methods(["px", "px[ variant=cvpr2024 ]", "dense"])
    assert methods == ["px", "px[variant=cvpr2024]", "dense"]
    cells = plan_cells(methods, [0.982], [0])
    assert [c.folder for c in cells] == ["px/s98.20/seed0", "px+variant=cvpr2024/s98.20/seed0",
                                         "dense/seed0"]
    assert Cell("px[scope=layer]", 0.5, 1).folder == "px+scope=layer/s50.00/seed1"
    with pytest.raises(UsageError, match="same spec twice"):
        canonical_methods(["px[scope=layer]", "px[ scope=layer ]"])
    with pytest.raises(UsageError, match="has no option"):
        canonical_methods(["px[colour=red]"])


def test_split_method_overrides_and_refusals():
    assert split_method(RunConfig(method="px[scope=layer,rounds=3]")) == (
        "px", {"scope": "layer", "rounds": 3})
    assert split_method(RunConfig(method="dense")) == ("dense", {})
    with pytest.raises(PruningError, match="takes no options"):
        split_method(RunConfig(method="dense[scope=layer]"))


def test_prune_step_passes_options(monkeypatch):
    """scope/rounds from the spec override the config; other options reach pxprune.prune."""
    import pxprune.experiments.run as P

    seen = {}

    def fake_prune(model, method, sparsity, data, **kw):
        seen.update(method=method, **kw)
        from pxprune.masks import Masks
        return Masks.ones(model)

    monkeypatch.setattr("pxprune.experiments.prune_cell.prune", fake_prune)
    monkeypatch.setattr("pxprune.experiments.run.pruning_batch",
                        lambda ds, n, seed: (torch.zeros(2, 3, 8, 8), torch.zeros(2).long()))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    cfg = RunConfig(method="px[variant=cvpr2024,scope=layer,rounds=7]", rounds=100,
                    scope="global")
    _, info = P.prune_step(cfg, model, None, "cpu", False)
    assert seen["method"] == "px" and seen["variant"] == "cvpr2024"
    assert seen["scope"] == "layer" and seen["rounds"] == 7
    assert info["method"] == "px[variant=cvpr2024,scope=layer,rounds=7]"
    seen.clear()
    P.prune_step(RunConfig(method="snip", rounds=5, scope="layer"), model, None, "cpu", False)
    assert seen["rounds"] == 5 and seen["scope"] == "layer" and "variant" not in seen


def test_report_names_and_styles_for_specs():
    from pxprune.experiments.report.names import display_name, line_style

    methods = ["px", "snip", "px[variant=cvpr2024]", "px[scope=layer]"]
    assert display_name("px[variant=cvpr2024]") == "PX [variant=cvpr2024]"
    assert display_name("ntksap") == "NTK-SAP"
    styles = [line_style(m, methods) for m in methods]
    assert styles[0][0] == styles[2][0] == styles[3][0]  # one colour per base method
    assert len({styles[0][1], styles[2][1], styles[3][1]}) == 3  # told apart by line style


def test_every_registered_method_has_a_report_name_and_its_own_colour():
    import pxprune
    from pxprune.experiments.report.names import method_color, method_display

    names = [method_display(m) for m in pxprune.METHODS]
    colours = [method_color(m) for m in pxprune.METHODS]
    assert all(colours) and len(set(colours)) == len(colours)
    assert len(set(names)) == len(names) and method_display("ntksap") == "NTK-SAP"


@pytest.mark.integration
def test_sweep_end_to_end_with_specs(tmp_path, capsys):
    """A tiny sweep with option specs: spec folders, per-layer threshold applied, report rows."""
    import json

    from helpers import sweep_args, write_data

    from pxprune.cli.main import main
    from pxprune.experiments.report.collect import collect

    data = tmp_path / "tiny.pt"
    write_data(data)
    out = tmp_path / "sweep"
    methods = "magnitude,magnitude[ scope=layer ],px[variant=cvpr2024,rounds=2]"
    assert main(sweep_args(data, out, methods=methods, seeds="0")) == 0
    layer_cell = out / "magnitude+scope=layer" / "s90.00" / "seed0"
    cfg = json.loads((layer_cell / "config.json").read_text())
    assert cfg["method"] == "magnitude[scope=layer]" and cfg["scope"] == "global"
    densities = json.loads((layer_cell / "prune.json").read_text())["layer_density"]
    assert max(densities.values()) - min(densities.values()) < 0.05  # per-layer threshold
    glob = json.loads((out / "magnitude" / "s90.00" / "seed0" / "prune.json").read_text())
    assert max(glob["layer_density"].values()) - min(glob["layer_density"].values()) > 0.05
    assert (out / "px+rounds=2+variant=cvpr2024" / "s50.00" / "seed0" / "summary.json").exists()
    result = collect(out)
    assert {r["method"] for r in result["rows"]} >= {
        "magnitude", "magnitude[scope=layer]", "px[rounds=2,variant=cvpr2024]"}
    # a bad spec is a usage error before any cell runs
    assert main(sweep_args(data, tmp_path / "bad", methods="px[variant=cvpr2024")) == 2
    assert "unbalanced '['" in capsys.readouterr().err
    assert main(sweep_args(data, tmp_path / "bad2", methods="px[colour=red]")) == 2
    assert "has no option colour" in capsys.readouterr().err
    assert not (tmp_path / "bad2" / "px+colour=red").exists()
