"""A new method is one file (plus its name in ``methods._MODULES``): registered once, it appears
in METHODS, the CLI help, a sweep and its report with its own display name and colour."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

import pxprune
from pxprune.methods import REGISTRY

TOY = textwrap.dedent('''
    """A toy score: the weight's magnitude plus one (only to show how a method is added)."""
    from pxprune.methods import register


    @register("toyscore", needs_data=False, display_name="ToyScore", color="#123456")
    def score(model, batches, masks, *, seed=0, offset=1.0):
        params = dict(model.named_parameters())
        return {n: params[n].detach().abs().double() + offset for n in masks}
''')


@pytest.mark.integration
def test_a_method_from_one_file_reaches_every_surface(tmp_path, monkeypatch, capsys):
    from helpers import sweep_args, write_data

    from pxprune.cli.main import main
    from pxprune.experiments.report.collect import collect
    from pxprune.experiments.report.names import display_name, line_style

    (tmp_path / "toy_method.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("toy_method", None)
    try:
        importlib.import_module("toy_method")
        assert "toyscore" in pxprune.METHODS and REGISTRY["toyscore"].display_name == "ToyScore"

        try:
            main(["prune", "--help"])
        except SystemExit:
            pass
        assert "toyscore" in capsys.readouterr().out

        data = tmp_path / "tiny.pt"
        write_data(data)
        out = tmp_path / "sweep"
        assert main(sweep_args(data, out, methods="toyscore[offset=2.0],random", seeds="0")) == 0
        capsys.readouterr()
        rows = collect(out)["rows"]
        assert "toyscore[offset=2.0]" in {r["method"] for r in rows}
        assert display_name("toyscore[offset=2.0]") == "ToyScore [offset=2.0]"
        assert line_style("toyscore", ["toyscore", "random"])[0] == "#123456"
        assert main(["report", str(out)]) == 0
        printed = capsys.readouterr().out
        written = "".join(p.read_text() for p in out.glob("*.md"))
        assert "ToyScore" in printed + written
    finally:
        REGISTRY.pop("toyscore", None)
        sys.modules.pop("toy_method", None)
    assert "toyscore" not in pxprune.METHODS
