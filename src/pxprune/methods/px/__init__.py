"""PX — Path eXclusion (Iurada, Ciccone, Tommasi, CVPR 2024): the registered ``px`` score.

Two definitions (docs/px.md):

- ``variant="cvpr2024"`` (the default, :mod:`.cvpr2024`): the authors' April-2024 scoring, the
  code that produced the paper's numbers. Cross-checked against that code on the same
  ResNet-20 weights and 100 CIFAR-10 images: float64 scores agree to 6.5e-9 relative and ten
  iterative rounds give the same masks. In both CPU sweeps it empties no layer and trains at
  the top or level with the best baselines. It needs no gate decomposition, so it works on
  SiLU / GELU / Hardswish networks, depthwise convolutions, squeeze-excite and LayerNorm.
- ``variant="bound"`` (:mod:`.bound`): the NTK-trace upper bound of docs/px.md §2 written out
  exactly (brute-force path-enumeration tests), with ReLU gates replayed from the real network.
  With running-statistics BatchNorm (``bn="running"``, its default) it empties ResNet-20's last
  stage at >= 95.6 % sparsity and trains 7-10 points worse; ``bn="batch"`` takes the BatchNorm
  scales and gates from a batch-statistics forward and empties no layer. It is kept for studies
  of the bound and for ``pxprune ntk``'s path bound.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...batches import Batch
from ...errors import PXNumericsError
from ...masks import Masks
from .. import register
from .bound import (
    FLOAT32_INPUT_FLOOR,
    PROBE_TOLERANCE,
    PXPrecisionFallback,
    find_classifier,
    path_activation_sum,
    px_terms,
    record_gates,
)
from .cvpr2024 import cvpr2024_scores
from .options import CLASSIFIER_MODES, DEFAULT_VARIANT, VARIANTS, check_px_options

__all__ = [
    "CLASSIFIER_MODES", "DEFAULT_VARIANT", "FLOAT32_INPUT_FLOOR", "PROBE_TOLERANCE",
    "PXNumericsError", "PXPrecisionFallback", "VARIANTS", "find_classifier",
    "path_activation_sum", "px_terms", "record_gates", "resolved_options", "score",
]


def resolved_options(options: dict, legacy: bool = False) -> dict:
    """``options`` with the variant written out (what ``px`` means now, recorded in configs).

    ``legacy=True``: what it meant before 2026-11-30, when the default was the bound (then
    called ``variant="paper"``); used for run folders that recorded no resolved method."""
    options = dict(options)
    if legacy:
        variant = options.get("variant", "paper")
        options["variant"] = "bound" if variant == "paper" else variant
    return {"variant": DEFAULT_VARIANT, **options}


@register("px", needs_data=True, default_rounds=100, display_name="PX", color="#d62728",
          resolve=resolved_options, check=check_px_options)
def score(
    model: nn.Module,
    batches: list[Batch],
    masks: Masks,
    *,
    seed: int = 0,
    variant: str = DEFAULT_VARIANT,
    precision: str = "float32",
    bn: str = "running",
    classifier: str = "real",
    classifier_name: str | None = None,
    approximate_unsupported: bool = False,
) -> dict[str, Tensor]:
    """PX saliency per prunable weight; ``variant`` chooses the definition (module docstring).

    ``precision`` ("float32" or "float64") applies to both. ``bn`` ("running" or "batch"),
    ``classifier`` ("real" or "ones"), ``classifier_name`` and ``approximate_unsupported``
    (treat GELU/SiLU as ReLU gates) are options of the bound only.
    """
    check_px_options({"variant": variant, "precision": precision, "bn": bn,
                      "classifier": classifier, "classifier_name": classifier_name,
                      "approximate_unsupported": approximate_unsupported})
    if variant == "cvpr2024":
        return cvpr2024_scores(model, batches, masks, precision)
    _, shares = px_terms(
        model, batches, masks, classifier=classifier, classifier_name=classifier_name,
        precision=precision, approximate_unsupported=approximate_unsupported, bn=bn,
    )
    return {name: s.abs() for name, s in shares.items()}
