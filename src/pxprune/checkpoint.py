"""Round checkpoints of a multi-round pruning: the masks after round r, and what they belong to.

A long schedule (PX's 100 rounds over an ImageNet-sized pruning split) must not be lost to an
interruption. :func:`pxprune.prune` saves the current masks here at most every
``CHECKPOINT_SECONDS`` (and never for one-round methods), resumes after the saved round when the
file belongs to the same pruning (method and options, sparsity, rounds, scope, seed, the model's
starting weights and the data), refuses a file that belongs to another, and deletes it when the
schedule is done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .masks import Masks, PruningError

CHECKPOINT_SECONDS = 10.0  # at most one write per this many seconds of scoring
FORMAT = "pxprune.prune_rounds/1"
FILE_NAME = "prune_rounds.safetensors"  # its name in a run or output folder


def fingerprint(model_weights: Mapping[str, Tensor], batches: Sequence) -> str:
    """A short hash of the starting weights and the pruning data (shapes and float64 sums)."""
    h = hashlib.sha256()
    for name, w in model_weights.items():
        w64 = w.detach().to(torch.float64)
        h.update(f"{name}{tuple(w.shape)}{float(w64.sum())!r}{float(w64.square().sum())!r}"
                 .encode())
    for batch in batches:
        for t in batch:
            if isinstance(t, Tensor):
                t64 = t.detach().to(torch.float64)
                h.update(f"{tuple(t.shape)}{float(t64.sum())!r}{float(t64.square().sum())!r}"
                         .encode())
    return h.hexdigest()[:16]


def identity(method: str, options: Mapping[str, object], density: float, rounds: int,
             scope: str, seed: int, fingerprint_: str) -> dict[str, object]:
    """What a checkpoint must match to be resumed."""
    return {"format": FORMAT, "method": method,
            "options": json.loads(json.dumps(dict(options), sort_keys=True, default=str)),
            "density": density, "rounds": rounds, "scope": scope, "seed": seed,
            "fingerprint": fingerprint_}


def save(path: Path, masks: Masks, done_rounds: int, ident: Mapping[str, object]) -> None:
    """Write the masks after ``done_rounds`` rounds atomically (never half a file; a killed
    write leaves a temporary file of a dead process, removed when the folder is next opened)."""
    masks.save(path, {**ident, "done_rounds": done_rounds})


def load(path: Path, ident: Mapping[str, object]) -> tuple[Masks, int] | None:
    """The saved masks and their round count, ``None`` when there is no file; a file written
    for another pruning raises PruningError naming what differs."""
    if not path.exists():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("extra", "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PruningError(f"cannot read the pruning checkpoint {path}: {exc}; delete it to "
                           "start the schedule again") from exc
    differs = sorted(k for k in ident if meta.get(k) != ident[k])
    if differs:
        raise PruningError(f"the pruning checkpoint {path} belongs to another pruning "
                           f"({', '.join(differs)} differ); delete it or choose another folder")
    return Masks.load(path), int(meta["done_rounds"])
