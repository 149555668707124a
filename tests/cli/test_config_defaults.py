"""Every command's option defaults are its configuration's (experiments/config.py), the one
place defaults live; prune and ntk options map one to one onto their configuration."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from pxprune.cli.main import build_parser
from pxprune.experiments.config import (
    NtkConfig,
    PruneConfig,
    RunConfig,
    TransferConfig,
    defaults_of,
)

CONFIGS = {"prune": PruneConfig, "run": RunConfig, "transfer": TransferConfig,
           "ntk": NtkConfig}
# None in the parser, resolved when the command runs: run's recipe by --device
# (config.default_recipe: RunConfig's, or cpu_small on the CPU)
RESOLVED_LATER = {("run", "recipe")}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_option_defaults_are_the_configuration_defaults(command):
    config = CONFIGS[command]
    defaults = defaults_of(config)
    p = _subparser(command)
    checked = 0
    for action in p._actions:
        if action.dest in defaults and (command, action.dest) not in RESOLVED_LATER:
            assert action.default == defaults[action.dest], (command, action.dest)
            checked += 1
    assert checked >= 8, command


@pytest.mark.parametrize("command", ["prune", "ntk"])
def test_every_field_is_an_option(command):
    dests = {a.dest for a in _subparser(command)._actions}
    assert {f.name for f in fields(CONFIGS[command])} <= dests


def test_prune_arguments_become_the_prune_config():
    from pxprune.cli.prune import prune_config_from_args

    args = build_parser().parse_args(["prune", "--out", "x", "--data", "f.pt",
                                      "--sparsity", "90%", "--method", "snip"])
    cfg = prune_config_from_args(args)
    assert cfg == PruneConfig(dataset="f.pt", sparsity=0.9, method="snip")


def test_a_prune_folder_of_the_old_layout_is_still_read(tmp_path):
    """A pruning folder written before the one layout (``data`` for ``dataset``, every parsed
    argument at the top) is still recognised as finished, and another dataset is refused."""
    import json

    import torch

    from pxprune.errors import OutputError
    from pxprune.experiments.prune_run import prune_to_folder
    from pxprune.masks import Masks

    out = tmp_path / "old"
    out.mkdir()
    old = {"command": "prune", "argv": [], "pxprune": "0.1.0", "model": "resnet20",
           "output": None, "weights": None, "num_classes": None, "method": "snip",
           "sparsity": 0.5, "rounds": None, "keep_dense": None, "scope": "global", "seed": 0,
           "per_class": 10, "norm": "dataset", "device": "cpu", "no_progress": True,
           "allow_disconnected": False, "data": "cifar10", "out": str(out),
           "resolved_method": "snip", "dataset_name": "CIFAR-10", "pruning_examples": 100}
    (out / "config.json").write_text(json.dumps(old))
    Masks({"w": torch.ones(2, 2, dtype=torch.bool)}).save(out / "masks.safetensors")
    done = prune_to_folder(PruneConfig(method="snip", sparsity=0.5), out, log=lambda m: None)
    assert done["already_finished"]
    with pytest.raises(OutputError, match="another configuration"):
        prune_to_folder(PruneConfig(method="snip", sparsity=0.5, dataset="mnist"), out)
