"""Dense and sparse multiply-accumulate (MAC) counts of a model's Conv and Linear layers.

One forward pass with hooks records each layer's output size. For a conv, every output position
uses every weight once, so MACs = weight count x output spatial positions (grouped and depthwise
convs included, since their weight already holds in/groups channels); for a Linear, MACs = weight
count x output positions (1 for a (N, in) input, the token count for (N, T, in)). Kept (sparse)
MACs use the kept weights of the mask instead. Biases, BatchNorm, activations, pooling and the
residual additions are not counted, as in the usual FLOPs tables of pruning papers ("FLOPs"
there means MACs). Counts are for one example (batch size 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def count_flops(
    model: nn.Module,
    input_shape: Sequence[int],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> dict:
    """Count dense and mask-kept MACs per Conv/Linear layer and in total, plus parameter counts.

    ``input_shape`` is the shape of one example without the batch dimension, e.g. (3, 32, 32).
    ``masks`` maps ``model.named_parameters()`` names to bool tensors shaped like the weights;
    unmasked parameters count as fully kept. The model runs one forward pass in eval mode on
    zeros (its training mode is restored), so the weights and BN statistics are left untouched.

    Returns ``{"layers": {module_name: {"weight", "dense_macs", "kept_macs", "params",
    "kept_params", "output_positions"}}, "dense_macs", "kept_macs", "total_params",
    "kept_params", "density_macs", "density_params"}``.
    """
    masks = dict(masks or {})
    names = {name for name, _ in model.named_parameters()}
    unknown = sorted(set(masks) - names)
    if unknown:
        raise KeyError(f"masks name parameters the model does not have: {unknown}")
    for name, p in model.named_parameters():
        if name in masks and tuple(masks[name].shape) != tuple(p.shape):
            raise ValueError(
                f"mask {name} has shape {tuple(masks[name].shape)}, parameter {tuple(p.shape)}"
            )

    positions: dict[str, int] = {}
    hooks = []

    def make_hook(mod_name: str, module: nn.Module):
        def hook(_mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
            # batch of one: conv (1, C, *spatial) -> spatial positions; linear (1, ..., F) -> ...
            per_position = out.shape[-1] if isinstance(module, nn.Linear) else out.shape[1]
            n = out.numel() // max(per_position, 1)
            positions[mod_name] = positions.get(mod_name, 0) + n

        return hook

    for mod_name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            hooks.append(module.register_forward_hook(make_hook(mod_name, module)))
    was_training = model.training
    try:
        p0 = next(model.parameters(), None)
        device = p0.device if p0 is not None else torch.device("cpu")
        dtype = p0.dtype if p0 is not None and p0.is_floating_point() else torch.float32
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    layers: dict[str, dict] = {}
    dense_total = kept_total = 0
    for mod_name, module in model.named_modules():
        if mod_name not in positions:
            continue
        wname = f"{mod_name}.weight" if mod_name else "weight"
        w = module.weight
        kept_w = int(masks[wname].sum()) if wname in masks else w.numel()
        params = kept_params = 0
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{pname}" if mod_name else pname
            params += p.numel()
            kept_params += int(masks[full].sum()) if full in masks else p.numel()
        n = positions[mod_name]
        layers[mod_name] = {
            "weight": wname,
            "output_positions": n,
            "dense_macs": w.numel() * n,
            "kept_macs": kept_w * n,
            "params": params,
            "kept_params": kept_params,
        }
        dense_total += w.numel() * n
        kept_total += kept_w * n

    total_params = kept_params_all = 0
    for name, p in model.named_parameters():
        total_params += p.numel()
        kept_params_all += int(masks[name].sum()) if name in masks else p.numel()
    return {
        "layers": layers,
        "dense_macs": dense_total,
        "kept_macs": kept_total,
        "total_params": total_params,
        "kept_params": kept_params_all,
        "density_macs": kept_total / dense_total if dense_total else 1.0,
        "density_params": kept_params_all / total_params if total_params else 1.0,
    }
