"""Thresholding scores into masks: exact counts, deterministic ties, multi-round densities."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from .masks import Masks, PruningError

SCOPES = ("global", "layer")


def parse_sparsity(value: float | str) -> float:
    """Accept 0.982, "0.982" or "98.2%"; return a float in [0, 1) or raise PruningError."""
    if isinstance(value, str):
        text = value.strip()
        match = re.fullmatch(r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)", text)
        if not match:
            raise PruningError(f"sparsity {value!r} is not a number like 0.982 or 98.2%")
        number = float(match.group(1))
        value = number / 100.0 if match.group(2) else number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PruningError(f"sparsity must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise PruningError(f"sparsity must be in [0, 1) (e.g. 0.982 or 98.2%), got {value}")
    return value


def round_densities(density: float, rounds: int) -> list[float]:
    """Densities after each of ``rounds`` rounds: d**(r/rounds), r = 1..rounds."""
    if rounds < 1:
        raise PruningError(f"rounds must be >= 1, got {rounds}")
    return [density ** (r / rounds) for r in range(1, rounds + 1)]


def _top_k_mask(flat_scores: Tensor, k: int) -> Tensor:
    """Bool mask keeping exactly the k largest entries; ties go to the lower index."""
    keep = torch.zeros(flat_scores.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.sort(flat_scores, descending=True, stable=True).indices
        keep[order[:k]] = True
    return keep


def _validated(scores: Mapping[str, Tensor], masks: Masks) -> dict[str, Tensor]:
    out = {}
    for name, current in masks.items():
        if name not in scores:
            raise PruningError(f"no score for prunable parameter {name!r}")
        s = scores[name].detach().to("cpu", torch.float64)
        if s.shape != current.shape:
            raise PruningError(f"score for {name!r} has shape {tuple(s.shape)}, expected "
                               f"{tuple(current.shape)}")
        if not torch.isfinite(s[current]).all():
            bad = int((~torch.isfinite(s[current])).sum())
            raise PruningError(f"{bad} NaN/inf scores in {name!r}: the scoring method failed "
                               "numerically; refusing to prune on them")
        # Pruned weights stay pruned: they rank below every live weight.
        out[name] = torch.where(current, s, torch.full_like(s, -math.inf))
    return out


def threshold(
    scores: Mapping[str, Tensor],
    density: float,
    masks: Masks,
    scope: str = "global",
) -> Masks:
    """Keep the highest-scoring weights among those ``masks`` still keeps.

    global: exactly ``round(density * total)`` weights over all tensors; layer: exactly
    ``round(density * layer_size)`` in every tensor. Already-pruned weights are never revived.
    """
    if scope not in SCOPES:
        raise PruningError(f"scope must be one of {SCOPES}, got {scope!r}")
    live = _validated(scores, masks)
    if scope == "global":
        names = list(live)
        flat = torch.cat([live[n].flatten() for n in names])
        k = min(round(density * flat.numel()), masks.kept)
        keep = _top_k_mask(flat, k)
        out, start = {}, 0
        for n in names:
            size = live[n].numel()
            out[n] = keep[start : start + size].view(live[n].shape)
            start += size
        return Masks(out)
    out = {}
    for n, s in live.items():
        k = min(round(density * s.numel()), int(masks[n].sum()))
        out[n] = _top_k_mask(s.flatten(), k).view(s.shape)
    return Masks(out)
