"""Whether a path of kept weights joins the input to the output: connectivity judged on the
masks themselves, exact whatever the weights' values, the BatchNorm statistics or the precision.

The model runs once on an all-ones input with every Conv/Linear weight replaced by its 0/1
mask (unpruned ones by all ones), no bias, activations, normalisations and dropout as the
identity, and each Conv/Linear output turned back into a 0/1 "reached" indicator. Sums
(residuals), products (gates), pooling and reshaping then carry reachability: an output is
non-zero exactly when some path of kept weights leads to it from some input.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..user_model import eval_mode
from .interceptor import BATCHNORM, HARDTANH, LEAKY, RELU, SMOOTH, WEIGHTED
from .op_args import OpCall

PASS_THROUGH = RELU | LEAKY | HARDTANH | SMOOTH | BATCHNORM | {
    "layer_norm", "group_norm", "instance_norm", "local_response_norm", "prelu", "rrelu",
    "rrelu_", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "softmax", "log_softmax"}


class _Reach(TorchFunctionMode):
    """Conv/Linear with 0/1 weights and no bias, then an indicator; the rest as the identity."""

    def __init__(self, keep: Mapping[int, Tensor]):
        super().__init__()
        self.keep = keep

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        if name in WEIGHTED:
            call = OpCall(name, func, args, kwargs)
            weight = call.get("weight")
            keep = self.keep.get(id(weight))
            if keep is None:
                keep = torch.ones_like(weight, dtype=torch.float64)
            x = call.input.to(torch.float64)
            out = call.with_(input=(x != 0).to(torch.float64), weight=keep, bias=None)()
            return (out != 0).to(torch.float64)
        if name in PASS_THROUGH:
            return args[0] if args else next(iter(kwargs.values()))
        return func(*args, **kwargs)


@torch.no_grad()
def output_reach(model: nn.Module, masks: Mapping[str, Tensor], example: Tensor) -> tuple[int, int]:
    """``(reached, total)``: how many of the model's outputs for one example a path of kept
    weights joins to the input, and how many outputs there are. ``example`` gives the input's
    shape (its values are not used). A classifier with ``reached < total`` has logits that
    cannot depend on the input: those classes are decided by biases alone."""
    params = dict(model.named_parameters())
    keep = {id(params[n]): m.to(device=params[n].device, dtype=torch.float64)
            for n, m in masks.items() if n in params}
    with eval_mode(model), _Reach(keep):
        out = model(torch.ones_like(example[:1], dtype=torch.float64))
    return int((out != 0).sum()), out.numel()


def reached_outputs(model: nn.Module, masks: Mapping[str, Tensor], example: Tensor) -> int:
    """How many of the model's outputs a path of kept weights joins to the input; ``example``
    gives the input's shape (one example is enough: its values are not used)."""
    return output_reach(model, masks, example)[0]
