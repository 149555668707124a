"""Tests of the paired head-to-head report section (pxprune.experiments.report.paired,
report --paired)."""

from __future__ import annotations

import json

import pytest

from pxprune.cli.main import main
from pxprune.experiments.report.collect import collect
from pxprune.experiments.report.paired import paired, paper_value, verdict
from pxprune.experiments.report.tables import format_markdown
from pxprune.methods.spec import resolved_spec

# (method, sparsity, seed) -> final accuracy; kept weights per layer (conv1, layer1, fc)
ACC = {("px", 0.98198627, 0): 80.0, ("px", 0.98198627, 1): 79.0,
       ("snip", 0.98198627, 0): 78.0, ("snip", 0.98198627, 1): 78.5,
       ("random", 0.98198627, 0): 81.0, ("random", 0.98198627, 1): 80.0,
       ("magnitude", 0.98198627, 0): 79.8, ("magnitude", 0.98198627, 1): 79.1,
       ("dense", 0.0, 0): 88.0, ("dense", 0.0, 1): 88.4}
KEPT = {"px": (10, 30, 20), "snip": (5, 0, 40), "random": (8, 40, 7), "magnitude": (9, 1, 45),
        "dense": (100, 1000, 50)}
TOTAL = (100, 1000, 50)


def write_cell(root, method, sparsity, seed, acc):
    folder = root / (f"dense/seed{seed}" if method == "dense"
                     else f"{method}/s{sparsity * 100:.2f}/seed{seed}")
    folder.mkdir(parents=True)
    cfg = {"method": method, "sparsity": sparsity, "seed": seed,
           "resolved_method": resolved_spec(method)}  # as every config records it now
    (folder / "summary.json").write_text(json.dumps(
        {"final_test_acc": acc, "best_test_acc": acc, "config": cfg, "density": 0.02}))
    rows = ["layer,shape,kept,total,density,kept_macs,warning"]
    for name, k, t in zip(("conv1.weight", "layer1.0.conv1.weight", "fc.weight"), KEPT[method],
                          TOTAL, strict=True):
        rows.append(f"{name},x,{k},{t},{k / t},0,")
    (folder / "layers.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sw"
    for (m, s, seed), acc in ACC.items():
        write_cell(root, m, s, seed, acc)
    return root


def test_paired_differences_and_verdicts(sweep):
    result = collect(sweep)
    rows = {r["method"]: r for r in paired(result["cells"], "px")}
    assert set(rows) == {"snip", "random", "magnitude"}  # not px itself, not dense
    assert rows["snip"]["differences"] == pytest.approx([2.0, 0.5])
    assert rows["snip"]["mean_difference"] == pytest.approx(1.25)
    assert rows["snip"]["verdict"] == "leads"
    assert rows["random"]["differences"] == pytest.approx([-1.0, -1.0])
    assert rows["random"]["verdict"] == "trails"
    assert rows["magnitude"]["differences"] == pytest.approx([0.2, -0.1])
    assert rows["magnitude"]["verdict"] == "level"
    assert verdict([0.3, 0.4]) == "level"  # same sign but a mean under 0.5 points


def test_report_section_has_paper_values_empty_layers_and_block_densities(sweep):
    result = collect(sweep)
    text = format_markdown(result, paired="px", paper="fig2a")
    section = text.split("## PX against each method, paired by seed", 1)[1]
    line = next(s for s in section.splitlines() if s.startswith("| SNIP |"))
    cols = [c.strip() for c in line.strip("|").split("|")]
    # accuracy [paper], Δ per seed, mean Δ, verdict, empty layers per seed, conv1/layer1/fc
    assert cols[1] == "78.25 ± 0.35 [75.5]"
    assert cols[2:5] == ["+2.00 / +0.50", "+1.25", "leads"]
    assert cols[5] == "1 / 1"  # layer1 empty in both seeds
    assert cols[6:9] == ["5.00", "0.00", "80.00"]
    one_seed = sweep.parent / "seed0_only"
    for (m, s, seed), acc in ACC.items():
        if seed == 0:
            write_cell(one_seed, m, s, seed, acc)
    seed0 = format_markdown(collect(one_seed), paired="px", paper="fig2a")
    line = next(s for s in seed0.split("paired by seed", 1)[1].splitlines()
                if s.startswith("| SNIP |"))
    assert [c.strip() for c in line.strip("|").split("|")][2:5] == ["+2.00", "+2.00",
                                                                   "leads (1 seed)"]
    assert paper_value("fig2a", "px", 0.95601953) == "83.2"
    assert paper_value("fig2a", "px[variant=bound]", 0.98198627) is None


def test_report_command_writes_paired_numbers(sweep, tmp_path):
    out = tmp_path / "r.json"
    assert main(["report", str(sweep), "--results", str(out), "--paired", "px",
                 "--paper", "fig2a"]) == 0
    data = json.loads(out.read_text())
    assert data["paired_reference"] == "px"
    snip = next(r for r in data["paired"] if r["method"] == "snip")
    assert snip["differences"] == pytest.approx([2.0, 0.5])
    assert data["layer_shapes"]["snip|s98.20"]["0"]["empty_layers"] == ["layer1.0.conv1.weight"]
    assert "PX against each method" in (sweep / "report.md").read_text()


def test_report_never_replaces_files_it_did_not_write(sweep, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes\n")
    assert main(["report", str(sweep), "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "not written by pxprune report" in err and len(err.strip().splitlines()) == 1
    assert (mine / "report.md").read_text() == "my own notes\n"
    assert sorted(p.name for p in mine.iterdir()) == ["report.md"]  # nothing else written

    for text in ('{"something": "else"}\n', '{"format": "pxprune.ntk_study/1"}\n'):
        other = tmp_path / "results.json"
        other.write_text(text)
        assert main(["report", str(sweep), "--out", str(tmp_path / "r"), "--results",
                     str(other)]) == 2
        assert "is not a pxprune results file" in capsys.readouterr().err
        assert other.read_text() == text and not (tmp_path / "r").exists()

    # its own earlier report is replaced, atomically, with no temporary file left behind
    assert main(["report", str(sweep), "--out", str(tmp_path / "r"), "--results",
                 str(tmp_path / "ok.json")]) == 0
    assert main(["report", str(sweep), "--out", str(tmp_path / "r"), "--results",
                 str(tmp_path / "ok.json")]) == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(
        ["report.md", "report.tex", "report.csv", "report.png", "report_layers.png",
         "report.json"])  # no report_curves.png: these cells hold no metrics.jsonl
    assert (tmp_path / "r" / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_one_sparsity_is_drawn_as_one_column_per_method(sweep):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection

    from pxprune.experiments.report.figure import figure

    fig = figure(collect(sweep))
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(names) == ["Magnitude", "PX", "Random", "SNIP"]  # methods, not sparsities
    seeds = sorted(float(y) for c in ax.collections if isinstance(c, PathCollection)
                   for _, y in c.get_offsets())  # the scatter dots, not the error bars
    assert seeds == sorted(v for (m, _, _), v in ACC.items() if m != "dense")  # every seed
    means = {names[round(line.get_xdata()[0])]: line.get_ydata()[0] for line in ax.lines
             if line.get_marker() == "o"}  # the mean dots, not the error bars' caps
    assert means == pytest.approx({"PX": 79.5, "SNIP": 78.25, "Magnitude": 79.45,
                                   "Random": 80.5})
    plt.close(fig)
