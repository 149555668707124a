"""Output folders: a command refuses one holding another command's or configuration's work.

A folder's owner is its ``config.json`` (``command``; a run's written before it recorded one
has no such key). A
config.json with no work beside it (a command that failed before producing anything) claims
nothing, so the corrected command may reuse the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from ..analysis.flops import count_flops
from ..analysis.layers import format_layer_table, write_layer_csv
from ..errors import OutputError
from ..io import atomic_write_json, atomic_write_text, make_output_dir, read_json
from ..masks import Masks, prunable_parameters, unpruned_matrices
from .cell_lock import CellBusy

CONFIG = "config.json"
# what pxprune commands leave in a folder; any of these means the folder holds work
WORK_FILES = ("summary.json", "masks.safetensors", "prune_rounds.safetensors", "prune.json",
              "checkpoint.pt", "metrics.jsonl", "model.pt", "layers.csv", "result.json",
              "sweep.json", "imp", "finetune", "finetune_dense")


def read_config(out: Path) -> dict | None:
    """The folder's config.json, or None when there is none."""
    path = Path(out) / CONFIG
    if not path.is_file():
        return None
    data = read_json(path, "the folder's configuration", hint="choose another --out")
    if not isinstance(data, dict):
        raise OutputError(f"{path} is not a pxprune config; choose another --out")
    if data.get("command") == "prune" and "data" in data and "dataset" not in data:
        data["dataset"] = data["data"]  # a pruning written before the one layout
    return data


def written_by_pxprune(config: Mapping) -> bool:
    """Whether a config.json is one pxprune writes: its ``command`` says so, or (a run's
    written before runs recorded it) it holds ``model`` and ``recipe``."""
    command = config.get("command")
    if command is not None:
        return command in ("prune", "run", "transfer")
    return "model" in config and "recipe" in config  # a run's, written before ``command``


def check_out_named(out: str | os.PathLike) -> None:
    """Refuse an empty ``--out`` (it would mean the current folder)."""
    if not str(os.fspath(out)).strip():
        raise OutputError("--out is empty; name a folder (e.g. --out runs/r1; --out . for the "
                          "current folder)")


def command_of(config: Mapping) -> str:
    """The command that wrote ``config`` (a run's config.json written before runs recorded
    it has no ``command``)."""
    command = config.get("command")
    return command if isinstance(command, str) else "run"


def work_files(out: Path) -> list[str]:
    """Names of the pxprune outputs present in ``out``."""
    return [n for n in WORK_FILES if (Path(out) / n).exists()]


def plain(value: object) -> object:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value, default=str))


def differences(saved: Mapping, wanted: Mapping) -> list[str]:
    """``key: saved -> wanted`` for every key of ``wanted`` whose saved value differs."""
    return [f"{k} {saved.get(k)!r} there, {wanted[k]!r} now" for k in wanted
            if plain(saved.get(k)) != plain(wanted[k])]


def claim(out: str | os.PathLike, command: str, identity: Mapping | None = None) -> Path:
    """Check that ``out`` is empty, new, or holds this command's work with the same
    ``identity`` (keys compared with the saved config.json); then create it.

    Raises OutputError (one line; nothing in the folder is touched) for a file in the way, an
    unwritable place, another command's work, or the same command with another configuration.
    """
    check_out_named(out)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder")
    if out.is_dir():
        work = work_files(out)
        config = read_config(out)
        if config is not None and not written_by_pxprune(config):
            raise OutputError(f"--out {out} holds a config.json that pxprune did not write; "
                              f"choose another folder (it is left as it is)")
        if work and config is None:
            raise OutputError(f"--out {out} holds pxprune outputs ({', '.join(work[:4])}) "
                              f"without a config.json; choose another folder")
        if work:
            other = command_of(config)
            if other != command:
                raise OutputError(f"--out {out} holds the work of `pxprune {other}` "
                                  f"({', '.join(work[:4])}); choose another folder for "
                                  f"`pxprune {command}`")
            if identity is not None:
                diff = differences(config, identity)
                if diff:
                    raise OutputError(f"--out {out} holds a `pxprune {command}` with another "
                                      f"configuration ({'; '.join(diff[:3])}); choose another "
                                      f"folder")
    return make_output_dir(out)


def refuse_foreign(out: str | os.PathLike, command: str) -> None:
    """For commands without a config.json of their own (sweep, ntk): refuse a folder holding
    the work of a command that has one (a run, a pruning, a transfer)."""
    check_out_named(out)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder")
    config = read_config(out) if out.is_dir() else None
    work = [n for n in work_files(out) if n != "sweep.json"] if out.is_dir() else []
    if config is not None and work:
        raise OutputError(f"--out {out} holds the work of `pxprune {command_of(config)}` "
                          f"({', '.join(work[:4])}); choose another folder for "
                          f"`pxprune {command}`")


def write_config(out: Path, config: Mapping) -> None:
    """Write ``config.json`` atomically (indented, one key per line)."""
    atomic_write_json(Path(out) / CONFIG, dict(config), default=str)


@contextmanager
def left_as_found_on_failure(out: str | os.PathLike) -> Iterator[None]:
    """A command failing before it produced any work leaves ``out`` as it found it: its
    config.json restored (or removed), the folder removed when the command created it empty."""
    out = Path(out)
    existed = out.is_dir()
    path = out / CONFIG
    old = path.read_bytes() if path.is_file() else None
    try:
        yield
    except CellBusy:  # another live process writes the folder: nothing of it is ours to tidy
        raise
    except BaseException:
        if out.is_dir() and not work_files(out):
            try:
                if old is None:
                    path.unlink(missing_ok=True)
                elif not path.is_file() or path.read_bytes() != old:
                    path.write_bytes(old)
                if not existed and not any(out.iterdir()):
                    out.rmdir()
            except OSError:
                pass  # the original error matters more than the tidying
        raise


def write_layer_table(out: Path, masks: Masks, model: nn.Module,
                      input_shape: tuple[int, ...]) -> tuple[dict, str]:
    """``layers.csv`` and ``layers.txt`` in ``out`` (atomically): kept, density and MACs per
    layer, collapse flagged, weight tensors no method prunes listed; returns (MACs, the table)."""
    flops = count_flops(model, tuple(input_shape), masks)
    unpruned = unpruned_matrices(model, masks)
    dense = set(prunable_parameters(model)) - set(masks)  # kept dense on request
    write_layer_csv(masks, Path(out) / "layers.csv", flops, unpruned, dense)
    table = format_layer_table(masks, flops, unpruned, dense)
    atomic_write_text(Path(out) / "layers.txt", table + "\n")
    return flops, table
