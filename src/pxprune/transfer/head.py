"""The classifier of a backbone: which nn.Linear it is, and a fresh one for the new task.

A model names its classifier in ``model.classifier_name`` (the built-in CIFAR ResNets do; a user
backbone gets it from :func:`set_classifier`, found by :func:`find_classifier` or given); without
it the last nn.Linear is the classifier (the built-in ResNet-50, VGG, EfficientNet-Lite0).
Features, probe and pruning all read the classifier through :func:`classifier_name`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ClassifierError


def classifier_name(model: nn.Module) -> str:
    """Module name of the classifier: ``model.classifier_name`` if set, else the last Linear."""
    name = getattr(model, "classifier_name", None)
    if isinstance(name, str):
        return name
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ClassifierError(f"{type(model).__name__} has no nn.Linear classifier")
    return linears[-1]


def classifier_module(model: nn.Module) -> nn.Linear:
    """The classifier nn.Linear of ``model`` (see :func:`classifier_name`)."""
    name = classifier_name(model)
    module = model.get_submodule(name)
    if not isinstance(module, nn.Linear):
        raise ClassifierError(f"classifier {name!r} is not an nn.Linear")
    return module


@torch.no_grad()
def find_classifier(model: nn.Module, example: Tensor) -> str:
    """Name of the last nn.Linear whose output is the model's output (the logits) on
    ``example`` (a small input batch), found by one eval-mode forward with hooks.

    A network whose output is not one Linear's output unchanged (a 1x1-conv head, logits scaled
    after the Linear) has no such layer: a ClassifierError asks for the name instead.
    """
    outputs: list[tuple[str, Tensor]] = []
    handles = [m.register_forward_hook(
        lambda _m, _i, out, name=name: outputs.append((name, out)))
        for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        logits = model(example)
    except RuntimeError as exc:  # e.g. a Linear sized for another image side
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ClassifierError(
            f"{type(model).__name__} fails on a batch of shape {tuple(example.shape)} ({first}): "
            f"give the image side it expects (--image-size)") from exc
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    kind = type(model).__name__
    if not outputs:
        raise ClassifierError(f"{kind} has no nn.Linear layer to use as the classifier")
    if not isinstance(logits, Tensor):
        raise ClassifierError(f"{kind} returns a {type(logits).__name__}, not a tensor of "
                              "logits: say which output is the logits (--output)")
    for name, out in reversed(outputs):
        if out is logits or (isinstance(out, Tensor) and out.shape == logits.shape
                             and torch.equal(out, logits)):
            return name
    raise ClassifierError(f"no nn.Linear of {kind} gives its output (the logits) unchanged: "
                          f"name the classifier (--classifier NAME; its nn.Linear layers: "
                          f"{', '.join(dict.fromkeys(n for n, _ in outputs))})")


def set_classifier(model: nn.Module, name: str) -> str:
    """Record ``name`` as the model's classifier (``model.classifier_name``) after checking that
    it names an nn.Linear of the model; returns it."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ClassifierError(f"{type(model).__name__} has no module {name!r} (its nn.Linear "
                              f"layers: {', '.join(linears) or 'none'})") from None
    if not isinstance(module, nn.Linear):
        raise ClassifierError(f"classifier {name!r} of {type(model).__name__} is a "
                              f"{type(module).__name__}, not an nn.Linear")
    model.classifier_name = name
    return name


def replace_classifier(model: nn.Module, num_classes: int, seed: int | None = None) -> nn.Linear:
    """Put a freshly initialised Linear(in_features, num_classes) in place of the classifier."""
    name = classifier_name(model)
    old = classifier_module(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    gen_state = None
    if seed is not None:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
    try:
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    finally:
        if gen_state is not None:
            torch.random.set_rng_state(gen_state)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    setattr(parent, attr, new)
    return new


__all__ = ["ClassifierError", "classifier_module", "classifier_name", "find_classifier",
           "replace_classifier", "set_classifier"]
