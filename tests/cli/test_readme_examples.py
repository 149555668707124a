"""The README's examples work as written: every ``pxprune`` command line parses with today's CLI
and names methods that exist, and (slow) the Python example runs on the shared data."""

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

README = (REPO / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.M | re.S)


def command_lines() -> list[str]:
    """Each ``pxprune ...`` line of the README's bash blocks, continuations joined; lines that
    elide options with ``...`` are left out."""
    lines = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("pxprune ") and " ... " not in line:
                lines.append(line)
    return lines


COMMANDS = command_lines()


def test_the_readme_shows_every_command():
    shown = {shlex.split(line)[1] for line in COMMANDS}
    assert shown >= {"prune", "run", "sweep", "report", "ntk", "transfer"}, shown


@pytest.mark.parametrize("line", COMMANDS, ids=lambda line: " ".join(line.split()[:3]))
def test_each_readme_command_parses_and_names_real_methods(line):
    argv = shlex.split(line, comments=True)[1:]
    args = parse(build_parser(), argv)  # an unknown or misspelt option exits here
    specs = [getattr(args, "method", None)]
    if getattr(args, "methods", None):
        specs += split_method_list(args.methods)
    for spec in filter(None, specs):
        check_method_spec(spec)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "cifar10-jpeg.tar.gz").exists(), reason="no shared data")
def test_the_python_example_runs_as_written(tmp_path):
    (python,) = [b for b in code_blocks("python") if "pxprune.prune(" in b]
    env = {**os.environ, "PXPRUNE_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    density = float(done.stdout.split()[0])
    assert abs(density - 0.018) < 1e-3  # 98.2 % sparsity, as the example says
    assert (tmp_path / "masks.safetensors").exists()
