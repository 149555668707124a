"""Is a sweep cell finished and intact? One check for ``report``, ``sweep`` resume and
``sweep --status``, and the setting aside of a damaged cell before it runs again.

A cell is ``done`` only when its done file (``summary.json``; ``result.json`` in a transfer cell
written before transfer cells wrote ``summary.json``) parses to the expected fields and types,
its ``config.json`` parses and agrees with the summary
and with the cell's place in the sweep, and its ``masks.safetensors`` reads back to the hash (or
kept count) the summary recorded. A cell failing any of these is ``damaged``, with one line
naming the file and what is wrong.

A finished cell without ``masks.safetensors`` is damaged when its ``model.pt`` (or a
``checkpoint.pt``) is still there: the masks were deleted. Without masks and without weights it is
a results-only copy (``benchmarks/*_cells`` keep config, summary, metrics and layer tables only)
and is reported from its summary, which the other checks still cover.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..checkpoint import FILE_NAME as PRUNE_CHECKPOINT
from ..masks import Masks, PruningError
from .config import CELL_FIELDS, DENSE, RunConfig

TRAINING, TRANSFER = "training", "transfer"
DONE_FILES = {TRAINING: "summary.json", TRANSFER: "summary.json"}
LEGACY_DONE = "result.json"  # a transfer cell's done file before it was summary.json
SUBRUNS = ("finetune", "finetune_dense")  # a transfer cell's own training runs, not cells
ERROR_FILE = "error.json"
MASKS = "masks.safetensors"
WEIGHTS = ("model.pt", "checkpoint.pt")  # a finished run keeps model.pt beside its masks
# pxprune's own files in a cell folder: the only ones a damaged cell has set aside
OWN_FILES = ("config.json", "summary.json", "result.json", MASKS, "prune.json", PRUNE_CHECKPOINT,
             "metrics.jsonl", "model.pt", "checkpoint.pt", "layers.csv", "layers.txt",
             "probe.safetensors", "imp", "finetune", "finetune_dense")
ASIDE = ".damaged-"  # <cell>/.damaged-<k>/ holds a damaged cell's files; report skips it
NOT_CONFIG = ("resolved_method", "allow_disconnected")  # may differ between config and summary


@dataclass(frozen=True)
class CellState:
    """A cell folder's state (done, damaged, failed, partial, missing) and what was read."""

    state: str
    reason: str = ""  # damaged: which file and what is wrong; failed: the recorded error
    done: dict | None = None  # the parsed summary.json / result.json of a done cell
    config: dict | None = None  # the run's configuration (summary's, else config.json)


class Damaged(Exception):
    """Internal: one line saying which file of the cell is damaged and how."""


def _read_json(path: Path) -> object:
    """A JSON file's content; an unreadable one raises Damaged naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).splitlines() or [""])[0][:120]
        raise Damaged(f"{path.name} is unreadable (truncated or not JSON: {first})") from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def _field(data: Mapping, key: str, ok, what: str, name: str, optional: bool = True) -> None:
    """Raise Damaged unless ``data[key]`` passes ``ok`` (absent or None allowed if optional)."""
    value = data.get(key)
    if value is None and optional:
        return
    if not ok(value):
        raise Damaged(f"{name}: {key} is {value!r}, not {what}")


def _percent(v: object) -> bool:
    return _is_number(v) and 0.0 <= v <= 100.0


def _fraction(v: object) -> bool:
    return _is_number(v) and 0.0 <= v <= 1.0


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_summary(summary: object, name: str) -> dict:
    """The fields report and resume use, with their types (a training cell's summary.json)."""
    if not isinstance(summary, dict):
        raise Damaged(f"{name} holds a JSON {type(summary).__name__}, not a run summary")
    for key in ("final_test_acc", "best_test_acc"):
        _field(summary, key, _percent, "an accuracy in percent", name)
    _field(summary, "density", _fraction, "a fraction", name)
    _field(summary, "epochs", _count, "a count", name)
    for key in ("kept_params", "total_params"):
        _field(summary, key, _count, "a count", name)
    _field(summary, "train_seconds", lambda v: _is_number(v) and v >= 0, "seconds", name)
    _field(summary, "masks_sha256", lambda v: isinstance(v, str), "a hash", name)
    _field(summary, "config", lambda v: isinstance(v, dict), "a configuration", name)
    _field(summary, "prune", lambda v: isinstance(v, dict), "the pruning record", name)
    _field(summary, "collapsed_layers", lambda v: isinstance(v, list), "a list", name)
    prune = summary.get("prune") or {}
    _field(prune, "prune_seconds", lambda v: _is_number(v) and v >= 0, "seconds",
           f"{name} prune")
    _field(prune, "layer_density", lambda v: isinstance(v, dict), "a per-layer table",
           f"{name} prune")
    return summary


def _check_result(result: object, name: str) -> dict:
    """The fields report and resume use (a transfer cell's summary.json or result.json)."""
    if not isinstance(result, dict):
        raise Damaged(f"{name} holds a JSON {type(result).__name__}, not a transfer result")
    _field(result, "method", lambda v: isinstance(v, str), "a method", name, optional=False)
    _field(result, "sparsity", _fraction, "a fraction", name, optional=False)
    _field(result, "seed", _count, "a seed", name, optional=False)
    block = "dense" if result["method"] == DENSE else "pruned"
    _field(result, block, lambda v: isinstance(v, dict), "a result block", name, optional=False)
    _field(result[block], "test_acc", _percent, "an accuracy in percent", f"{name} {block}",
           optional=False)
    _field(result, "kept", _count, "a count", name)
    return result


def _config_of(summary: dict, folder: Path) -> dict:
    """The run's configuration: the summary's, checked against config.json when both exist."""
    path = folder / "config.json"
    saved = _read_json(path) if path.exists() else None
    if saved is not None and not isinstance(saved, dict):
        raise Damaged(f"config.json holds a JSON {type(saved).__name__}, not a configuration")
    cfg = summary.get("config")
    if cfg is None:
        return saved or {}
    if saved is not None:
        try:
            a, b = asdict(RunConfig.from_dict(cfg)), asdict(RunConfig.from_dict(saved))
        except TypeError as exc:  # a field of the wrong kind
            raise Damaged(f"config.json does not describe a run ({exc})") from None
        diff = [k for k in a if k not in NOT_CONFIG and a[k] != b[k]]
        if diff:
            k = diff[0]
            raise Damaged(f"config.json says {k} {b[k]!r} but summary.json was written with "
                          f"{a[k]!r} (edited after the run)")
    return cfg


def _check_place(cfg: Mapping, expected: Mapping | None, name: str) -> None:
    """The cell's method, sparsity and seed have their types and (``expected``) are those of
    its place in the sweep."""
    got = {"method": cfg.get("method", DENSE), "sparsity": cfg.get("sparsity", 0.0),
           "seed": cfg.get("seed", 0)}
    for key, ok, what in (("method", lambda v: isinstance(v, str), "a method"),
                          ("sparsity", lambda v: _is_number(v) and 0.0 <= v < 1.0, "a sparsity"),
                          ("seed", _count, "a seed")):
        _field(got, key, ok, what, name, optional=False)
    if got["method"] == DENSE:
        got["sparsity"] = 0.0
    if expected is None:
        return
    for key in CELL_FIELDS:
        want, have = expected[key], got[key]
        same = abs(float(have) - float(want)) < 1e-9 if key == "sparsity" else have == want
        if not same:
            raise Damaged(f"{name} says {key} {have!r} but the cell's folder is for {want!r}")


def _masks_order(done: dict) -> list[str]:
    """The order the trainer hashed the masks in: the model's, as prune.json's table keeps it."""
    return list(((done.get("prune") or {}).get("layer_density") or {}).keys())


def _check_masks(folder: Path, done: dict, kind: str) -> None:
    """masks.safetensors reads back to what the summary recorded (hash, else kept count); a
    missing one is damage only while the cell's weights are still beside it."""
    path = folder / MASKS
    if not path.exists():
        if kind == TRAINING and any((folder / w).exists() for w in WEIGHTS):
            raise Damaged(f"{MASKS} is missing (the run's model.pt is still there)")
        return
    try:
        masks = Masks.load(path)
    except PruningError as exc:
        raise Damaged(f"{MASKS} is unreadable ({str(exc).split(': ', 1)[-1][:120]})") from None
    recorded = done.get("masks_sha256")
    if isinstance(recorded, str):
        from ..training.train import masks_fingerprint

        order = [n for n in _masks_order(done) if n in masks]
        order += [n for n in masks if n not in order]
        if masks_fingerprint(Masks({n: masks[n] for n in order})) != recorded:
            raise Damaged(f"{MASKS} does not match the masks the run trained with "
                          f"(masks_sha256 in summary.json)")
        return
    kept = done.get("kept_params" if kind == TRAINING else "kept")
    if kept is not None and masks.kept != kept:
        raise Damaged(f"{MASKS} keeps {masks.kept:,} weights, the result says {kept:,}")


def _failed_reason(folder: Path) -> str:
    """The first line of a failed cell's recorded error (or why it cannot be read)."""
    try:
        data = _read_json(folder / ERROR_FILE)
    except Damaged as exc:
        return str(exc)
    error = data.get("error") if isinstance(data, dict) else None
    return str(error).splitlines()[0][:300] if error else ""


def done_file(folder: Path, kind: str) -> Path:
    """The cell's done file: ``summary.json``, or a transfer cell's ``result.json`` in a folder
    written before transfer cells wrote ``summary.json``."""
    path = Path(folder) / DONE_FILES[kind]
    legacy = Path(folder) / LEGACY_DONE
    return legacy if kind == TRANSFER and not path.exists() and legacy.exists() else path


def done_files(root: Path, kind: str) -> list[Path]:
    """Every cell's done file under ``root``; in a transfer sweep old folders' ``result.json``
    too, and not the summaries of a cell's fine-tuning runs (``finetune/``)."""
    root = Path(root)
    if kind != TRANSFER:
        return sorted(root.rglob(DONE_FILES[kind]))
    found = {done_file(p.parent, kind) for n in (DONE_FILES[kind], LEGACY_DONE)
             for p in root.rglob(n)}
    return sorted(p for p in found
                  if not set(p.parent.relative_to(root).parts) & set(SUBRUNS))


def check_cell(folder: str | Path, expected: Mapping | None = None,
               kind: str = TRAINING) -> CellState:
    """The state of one cell folder; ``expected``: the method, sparsity and seed of its place
    in the sweep (None for a folder outside the planned grid)."""
    folder = Path(folder)
    name = done_file(folder, kind).name
    if (folder / name).exists():
        try:
            if kind == TRAINING:
                done = _check_summary(_read_json(folder / name), name)
                cfg = _config_of(done, folder)
                _check_place(cfg, expected, name if done.get("config") is not None
                             else "config.json")
            else:
                done = _check_result(_read_json(folder / name), name)
                cfg = done
                if (folder / "config.json").exists() and not isinstance(
                        _read_json(folder / "config.json"), dict):
                    raise Damaged("config.json is not a configuration")
                _check_place(done, expected, name)
            _check_masks(folder, done, kind)
        except Damaged as exc:
            return CellState("damaged", str(exc))
        return CellState("done", done=done, config=cfg)
    if (folder / ERROR_FILE).exists():
        return CellState("failed", _failed_reason(folder))
    if (folder / "config.json").exists():
        return CellState("partial")
    return CellState("missing")


def set_aside(folder: str | Path) -> Path | None:
    """Move a damaged cell's own files (pxprune's names only) into ``<cell>/.damaged-<k>/`` so
    that the cell runs again from scratch; nothing is deleted, any other file stays where it
    is. Returns the new folder (None when nothing was moved)."""
    folder = Path(folder)
    present = [n for n in OWN_FILES if (folder / n).exists()]
    if not present:
        return None
    k = 1
    while (folder / f"{ASIDE}{k}").exists():
        k += 1
    aside = folder / f"{ASIDE}{k}"
    aside.mkdir()
    for n in present:
        try:
            (folder / n).rename(aside / n)
        except FileNotFoundError:  # another launcher set it aside first
            pass
    return aside
