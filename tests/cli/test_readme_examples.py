"""The README's and the docs' examples work as written: every shell line of their bash blocks is
checked (``pxprune`` lines parse with today's CLI and name methods that exist; make targets,
pip extras, scripts and their options exist), the docs' Python blocks run, relative links point
at files, the README's headline table matches its results file, and (slow) the README's Python
example runs on the shared data."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from helpers import REPO, SHARED_DATA

from pxprune.cli.main import build_parser, parse
from pxprune.methods.spec import check_method_spec, split_method_list

README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md",
        REPO / "CONTRIBUTING.md"]
COMMANDS = {"prune", "run", "demo", "sweep", "report", "ntk", "transfer"}
# shell lines that are neither pxprune, make, pip nor a script of this repository
PLAIN = ("git ", "cd ", ".venv/bin/ruff ", ".venv/bin/python -m pytest ")


def code_blocks(path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), re.M | re.S)


def shell_lines(path) -> list[str]:
    """Each command line of a file's bash blocks, continuations joined, comments dropped."""
    lines = []
    for block in code_blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(shlex.join(words))
    return lines


LINES = [(p.relative_to(REPO).as_posix(), line) for p in DOCS for line in shell_lines(p)]


def _check_pxprune(argv: list[str]) -> None:
    args = parse(build_parser(), argv)  # an unknown, misspelt or abbreviated option exits here
    specs = [getattr(args, "method", None)]
    if getattr(args, "methods", None) and args.methods != "all":
        specs += split_method_list(args.methods)
    for spec in filter(None, specs):
        if spec != "dense":
            check_method_spec(spec)


def _check_script(words: list[str]) -> None:
    script = REPO / words[0]
    assert script.is_file(), f"{words[0]} does not exist"
    source = script.read_text()
    for w in words[1:]:
        if w.startswith("-"):
            assert w.split("=")[0] in source, f"{words[0]} takes no {w}"


def check_line(line: str) -> None:
    """Raise unless ``line`` is a command this repository provides, spelt as it takes it."""
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if words[0] in ("export",):
        assert all(re.fullmatch(r"[A-Z_]+=\S+", w) for w in words[1:]), line
    elif words[0] == "pxprune":
        _check_pxprune(words[1:])
    elif words[0] == "torchrun":
        i = words.index("-m")
        assert words[i + 1] == "pxprune", line
        _check_pxprune(words[i + 2:])
    elif words[0] == "make":
        targets = set(re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(), re.M))
        for w in words[1:]:
            assert "=" in w or w in targets, f"no make target {w!r}"
    elif words[:3] == ["pip", "install", "-e"]:
        toml = (REPO / "pyproject.toml").read_text()
        section = toml.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
        extras = set(re.findall(r"^([\w-]+) = \[", section, re.M))
        spec = words[3]
        assert spec.startswith("."), line
        for extra in re.findall(r"\[(.*)\]", spec)[:1]:
            assert set(extra.split(",")) <= extras, f"unknown extra in {spec}"
    elif words[0] in ("python", ".venv/bin/python", "bash") and words[1].startswith("benchmarks/"):
        _check_script(words[1:])
    elif words[0].startswith("benchmarks/"):
        assert os.access(REPO / words[0], os.X_OK), f"{words[0]} is not executable"
        _check_script(words)
    else:
        assert line.startswith(PLAIN), f"unchecked shell line: {line}"


def test_the_docs_show_every_command():
    shown = {shlex.split(line)[1] for _, line in LINES if line.startswith("pxprune ")}
    assert shown >= COMMANDS, COMMANDS - shown


@pytest.mark.parametrize("where,line", LINES, ids=[f"{w}:{' '.join(x.split()[:3])}"
                                                  for w, x in LINES])
def test_each_shell_line_runs_as_written(where, line):
    check_line(line)


def test_an_unchecked_shell_line_is_refused():
    with pytest.raises(AssertionError, match="unchecked"):
        check_line("rm -rf runs")
    with pytest.raises(SystemExit):
        check_line("pxprune prune --spars 0.9 --out x")


DOC_PYTHON = [(p.relative_to(REPO).as_posix(), i, block) for p in DOCS[1:] if p.exists()
              for i, block in enumerate(code_blocks(p, "python"))]


@pytest.mark.parametrize("where,index,block", DOC_PYTHON,
                         ids=[f"{w}#{i}" for w, i, _ in DOC_PYTHON])
def test_each_docs_python_block_runs(where, index, block, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_relative_links_point_at_files():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name}: {target}"


def test_the_readme_is_short_and_its_headline_matches_the_results_file():
    assert len(README.read_text().splitlines()) <= 200
    done = subprocess.run([sys.executable, "benchmarks/long_readme_table.py", "--check"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "cifar10-jpeg.tar.gz").exists(), reason="no shared data")
def test_the_python_example_runs_as_written(tmp_path):
    (python,) = [b for b in code_blocks(README, "python") if "pxprune.prune(" in b]
    assert "export PXPRUNE_DATA=" in README.read_text()  # the README shows where data come from
    env = {**os.environ, "PXPRUNE_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    density = float(done.stdout.split()[0])
    assert abs(density - 0.018) < 1e-3  # 98.2 % sparsity, as the example says
    assert (tmp_path / "masks.safetensors").exists()
