"""Per-cell SGD and fp16 loss scaling over stacked parameters, with the masks held fixed.

The update is ``torch.optim.SGD``'s (dampening 0, the one ``make_optimizer`` builds): weight
decay added to the gradient, ``buf = momentum * buf + g`` (a zero buffer before the first step
gives ``buf = g`` exactly, as torch's clone does), Nesterov ``g + momentum * buf``, then
``p - lr * g``. Each cell has its own lr and momentum (its schedule), and a cell that is not
``ok`` this step (a non-finite loss, or fp16 gradients that overflowed) keeps its weights and
momentum. Pruned gradients are zeroed before the update and pruned weights re-zeroed after it
(``masked_fill_``, which also clears a NaN), so they stay exactly zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _cells(v: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """A per-cell value (K,) shaped to broadcast over ``like`` (K, ...); a float stays one."""
    if isinstance(v, float):
        return v
    return v.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def uniform(values: Sequence[float]) -> float | None:
    """The common value of ``values`` when they are all equal, else None."""
    return values[0] if all(v == values[0] for v in values) else None


class StackedSGD:
    """SGD with per-cell lr/momentum over ``params`` (name -> (K, ...)), masks from ``pruned``."""

    def __init__(self, params: dict[str, torch.Tensor], pruned: dict[str, torch.Tensor],
                 weight_decay: float, nesterov: bool, momentum: bool) -> None:
        self.pruned = pruned  # name -> (K, ...) bool, True where the weight is pruned
        self.weight_decay, self.nesterov, self.momentum = weight_decay, nesterov, momentum
        self.bufs = ({k: torch.zeros_like(p, memory_format=torch.preserve_format)
                      for k, p in params.items()} if momentum else {})

    @torch.no_grad()
    def rezero(self, params: dict[str, torch.Tensor]) -> None:
        """Zero the pruned weights (at the start and after a resume)."""
        for name, pruned in self.pruned.items():
            params[name].masked_fill_(pruned, 0)

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], lr: torch.Tensor | float,
             momentum: torch.Tensor | float, ok: torch.Tensor) -> None:
        """One update of every cell where ``ok`` (K,) bool; ``lr``/``momentum``: one float for
        all cells or a (K,) tensor. Gradients are consumed and cleared."""
        for name, p in params.items():
            g = p.grad
            if g is None:
                continue
            p.grad = None
            if name in self.pruned:
                g.masked_fill_(self.pruned[name], 0)
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            keep = ok.view(-1, *([1] * (p.dim() - 1)))
            if self.momentum:
                buf = self.bufs[name]
                m = _cells(momentum, p)
                new_buf = buf * m + g
                buf.copy_(torch.where(keep, new_buf, buf))
                if not self.nesterov:
                    g = new_buf
                elif isinstance(m, float):
                    g = g.add(new_buf, alpha=m)
                else:
                    g = g + m * new_buf
            new = p.add(g, alpha=-lr) if isinstance(lr, float) else p - _cells(lr, p) * g
            p.copy_(torch.where(keep, new, p))
            if name in self.pruned:
                p.masked_fill_(self.pruned[name], 0)

    def keep(self, idx: torch.Tensor) -> None:
        """Keep only the cells ``idx`` (after cells left the stack)."""
        self.pruned = {k: v.index_select(0, idx) for k, v in self.pruned.items()}
        self.bufs = {k: v.index_select(0, idx) for k, v in self.bufs.items()}


class CellScaler:
    """torch.amp.GradScaler's dynamic loss scaling, one scale per cell (fp16 only).

    One shared scale would skip every cell's step when one cell's gradients overflow; here a
    cell's overflow skips and backs off only that cell, as K separate GradScalers would.
    """

    GROWTH, BACKOFF, INTERVAL, INIT = 2.0, 0.5, 2000, 65536.0

    def __init__(self, k: int, device: torch.device, enabled: bool) -> None:
        self.enabled = enabled
        self.scale = torch.full((k,), self.INIT, dtype=torch.float32, device=device)
        self.tracker = torch.zeros(k, dtype=torch.int32, device=device)

    def loss(self, losses: torch.Tensor) -> torch.Tensor:
        """The scalar to backpropagate: the sum of each cell's loss times its scale."""
        return (losses.float() * self.scale).sum() if self.enabled else losses.sum()

    @torch.no_grad()
    def unscale(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Divide each cell's gradients by its scale; return (K,) True where all are finite."""
        finite = torch.ones_like(self.tracker, dtype=torch.bool)
        if not self.enabled:
            return finite
        inv = self.scale.double().reciprocal().float()
        for p in params.values():
            if p.grad is not None:
                p.grad.mul_(_cells(inv, p.grad))
                finite &= torch.isfinite(p.grad).flatten(1).all(1)
        return finite

    @torch.no_grad()
    def update(self, finite: torch.Tensor) -> None:
        """GradScaler.update per cell: back off after an overflow, grow after INTERVAL clean
        steps."""
        if not self.enabled:
            return
        grown = self.tracker + 1
        grow = finite & (grown >= self.INTERVAL)
        self.scale.copy_(torch.where(~finite, self.scale * self.BACKOFF,
                                     torch.where(grow, self.scale * self.GROWTH, self.scale)))
        self.tracker.copy_(torch.where(finite & ~grow, grown, torch.zeros_like(grown)))

    def state_dict(self, k: int) -> dict:
        """Cell k's state in GradScaler.state_dict() form ({} when disabled)."""
        if not self.enabled:
            return {}
        return {"scale": float(self.scale[k]), "growth_factor": self.GROWTH,
                "backoff_factor": self.BACKOFF, "growth_interval": self.INTERVAL,
                "_growth_tracker": int(self.tracker[k])}

    def load_cell(self, k: int, state: dict) -> None:
        """Restore cell k from a GradScaler state dict (ignored when empty)."""
        if self.enabled and state:
            self.scale[k] = float(state["scale"])
            self.tracker[k] = int(state["_growth_tracker"])

    def keep(self, idx: torch.Tensor) -> None:
        """Keep only the cells ``idx``."""
        self.scale = self.scale.index_select(0, idx)
        self.tracker = self.tracker.index_select(0, idx)
