"""PX's default score: the authors' April-2024 scoring (docs/px.md §1), on any vision block.

``R = sum_x z1(x) . z2(x)`` with two copies of the network, both on the raw input:

- copy 1 (``z1``, no gradient) is the real masked network: every activation and normalisation
  as the model computes it, except that BatchNorm uses the statistics of the batch (the
  authors' ``train()`` mode) without touching the running statistics;
- copy 2 (``z2``) removes every nonlinearity: each activation (ReLU and its relatives, SiLU,
  GELU, Hardswish, Hardsigmoid, sigmoid, tanh, ...) is the identity, and every Conv/Linear uses
  ``(mask*theta)**2`` for its weight and ``bias**2`` for its bias, classifier included.

The score of a prunable weight is ``|dR/d(theta^2)| * |theta|**5`` (the authors'
``|dR/dtheta^2 * theta^2 * theta * theta^2|``).

What copy 2 does with the blocks of modern vision networks (decided here, tested against copies
built by hand in tests/px/test_px_default.py):

- a gating multiplication (squeeze-excite ``x * sigmoid(fc2(act(fc1(pool(x)))))``, SiLU written
  as ``x * x.sigmoid()``) stays a multiplication; with its activations removed the gate becomes
  the linear branch ``fc2(fc1(pool(x)))`` with squared weights, so the gate's weights are scored
  through the product, like every other weight;
- normalisation layers normalise what they see: BatchNorm with the statistics of the batch,
  LayerNorm / GroupNorm / InstanceNorm per example, their affine parameters as they are (not
  squared: a normalisation is found by what it computes, not by its name);
- max-pooling stays a max-pool (the authors kept it); depthwise and grouped convolutions are
  convolutions like any other;
- other parameters a model multiplies or adds directly (layer scale, position embeddings) enter
  both copies unchanged;
- attention (``nn.MultiheadAttention``, scaled-dot-product attention), transposed convolutions,
  softmax and GLU are refused with a one-line error naming the module: no definition of copy 2
  for them has been decided or tested.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...batches import Batch
from ...errors import PruningError, PXNumericsError, UnsupportedLayerError
from ...masks import Masks
from ...numerics import first_nonfinite
from ...pathview import Interceptor, weighted_modules
from ...pathview.op_args import OpCall
from ...user_model import eval_mode
from .options import check_px_options

ACTIVATIONS = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "prelu",
    "elu", "elu_", "selu", "selu_", "celu", "celu_", "gelu", "silu", "sigmoid", "sigmoid_",
    "tanh", "tanh_", "hardswish", "hardsigmoid", "mish", "softplus",
})
WEIGHTED = frozenset({"conv1d", "conv2d", "conv3d", "linear"})
BATCH_NORM = frozenset({"batch_norm"})
PER_EXAMPLE_NORMS = frozenset({"layer_norm", "group_norm", "instance_norm"})
REFUSED = {
    "multi_head_attention_forward": "attention",
    "scaled_dot_product_attention": "attention",
    "conv_transpose1d": "a transposed convolution", "conv_transpose2d": "a transposed convolution",
    "conv_transpose3d": "a transposed convolution",
    "softmax": "softmax", "log_softmax": "softmax", "glu": "GLU", "rrelu": "a random activation",
    "rrelu_": "a random activation",
}


class Cvpr2024Copy(Interceptor):
    """One of the two copies: ``square=False`` is copy 1, ``square=True`` copy 2.

    ``weights`` / ``biases`` map ``id(parameter)`` of every Conv/Linear weight and bias to its
    value in this copy. Counts of activation and normalisation calls let the caller refuse
    networks where the two copies would be the same computation.
    """

    def __init__(self, model: nn.Module, weights: dict[int, Tensor], biases: dict[int, Tensor],
                 square: bool, dtype: torch.dtype):
        super().__init__(model)
        self.weights, self.biases, self.square, self.dtype = weights, biases, square, dtype
        self.batchnorm_calls = 0
        self.nonlinear_calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        if name in WEIGHTED:
            return self._weighted(OpCall(name, func, args, kwargs))
        if name in ACTIVATIONS:
            self.nonlinear_calls += 1
            return args[0] if self.square else func(*args, **kwargs)
        if name in BATCH_NORM:
            self.batchnorm_calls += 1
            return self._batch_norm(OpCall(name, func, args, kwargs))
        if name in PER_EXAMPLE_NORMS:
            self.nonlinear_calls += 1
            return self._per_example_norm(OpCall(name, func, args, kwargs))
        if name in REFUSED:
            raise UnsupportedLayerError(
                f"PX cannot score {REFUSED[name]} ({name}) in module {self.current_module}: "
                "its copy without nonlinearities is not defined")
        return func(*args, **kwargs)

    def _weighted(self, call: OpCall):
        weight = call.get("weight")
        if id(weight) not in self.weights:
            raise UnsupportedLayerError(f"{call.name} in module {self.current_module} uses a "
                                        "weight that is not a parameter of a Conv/Linear module")
        bias = call.get("bias")
        if bias is not None:
            if id(bias) not in self.biases:
                raise UnsupportedLayerError(f"{call.name} in module {self.current_module} uses a "
                                            "bias that is not its module's parameter")
            bias = self.biases[id(bias)]
        return call.with_(input=self._input(call), weight=self.weights[id(weight)], bias=bias)()

    def _batch_norm(self, call: OpCall) -> Tensor:
        self.nonlinear_calls += 1
        eps = float(call.get("eps", 1e-5))
        return F.batch_norm(self._input(call), None, None, self._cast(call.get("weight")),
                            self._cast(call.get("bias")), True, 0.0, eps)

    def _per_example_norm(self, call: OpCall) -> Tensor:
        changes = {"input": self._input(call), "weight": self._cast(call.get("weight")),
                   "bias": self._cast(call.get("bias"))}
        if call.name == "instance_norm":  # statistics of the example, nothing updated
            changes.update(running_mean=None, running_var=None, use_input_stats=True)
        return call.with_(**changes)()

    def _input(self, call: OpCall) -> Tensor:
        """The call's input in the copies' dtype (a parameter of the model's own dtype used on
        the way, such as a layer scale, may have promoted the activations)."""
        x = call.input
        return x if x.dtype == self.dtype else x.to(self.dtype)

    def _cast(self, t: Tensor | None) -> Tensor | None:
        """An affine parameter of a normalisation, detached, in the copies' dtype."""
        return None if t is None else t.detach().to(self.dtype)


def _copy_parameters(model: nn.Module, masks: Masks, dtype: torch.dtype, device: torch.device,
                     channels_last: bool):
    """Copy 1 and copy 2 weights and biases by ``id``, copy 2's leaves and ``|theta|`` by name."""
    real: dict[int, Tensor] = {}
    squared: dict[int, Tensor] = {}
    leaves: dict[str, Tensor] = {}
    thetas: dict[str, Tensor] = {}
    for name, w in weighted_modules(model).items():
        keep = masks[name].to(device) if name in masks else None
        masked = w.detach().to(dtype)
        if keep is not None:
            masked = masked * keep.to(dtype)
        if channels_last and masked.dim() == 4:  # like the images (faster on CPU)
            masked = masked.contiguous(memory_format=torch.channels_last)
        real[id(w)] = masked
        value = masked.square()
        if name in masks:
            value.requires_grad_(True)
            leaves[name], thetas[name] = value, masked.abs()
        squared[id(w)] = value
    real_b: dict[int, Tensor] = {}
    squared_b: dict[int, Tensor] = {}
    for module in model.modules():
        bias = getattr(module, "bias", None)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and bias is not None:
            real_b[id(bias)] = bias.detach().to(dtype)
            squared_b[id(bias)] = real_b[id(bias)].square()
    return real, squared, real_b, squared_b, leaves, thetas


def _check_batch(x: Tensor, copy1: Cvpr2024Copy) -> None:
    """Refuse what would make the scores meaningless before copy 2 runs."""
    if copy1.batchnorm_calls and (x.shape[0] < 2 or not bool((x != x[:1]).any())):
        raise PXNumericsError(
            "PX needs at least two different examples in each batch: its copies run BatchNorm "
            "with batch statistics, and on a batch of identical inputs (or of one) every "
            "normalised feature is exactly zero and every score is rounding noise")
    if not copy1.nonlinear_calls:
        raise PruningError(
            "PX needs a network with a nonlinearity or a normalisation layer: without one, "
            "copy 2 is copy 1 with squared weights and the score says nothing about paths")


def cvpr2024_scores(model: nn.Module, batches: list[Batch], masks: Masks,
                    precision: str = "float32") -> dict[str, Tensor]:
    """``|dR/d(theta^2)| * |theta|**5`` per prunable weight, summed over ``batches``.

    The model is put in eval mode for the duration (dropout off; the copies choose their own
    BatchNorm mode) and left unchanged: weights, buffers and train/eval flags.
    """
    check_px_options({"variant": "cvpr2024", "precision": precision})
    with eval_mode(model):  # each module gets its own flag back (mixed modes stay mixed)
        # channels-last only on CUDA: on CPU with several threads the channels-last copies gave
        # scores that differ from call to call (2e-2 of the largest score in some calls, 1e-7
        # in others; tests/px/test_px_default.py), the contiguous layout is exact and stable
        on_cuda = next(model.parameters()).device.type == "cuda"
        if on_cuda and _channels_last_ok.get(model, True):
            try:
                return _scores(model, batches, masks, precision, channels_last=True)
            except RuntimeError:
                # the model's own code needs the usual layout (``x.view(n, -1)`` on a
                # channels-last activation fails): score it with contiguous tensors, as it sees
                # them from any other caller; a real fault raises again below
                _channels_last_ok[model] = False
        return _scores(model, batches, masks, precision, channels_last=False)


# models whose forward failed on channels-last tensors (remembered over a pruning's rounds)
_channels_last_ok: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _scores(model, batches, masks, precision, channels_last: bool):
    """The scores with every 4-D tensor channels-last (``channels_last``: about 1.4x faster on
    CPU) or in the usual contiguous layout; the values are the same to float rounding."""
    dtype = torch.float64 if precision == "float64" else torch.float32
    device = next(model.parameters()).device
    real, squared, real_b, squared_b, leaves, thetas = _copy_parameters(model, masks, dtype,
                                                                        device, channels_last)
    names = list(leaves)
    grads: list[Tensor | None] = [None] * len(names)
    R_total = 0.0
    for x, _ in batches:
        x = x.to(device=device, dtype=dtype)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), Cvpr2024Copy(model, real, real_b, False, dtype) as copy1:
            z1 = model(x)
        _check_batch(x, copy1)
        with Cvpr2024Copy(model, squared, squared_b, True, dtype):
            z2 = model(x)
        R = (z1 * z2).sum()
        if not torch.isfinite(R):
            raise PXNumericsError(f"PX bound R = {R.item()} is not finite")
        R_total += R.item()
        parts = torch.autograd.grad(R, [leaves[n] for n in names], allow_unused=True)
        for i, g in enumerate(parts):
            if g is not None:
                grads[i] = g if grads[i] is None else grads[i] + g
    scores = {}
    for name, g, in zip(names, grads, strict=True):
        theta = thetas[name]
        if g is None:
            scores[name] = torch.zeros_like(theta, dtype=torch.float64)
            continue
        scores[name] = (g.abs() * theta.pow(5)).to(torch.float64)  # |g theta^2 theta theta^2|
    bad = first_nonfinite(scores.items())  # one device sync for all layers
    if bad is not None:
        raise PXNumericsError(f"PX scores of {bad!r} are not finite")
    if R_total == 0.0 or not bool(torch.stack([(s > 0).any() for s in scores.values()]).any()):
        raise PXNumericsError("PX: every score is zero; the copies carry no signal")
    return scores
