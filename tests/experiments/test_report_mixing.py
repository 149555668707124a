"""`pxprune report` on a folder of separate runs refuses to average runs that differ in
protocol, or that repeat one method, sparsity and seed, instead of calling them seeds."""

from __future__ import annotations

import shutil

from pxprune.cli.main import main


def _run(data_file: str, model_spec: str, out, seed: int, epochs: int) -> None:
    code = main(["run", "--model", model_spec, "--dataset", data_file, "--holdout", "0.25",
                 "--method", "magnitude", "--sparsity", "0.5", "--seed", str(seed),
                 "--epochs", str(epochs), "--batch-size", "8", "--per-class", "2",
                 "--device", "cpu", "--no-progress", "--out", str(out)])
    assert code == 0


def _report_error(folder, capsys) -> str:
    capsys.readouterr()
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_runs_of_one_protocol_are_seeds_others_are_refused(data_file, model_spec, tmp_path,
                                                           capsys):
    runs = tmp_path / "runs"
    _run(data_file, model_spec, runs / "a", seed=0, epochs=1)
    _run(data_file, model_spec, runs / "b", seed=1, epochs=1)
    assert main(["report", str(runs)]) == 0
    assert "n = 2 seeds" in (runs / "report.md").read_text()

    shutil.copytree(runs / "a", runs / "a_copy")
    err = _report_error(runs, capsys)
    assert "a and a_copy are the same cell (magnitude s50.00 seed 0)" in err, err
    shutil.rmtree(runs / "a_copy")

    _run(data_file, model_spec, runs / "c", seed=2, epochs=2)
    err = _report_error(runs, capsys)
    assert "a and c were run differently (epochs 1 vs 2)" in err, err
    assert "report each folder on its own" in err


def test_an_interrupted_report_is_re_run_and_a_run_folder_is_refused(data_file, model_spec,
                                                                     tmp_path, capsys,
                                                                     monkeypatch):
    import hashlib

    from pxprune.errors import OutputError
    from pxprune.experiments.report import write as report

    runs = tmp_path / "runs"
    _run(data_file, model_spec, runs / "a", seed=0, epochs=1)
    real_csv = report.write_csv

    def disk_full(*args, **kwargs):
        raise OutputError("cannot write report.csv: no space left on the device")

    monkeypatch.setattr(report, "write_csv", disk_full)  # the disk fills up half-way
    assert main(["report", str(runs)]) == 2
    assert "no space left" in capsys.readouterr().err
    monkeypatch.setattr(report, "write_csv", real_csv)  # space again: the same command works
    assert main(["report", str(runs)]) == 0
    assert all((runs / n).exists() for n in report.REPORT_FILES)

    cell = runs / "a"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cell.iterdir()}
    capsys.readouterr()
    assert main(["report", str(runs), "--out", str(cell)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pxprune run" in err, err
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cell.iterdir()} == before
