"""The ridge probe: a closed-form linear classifier fitted on the downstream TRAINING features
only (l2 chosen on a held-out part of them), written into the classifier so the (pruned) model
is directly usable; with the classifier's mask, class k reads only its kept features."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageDataset
from ..errors import PxpruneError
from ..masks import Masks
from .features import extract_features
from .head import classifier_module, classifier_name, replace_classifier


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


__all__ = ["Probe", "ProbeResult", "classifier_mask", "default_l2_grid", "fit_probe",
           "fit_ridge_probe", "holdout_split", "install_probe", "linear_probe", "probe_accuracy",
           "probe_logits"]
