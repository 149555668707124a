"""The public entry points: ``score`` one round, ``prune`` over a schedule of rounds."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from . import checkpoint as prune_checkpoint
from .batches import as_batches, check_batches, require_targets
from .masks import Masks, PruningError, check_model_device, prunable_parameters
from .methods import REGISTRY, Method
from .methods.spec import check_options, format_method_spec, merge_options, parse_method_spec
from .numerics import exact_float32, first_nonfinite
from .pathview.reach import output_reach
from .progress import report_progress
from .schedule import (
    check_keeps_some,
    check_rounds,
    check_scores,
    check_seed,
    parse_sparsity,
    round_densities,
    threshold,
)
from .user_model import Output, check_output_option, logits_of, unwrap


def get_method(method: str) -> Method:
    """The registered method called ``method``, or a PruningError listing the valid names."""
    try:
        return REGISTRY[method]
    except (KeyError, TypeError):
        raise PruningError(
            f"unknown method {method!r}; choose one of {', '.join(sorted(REGISTRY))}"
        ) from None


def method_and_options(method: str, options: dict, pipeline_keys: bool) -> tuple[Method, dict]:
    """A method name or spec (``px[variant=bound]``) and keyword options -> the registered
    method and every option, each checked against what the method takes."""
    if not isinstance(method, str):
        raise PruningError(f"method must be a string such as 'px' or 'px[variant=bound]', got "
                           f"{type(method).__name__}")
    name, spec_options = parse_method_spec(method)
    seed = {k: options[k] for k in ("seed",) if k in options}  # score(..., seed=) is allowed
    merged = merge_options(method, spec_options, {k: v for k, v in options.items() if k != "seed"})
    check_options(name, merged, method if spec_options else None, pipeline_keys)
    return get_method(name), {**merged, **seed}


def check_finite(model: nn.Module) -> None:
    """Refuse a model whose parameters or buffers hold NaN or inf."""
    bad = first_nonfinite([*model.named_parameters(), *model.named_buffers()])
    if bad is not None:
        raise PruningError(f"the model has NaN/inf values in {bad!r}")


def _on_cpu(scores: dict[str, Tensor]) -> dict[str, Tensor]:
    """The scores as float64 CPU tensors (where the threshold is taken), in one device-to-host
    copy when they all live on one accelerator instead of one stalling copy per layer."""
    devices = {s.device for s in scores.values()}
    if len(devices) != 1 or next(iter(devices)).type == "cpu":
        return scores
    flat = torch.cat([s.detach().to(torch.float64).flatten() for s in scores.values()]).cpu()
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = flat[start : start + s.numel()].view(s.shape)
        start += s.numel()
    return out


class DisconnectedMasksWarning(UserWarning):
    """``prune`` returned masks with empty layers, or that cut some or all outputs off the input."""


def _warn_if_disconnected(model: nn.Module, masks: Masks, batches: list, method: str) -> None:
    """Warn, naming the empty layers, when masks keep no weight of some layer; say so when no
    path of kept weights is left from input to output (the command line refuses those), or when
    only some outputs keep one (those logits no longer depend on the input)."""
    empty = masks.collapsed_layers()
    reached, total = output_reach(model, masks, batches[0][0][:1]) if batches else (1, 1)
    if not empty and reached == total:
        return
    if reached == 0:
        cut = "no path of kept weights joins the input to the output; "
    elif reached < total:
        cut = (f"only {reached} of {total} outputs are joined to the input by a path of kept "
               "weights (the others are constant); ")
    else:
        cut = ""
    named = f"{len(empty)} empty layer(s): {', '.join(empty[:6])}" + (
        " ..." if len(empty) > 6 else "")
    warnings.warn(f"{method} kept {masks.kept:,} of {masks.total:,} weights; " + cut
                  + (named if empty else "no layer is empty"),
                  DisconnectedMasksWarning, stacklevel=3)


def dense_names(model: nn.Module, keep_dense: object) -> list[str]:
    """The prunable tensors ``keep_dense`` names: parameter names (``fc.weight``), module names
    (``fc``), or ``"first"`` / ``"last"`` (the first and last prunable tensors in registration
    order: typically the stem convolution and the classifier); a one-line error otherwise."""
    if isinstance(keep_dense, str):
        keep_dense = [s for s in keep_dense.split(",") if s.strip()]
    if not isinstance(keep_dense, (list, tuple, set, frozenset)) or not all(
            isinstance(s, str) for s in keep_dense):
        raise PruningError(f"keep_dense must name layers ('first', 'last', 'fc' or "
                           f"'fc.weight'), got {keep_dense!r}")
    prunable = list(prunable_parameters(model))
    aliases = {"first": prunable[0], "last": prunable[-1]}
    names = []
    for given in (s.strip() for s in keep_dense):
        name = aliases.get(given) or (given if given in prunable else f"{given}.weight")
        if name not in prunable:
            raise PruningError(f"keep_dense: {given!r} is not a prunable layer; choose 'first', "
                               f"'last' or one of {', '.join(prunable[:5])}"
                               + (" ..." if len(prunable) > 5 else ""))
        names.append(name)
    if len(set(names)) == len(prunable):
        raise PruningError("keep_dense names every prunable layer: nothing is left to prune")
    return sorted(set(names), key=prunable.index)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _inner_masks(masks: Mapping[str, Tensor] | None, prefix: str) -> Masks | None:
    """Masks named as the wrapper names its parameters (``_orig_mod.``, ``module.``) renamed to
    the inner module's names; masks already named for the inner module pass unchanged."""
    if masks is None:
        return None
    if not isinstance(masks, Mapping):
        return Masks(masks)  # Masks names the wrong type in one line
    return Masks({n[len(prefix):] if prefix and n.startswith(prefix) else n: m
                  for n, m in masks.items()})


def _outer_masks(masks: Masks, prefix: str) -> Masks:
    """The inner module's masks under the wrapper's parameter names."""
    return masks if not prefix else Masks({prefix + n: m for n, m in masks.items()})


def _data(model: nn.Module, spec: Method, method: str, data: object,
          output: Output) -> list:
    """The data as checked batches on the model's device ([] for a data-free method given
    none): the same one-line checks as the command line's."""
    if not spec.needs_data and data is None:
        return []
    batches = as_batches(data, _device(model))
    if spec.needs_labels:
        require_targets(batches, method)
    # labels are checked against the outputs only where the method uses them
    check_batches(model, batches if spec.needs_labels else [(x, None) for x, _ in batches],
                  output)
    return batches


def score(
    model: nn.Module,
    method: str,
    data: object = None,
    *,
    masks: Masks | Mapping[str, Tensor] | None = None,
    output: Output = None,
    **options,
) -> dict[str, Tensor]:
    """One round of ``method``'s scores for the prunable weights (non-negative, same shapes).

    ``method`` is a name or a spec with options, ``"px[variant=bound]"``; options may also be
    passed as keywords. ``data`` is a tensor, or an iterable of tensors or (input, target)
    pairs. The model's weights are left untouched; ``masks`` (default: keep all) says which
    weights are already pruned.

    ``output`` names the logits of a model that returns several outputs: a tuple index
    (``0``) or a dict key / attribute (``"logits"``). A ``torch.compile``d or
    ``nn.DataParallel`` model is scored through the module it wraps; the scores carry the
    wrapper's parameter names.
    """
    spec, options = method_and_options(method, options, pipeline_keys=False)
    output = check_output_option(output)
    model, prefix = unwrap(model)
    check_model_device(model)
    check_finite(model)
    masks = Masks.ones(model) if masks is None else _inner_masks(masks, prefix)
    batches = _data(model, spec, method, data, output)
    with exact_float32(), logits_of(model, output):  # no TF32 on CUDA: its 1e-3 errors
        scores = spec.score(model, batches, masks, **options)  # reorder weights near the cut
    bad = first_nonfinite(scores.items())
    if bad is not None:
        raise PruningError(f"{method} produced NaN/inf scores for {bad!r}")
    check_scores(method, scores, masks, 0.0)  # one value for all (float16 underflow): refused
    return {prefix + n: s for n, s in scores.items()}


def prune(
    model: nn.Module,
    method: str,
    sparsity: float | str,
    data: object = None,
    *,
    rounds: int | None = None,
    scope: str = "global",
    seed: int = 0,
    progress: bool = True,
    masks: Masks | None = None,
    start_round: int = 0,
    checkpoint: str | Path | None = None,
    keep_checkpoint: bool = False,
    output: Output = None,
    keep_dense: str | list[str] | tuple[str, ...] = (),
    **options,
) -> Masks:
    """Prune ``model`` to ``sparsity`` with ``method``; apply and return the masks.

    ``method`` is a name or a spec with options (``"px[variant=bound,bn=batch]"``,
    ``"snip[rounds=10]"``); options may also be passed as keywords.

    Round r of ``rounds`` keeps density ``d**(r/rounds)`` (d = 1 - sparsity) by a global (or
    per-layer, ``scope="layer"``) threshold on the scores of the masked network, keeping exactly
    ``round(d*N)`` weights. ``rounds=None`` uses the method's default (100 for PX and SynFlow,
    1 for the others).

    ``start_round=j`` with ``masks`` continues a schedule whose first ``j`` rounds gave ``masks``
    (e.g. a lower sparsity whose per-round counts are a prefix of this one's): rounds j+1 ...
    ``rounds`` run as they would in one call (same densities, same seeds ``seed + r``).

    ``checkpoint`` (a file path) makes a multi-round schedule survive interruption: the masks
    are saved there every few seconds of scoring, a later call with the same pruning (method,
    options, sparsity, rounds, scope, seed, starting weights, data) resumes after the saved
    round, another pruning is refused, and the file is deleted once the schedule is done
    (``keep_checkpoint=True``: it is kept, holding the final masks, and a later call returns
    them at once).

    Masks with an empty layer, or that leave no path of kept weights from input to output,
    are returned with a ``DisconnectedMasksWarning`` naming the empty layers.

    ``keep_dense`` leaves layers unpruned and out of the count (e.g. ``("first", "last")``,
    the stem convolution and the classifier, or names: ``"fc"``, ``"conv1.weight"``): the
    masks hold the other tensors only, and ``sparsity`` applies to those.

    ``output`` and wrapped models (``torch.compile``, ``nn.DataParallel``): as in ``score``.
    """
    spec, options = method_and_options(method, options, pipeline_keys=True)
    output = check_output_option(output)
    model, prefix = unwrap(model)
    masks = _inner_masks(masks, prefix)
    rounds = options.pop("rounds", rounds)
    scope = str(options.pop("scope", scope))
    density = 1.0 - parse_sparsity(sparsity)
    check_model_device(model)
    check_finite(model)
    dense = set(dense_names(model, keep_dense)) if keep_dense else set()
    check_keeps_some(density, sum(p.numel() for n, p in prunable_parameters(model).items()
                                  if n not in dense),
                     sparsity)  # prunable_parameters raises when there is nothing to prune
    rounds = spec.default_rounds if rounds is None else check_rounds(
        rounds, sum(p.numel() for p in prunable_parameters(model).values()), density)
    seed = check_seed(seed)
    schedule = round_densities(density, rounds)
    batches = _data(model, spec, method, data, output)
    if not 0 <= start_round < rounds:
        raise PruningError(f"start_round must be in [0, {rounds}), got {start_round}")
    if start_round and masks is None:
        raise PruningError("start_round > 0 needs the masks those rounds produced")
    if masks is None:
        current = Masks({n: m for n, m in Masks.ones(model).items() if n not in dense})
    elif dense & set(masks):
        raise PruningError(f"keep_dense names {sorted(dense & set(masks))}, which the given "
                           f"masks prune")
    else:
        current = masks
    original = {n: p.detach().clone() for n, p in model.named_parameters() if n in current}
    path = Path(checkpoint) if checkpoint is not None and rounds > 1 else None
    ident: dict = {}
    if path is not None:
        # the resolved spec: a checkpoint of ``px`` under an older default is another pruning
        resolved = format_method_spec(spec.name, spec.resolved_options(options))
        ident = prune_checkpoint.identity(
            resolved, options, density, rounds, scope, seed,
            prune_checkpoint.fingerprint(original, batches))
        saved = prune_checkpoint.load(path, ident)
        if saved is not None and saved[1] > start_round:
            current, start_round = saved[0].in_order_of(model), saved[1]
    last_save = time.monotonic()
    try:
        for r, d in enumerate(report_progress(schedule[start_round:], rounds, f"{method} rounds",
                                              progress and rounds > 1, start_round),
                              start=start_round):
            current.apply_(model)  # score the masked network
            with exact_float32(), logits_of(model, output):  # no TF32 on CUDA (see score)
                scores = _on_cpu(spec.score(model, batches, current, seed=seed + r, **options))
            check_scores(method, scores, current, d, r)  # NaN/inf or all-equal: no mask
            current = threshold(scores, d, current, scope)
            if path is not None and r + 1 < rounds and (
                    time.monotonic() - last_save >= prune_checkpoint.CHECKPOINT_SECONDS):
                prune_checkpoint.save(path, current, r + 1, ident)
                last_save = time.monotonic()
    finally:
        with torch.no_grad():  # the method saw masked weights; hand back the originals
            for n, p in model.named_parameters():
                if n in original:
                    p.copy_(original[n])
    current.apply_(model)
    if path is not None:
        if keep_checkpoint:  # the caller decides (the command line keeps refused masks)
            prune_checkpoint.save(path, current, rounds, ident)
        else:
            path.unlink(missing_ok=True)
    with logits_of(model, output):
        _warn_if_disconnected(model, current, batches, method)
    return _outer_masks(current, prefix)
