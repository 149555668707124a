"""Sparsities and thresholds: parsing a sparsity ("98.2%") or a grid (the paper's nine), the
multi-round densities, and thresholding scores into masks (exact counts, deterministic ties)."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence

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


def check_rounds(rounds: object, total: int | None = None, density: float | None = None) -> int:
    """A round count is a positive integer (2.7 or "3" are refused, never truncated), and, given
    the ``total`` of prunable weights, no larger than it: more rounds than weights would prune
    nothing in most of them (and run for ever). The refusal shows the schedule's first rounds."""
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise PruningError(f"rounds must be a positive integer, got {rounds!r}")
    rounds = int(rounds)
    if total is not None and rounds > total:
        empty, first = "some", ""
        if density is not None:
            target = round(density * total)
            empty = f"at least {rounds - (total - target):,}"
            kept = [f"{round(density ** (r / rounds) * total):,}" for r in range(1, 4)]
            first = (f" (the schedule's first rounds would keep {', '.join(kept)} weights, "
                     f"{total:,} -> {target:,} in all)")
        raise PruningError(f"rounds {rounds:,} is more than the {total:,} prunable weights of "
                           f"the model: {empty} rounds would prune no weight{first}; use at "
                           f"most {total:,} rounds (PX and SynFlow use 100)")
    return rounds


SEED_MAX = 2**64 - 1  # torch's generators take seeds in [0, 2**64)


def check_seed(seed: object) -> int:
    """A seed is an integer in [0, 2**64) (a string, float or negative seed is refused)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise PruningError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise PruningError(f"seed must be in [0, 2**64) (a non-negative 64-bit integer), got "
                           f"{seed}")
    return int(seed)


def check_keeps_some(density: float, total: int, sparsity_text: object = None) -> None:
    """Refuse a target that keeps no weight at all (round(density * N) == 0)."""
    if round(density * total) == 0:
        shown = sparsity_text if sparsity_text is not None else f"{1 - density:.6g}"
        raise PruningError(f"sparsity {shown} keeps 0 of {total:,} prunable weights: the "
                           f"network would compute nothing; choose a lower sparsity")


def check_scores(method: str, scores: Mapping[str, Tensor], masks: Masks, density: float,
                 round_index: int = 0) -> None:
    """Refuse scores that cannot rank: NaN/inf, or one value for every live weight while the
    round must choose among them (e.g. float16 underflow to 0); never a mask from them. The
    live scores are checked where they are, in two device syncs (not one per layer)."""
    live: dict[str, Tensor] = {}
    for name, keep in masks.items():
        s = scores.get(name)
        if s is None or tuple(s.shape) != tuple(keep.shape):
            continue  # threshold() names missing or misshapen scores
        live[name] = s.detach().to(torch.float64)[keep.to(s.device)]
    if not live:
        return
    flat = torch.cat(list(live.values()))
    if not bool(torch.isfinite(flat).all()):
        name, s = next((n, s) for n, s in live.items() if not bool(torch.isfinite(s).all()))
        bad = int((~torch.isfinite(s)).sum())
        raise PruningError(f"{method} gave NaN/inf scores to {bad} weight(s) of {name!r} "
                           f"in round {round_index + 1} (numerical overflow, e.g. in "
                           f"float16); refusing to prune on them")
    must_choose = round(density * masks.total) < masks.kept
    if must_choose and flat.numel() > 1 and bool((flat == flat[0]).all()):
        raise PruningError(f"{method} gave all {flat.numel():,} remaining weights the same score "
                           f"({float(flat[0]):g}) in round {round_index + 1}: nothing to rank "
                           f"them by (e.g. float16 underflow to 0; use float32); refusing to "
                           f"prune on it")


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


# the paper's grid: 1 - 0.8**k for k = 2, 4, ..., 18 (36.00 ... 98.20 %)
PAPER_SPARSITIES: tuple[float, ...] = tuple(1.0 - 0.8**k for k in range(2, 19, 2))


def parse_sparsities(sparsities: str | Sequence[float | str]) -> list[float]:
    """``"paper"`` (the paper's nine sparsities, 36.00 ... 98.20 %) or a list: "0.9,98.2%",
    [0.9, "98.2%"]; each checked by ``parse_sparsity``."""
    if isinstance(sparsities, str):
        if sparsities == "paper":
            return list(PAPER_SPARSITIES)
        sparsities = [s for s in sparsities.split(",") if s.strip()]
    return [parse_sparsity(s) for s in sparsities]
