"""Connectivity judged on the masks (``pathview.reach``): against brute force on MLPs, through
residuals, on a default-init net whose activations vanish, the API's warning and the command
line's refusal that keeps what it computed."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

import pxprune
from pxprune import Masks
from pxprune.cli.main import main
from pxprune.errors import PxpruneError
from pxprune.experiments.checks import check_connected
from pxprune.pathview.reach import output_reach, reached_outputs


def _mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4),
                         nn.Tanh(), nn.Dropout(0.5), nn.Linear(4, 3))


@pytest.mark.parametrize("seed", range(12))
def test_reach_equals_brute_force_on_sparse_mlps(seed):
    model = _mlp(seed)
    g = torch.Generator().manual_seed(seed)
    masks = Masks({n: torch.rand(m.shape, generator=g) < 0.3 for n, m in Masks.ones(model).items()})
    reach = torch.ones(6, dtype=torch.bool)  # which units some input reaches, layer by layer
    for name in ("0.weight", "3.weight", "6.weight"):
        keep = masks[name]
        reach = torch.tensor([bool((keep[i] & reach).any()) for i in range(keep.shape[0])])
    assert reached_outputs(model, masks, torch.zeros(2, 6)) == int(reach.sum())


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(self.branch(h)) + self.shortcut(h)
        return self.fc(h.mean((2, 3)))


def test_a_residual_keeps_the_output_reached_until_both_paths_are_cut():
    model = Residual()
    full = Masks.ones(model)
    x = torch.randn(2, 3, 8, 8)
    no_branch = Masks({**full, "branch.weight": torch.zeros(4, 4, 3, 3, dtype=torch.bool)})
    assert reached_outputs(model, no_branch, x) == 2
    both = Masks({**no_branch, "shortcut.weight": torch.zeros(4, 4, 1, 1, dtype=torch.bool)})
    assert reached_outputs(model, both, x) == 0


def test_vanishing_activations_are_not_a_cut():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    for bn in (model[1], model[4]):
        bn.running_var.fill_(1e30)  # eval mode: every activation ~1e-15, outputs = the bias
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x + 1.0))  # what the old value-based check saw
    masks = Masks.ones(model)
    check_connected(model, x, masks, "px")  # connected: no error
    cut = Masks({**masks, "8.weight": torch.zeros(10, 8, dtype=torch.bool)})
    with pytest.raises(PxpruneError, match=r"disconnect the output.*empty: 8.weight"):
        check_connected(model, x, cut, "snip")


def _weak_middle(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():
        model[2].weight.mul_(1e-6)  # magnitude pruning empties this layer first
    return model


def test_the_api_warns_and_names_empty_layers():
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8)
    with pytest.warns(pxprune.DisconnectedMasksWarning,
                      match=r"no path of kept weights.*1 empty layer\(s\): 2.weight"):
        masks = pxprune.prune(_weak_middle(), "magnitude", 0.8, (x, y))
    assert masks.collapsed_layers() == ["2.weight"]


@pytest.mark.integration
def test_the_command_keeps_refused_masks_for_the_next_command(tmp_path, monkeypatch, capsys):
    (tmp_path / "weak_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def weak(num_classes=10):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, num_classes))
            with torch.no_grad():
                model[2].weight.mul_(1e-6)
            return model
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("weak_models", None)
    data = tmp_path / "d.pt"
    g = torch.Generator().manual_seed(0)
    torch.save({"images": torch.randint(0, 255, (20, 3, 8, 8), generator=g, dtype=torch.uint8),
                "labels": torch.arange(20) % 10}, data)
    out = tmp_path / "p"
    args = ["prune", "--model", "weak_models:weak", "--dataset", str(data), "--method",
            "magnitude", "--sparsity", "0.8", "--rounds", "3", "--per-class", "2",
            "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disconnect the output" in err[0] and "2.weight" in err[0]
    assert not (out / "masks.safetensors").exists()
    assert (out / "prune_rounds.safetensors").exists()  # what was computed is kept
    assert main([*args, "--allow-disconnected"]) == 0
    assert "resuming the pruning after round 3 of 3" in capsys.readouterr().out
    masks = Masks.load(out / "masks.safetensors")
    assert masks["2.weight"].sum() == 0 and masks.kept == round(0.2 * masks.total)
    assert not (out / "prune_rounds.safetensors").exists()  # the kept checkpoint is gone


def test_progress_in_a_log_file_is_a_line_every_tenth(capsys):
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8)
    pxprune.prune(_weak_middle(1), "random", 0.5, (x, y), rounds=20)  # stderr is not a terminal
    lines = capsys.readouterr().err.strip().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == [f"random rounds: {r}/20" for r in
                                                   range(2, 21, 2)]


def test_output_reach_counts_the_logits_a_pruned_classifier_still_joins_to_the_input():
    model = Residual()
    x = torch.randn(2, 3, 8, 8)
    full = Masks.ones(model)
    assert output_reach(model, full, x) == (2, 2)
    fc = torch.ones(2, 4, dtype=torch.bool)
    fc[1] = False  # the second logit keeps no weight: only its bias is left
    assert output_reach(model, Masks({**full, "fc.weight": fc}), x) == (1, 2)
    # the first logit reads only feature 0, whose branch and shortcut rows are both cut
    fc = torch.zeros(2, 4, dtype=torch.bool)
    fc[0, 0] = fc[1, 1] = True
    branch = torch.ones(4, 4, 3, 3, dtype=torch.bool)
    shortcut = torch.ones(4, 4, 1, 1, dtype=torch.bool)
    branch[0] = shortcut[0] = False
    masks = Masks({**full, "fc.weight": fc, "branch.weight": branch, "shortcut.weight": shortcut})
    assert output_reach(model, masks, x) == (1, 2)
    assert masks.collapsed_layers() == []


def test_the_api_warns_when_only_some_logits_depend_on_the_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[2].weight[0].mul_(100.0)  # magnitude keeps every weight of logit 0 ...
        model[2].weight[1:].mul_(1e-6)  # ... and none of logits 1 and 2
    x, y = torch.randn(8, 6), torch.arange(8) % 3
    with pytest.warns(pxprune.DisconnectedMasksWarning,
                      match=r"only 1 of 3 outputs are joined to the input.*no layer is empty"):
        masks = pxprune.prune(model, "magnitude", 0.5, (x, y))
    assert masks["2.weight"][1:].sum() == 0 and masks["2.weight"][0].any()
