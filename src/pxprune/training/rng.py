"""The global RNG states a training checkpoint holds (torch, numpy, python, CUDA).

Data order and crop/flip come from their own (seed, epoch, batch) streams; these global RNGs only
drive randomness inside the model (dropout, say), so a resume restores them exactly.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_globals(seed: int) -> None:
    """Seed torch, numpy and python's RNGs from ``seed`` (what a fresh training run does)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state(device: torch.device) -> dict:
    """The global RNG states a resume must restore (torch, numpy, python, CUDA)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # stored as a tensor: weights_only
    state = {"torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    keys = keys.cpu().numpy() if torch.is_tensor(keys) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seeded_rng_state(seed: int, device: torch.device) -> dict:
    """The global RNG state after :func:`seed_globals` (what the ordinary trainer's checkpoints
    hold when training draws no random numbers), leaving the current state as it is."""
    saved = rng_state(device)
    try:
        seed_globals(seed)
        return rng_state(device)
    finally:
        set_rng_state(saved)
