"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from torch import Tensor, nn

from ..batches import Batch
from ..masks import Masks, PruningError, prunable_parameters
from ..models.weights import fitting_state_dict
from ..schedule import check_rounds, parse_sparsity, round_densities, threshold
from ..user_model import unwrap
from . import register
from ._common import masked_weights

TrainFn = Callable[[nn.Module, Masks], None]


def imp_densities(density: float, prune_fraction: float = 0.2, rounds: int | None = None
                  ) -> list[float]:
    """Densities after each IMP iteration: remove ``prune_fraction`` of the remaining weights
    each time, the last step landing exactly on ``density`` (or ``d**(r/rounds)`` if ``rounds``)."""
    if rounds is not None:
        return round_densities(density, rounds)
    if not 0.0 < prune_fraction < 1.0:
        raise PruningError(f"prune_fraction must be in (0, 1), got {prune_fraction}")
    if density >= 1.0:
        return []
    steps = max(1, math.ceil(math.log(density) / math.log(1.0 - prune_fraction) - 1e-9))
    return [(1.0 - prune_fraction) ** i for i in range(1, steps)] + [density]


def run_imp(
    model: nn.Module,
    sparsity: float | str,
    train_fn: TrainFn,
    rewind_state: Mapping[str, Tensor] | None = None,
    prune_fraction: float = 0.2,
    *,
    rounds: int | None = None,
    scope: str = "global",
    masks: Masks | None = None,
    callback: Callable[[int, Masks], None] | None = None,
) -> Masks:
    """Find a lottery ticket: train, prune the smallest weights, rewind; repeat to ``sparsity``.

    Each iteration calls ``train_fn(model, masks)`` (it must train in place and keep pruned
    weights at zero, e.g. with ``masks.attach(model)``), keeps the largest ``|theta|`` among the
    live weights (global or per-layer ``scope``, exact counts) at the next density, then loads
    ``rewind_state`` (a state dict: weights *and* buffers) and zeroes the pruned weights. The
    number of iterations follows from ``prune_fraction`` (20 % of the remaining weights per
    iteration, the last one landing exactly on the target), or pass ``rounds`` for the
    ``d**(r/rounds)`` schedule of :func:`pxprune.prune`. ``rewind_state=None`` rewinds to the
    model's state on entry (Frankle & Carbin 2019, rewinding to init); pass the state dict saved
    after k training steps for late rewinding (Frankle et al. 2020, "Linear mode connectivity").

    Unlike the foresight scores this *does* change the model: on return it holds the rewound
    weights with the ticket's mask applied (train it afterwards with the masks attached).
    ``callback(iteration, masks)`` is called after each iteration (logging, checkpoints).
    """
    density = 1.0 - parse_sparsity(sparsity)
    prunable_parameters(model)
    current = Masks.ones(model) if masks is None else Masks(masks)
    if rounds is not None:  # refused before any training, like pxprune.prune's rounds
        rounds = check_rounds(rounds, current.kept, density * current.total / current.kept)
    if rewind_state is None:
        rewind_state = model.state_dict()
    # a rewind state that does not fit is one line now, not a traceback after the first training;
    # checked (and copied, so training cannot change it) once, then loaded as is every round
    rewind_state, _ = fitting_state_dict(model, {k: v.detach().clone()
                                                 for k, v in rewind_state.items()},
                                         source="rewind_state")
    inner = unwrap(model)[0]
    for i, d in enumerate(imp_densities(density, prune_fraction, rounds)):
        current.apply_(model)
        train_fn(model, current)
        scores = {n: w.abs() for n, w in masked_weights(model, current).items()}
        current = threshold(scores, d, current, scope)
        inner.load_state_dict(rewind_state, strict=False)
        current.apply_(model)
        if callback is not None:
            callback(i, current)
    current.apply_(model)
    return current


@register("imp", needs_data=False, display_name="IMP", color="#e377c2", trains=True)
def score(model: nn.Module, batches: list[Batch], masks: Masks, *, seed: int = 0,
          **options: object) -> dict[str, Tensor]:
    """Not a one-shot score: IMP trains between rounds; use :func:`run_imp`."""
    raise PruningError(
        "imp (iterative magnitude pruning) trains between rounds and cannot run as a score: use "
        "`pxprune run --method imp`, or call pxprune.methods.imp.run_imp(model, sparsity, "
        "train_fn) with a train_fn(model, masks) that trains the model in place"
    )

