"""K copies of one architecture as stacked tensors, run as one ``torch.func.vmap`` computation.

Why vmap over ``functional_call`` (and not hand-written grouped convolutions): it works for any
model built from standard layers without rewriting it, and torch's batching rules already turn a
convolution whose input and weight are both batched into one grouped convolution (groups = K)
and a linear layer into one batched matmul, which is what HFTA-style fusion does by hand.

BatchNorm: the running statistics are stacked like the weights and passed as batched buffers;
vmap's batch-norm rule normalises each cell with its own batch statistics and its in-place
``running_mean``/``running_var``/``num_batches_tracked`` updates land in that cell's slice of the
stacked buffer (checked against K separate modules in tests/training/test_stacked.py), so no
functional BatchNorm replacement is needed. Randomness inside the model (dropout) is refused
(``randomness="error"``): every cell would need its own stream, which the ordinary trainer's
global RNG cannot reproduce.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class StackedModel:
    """Parameters and buffers of K same-architecture modules stacked on a new leading dim."""

    def __init__(self, models: Sequence[nn.Module], device: str | torch.device) -> None:
        device = torch.device(device)
        params, buffers = stack_module_state([m.to(device) for m in models])
        self.params: dict[str, torch.Tensor] = {
            k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.buffers: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in
                                                 buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only
        self.keys = list(models[0].state_dict().keys())  # persistent entries, in order

    @property
    def size(self) -> int:
        """K, the number of stacked cells."""
        return next(iter(self.params.values())).shape[0]

    def forward(self, x: torch.Tensor, *, train: bool, shared: bool = False) -> torch.Tensor:
        """Logits (K, B, classes) of each cell for its images ``x`` (K, B, ...), or for the same
        images (B, ...) when ``shared``; BatchNorm statistics update per cell when ``train``."""
        self.base.train(train)

        def call(p: dict, b: dict, xs: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xs,))

        return vmap(call, in_dims=(0, 0, None if shared else 0), randomness="error")(
            self.params, self.buffers, x)

    def cell_state(self, k: int) -> dict[str, torch.Tensor]:
        """Cell k's state_dict (detached copies on the CPU), loadable into one module."""
        both = {**self.params, **self.buffers}
        return {key: both[key][k].detach().cpu().clone() for key in self.keys}

    def load_cell(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Overwrite cell k's slice with a single module's ``state`` (a resumed checkpoint)."""
        with torch.no_grad():
            for key, t in {**self.params, **self.buffers}.items():
                if key in state:
                    t[k].copy_(state[key])

    def keep(self, cells: Sequence[int]) -> None:
        """Keep only ``cells`` (indices into the current stack), in that order."""
        idx = torch.as_tensor(list(cells), dtype=torch.long,
                              device=next(iter(self.params.values())).device)
        self.params = {k: v.detach().index_select(0, idx).requires_grad_(True)
                       for k, v in self.params.items()}
        self.buffers = {k: v.index_select(0, idx) for k, v in self.buffers.items()}
