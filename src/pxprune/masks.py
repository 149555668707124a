"""Masks: parameter name -> bool tensor, on any unmodified ``nn.Module``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import PruningError
from .io import atomic_write_bytes

DEFAULT_PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
)


def check_model_device(model: nn.Module) -> None:
    """Refuse a model whose weights live on the ``meta`` device (shapes without values)."""
    meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if meta:
        raise PruningError(f"the model's weights are on the 'meta' device (no values), e.g. "
                           f"{meta[0]!r}; materialise it first (model.to_empty(device='cpu') "
                           f"and initialise, or load weights)")


def prunable_parameters(
    model: nn.Module,
    types: Iterable[type[nn.Module]] = DEFAULT_PRUNABLE_TYPES,
    extra: Iterable[str] = (),
) -> dict[str, nn.Parameter]:
    """The weights that can be pruned: ``weight`` of every module of ``types`` plus named ``extra``.

    Names are ``model.named_parameters()`` names, in registration order.
    """
    types = tuple(types)
    wanted: set[str] = set(extra)
    owner: dict[int, str] = {}  # id(weight) -> the first name it was found under
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, types) and isinstance(weight, nn.Parameter):
            name = f"{module_name}.weight" if module_name else "weight"
            if id(weight) in owner:
                raise PruningError(
                    f"tied weights: {name!r} is the same tensor as {owner[id(weight)]!r}; "
                    f"a mask per tensor would prune both layers alike, so untie them "
                    f"(give one its own copy) before pruning")
            owner[id(weight)] = name
            wanted.add(name)
    params = {name: p for name, p in model.named_parameters() if name in wanted}
    missing = wanted - set(params)
    if missing:
        raise PruningError(f"not parameters of the model: {sorted(missing)}")
    if not params:
        raise PruningError(
            f"{type(model).__name__} has nothing prunable: no Conv1d/2d/3d or Linear weights"
        )
    return params


def unpruned_matrices(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Weight tensors (two or more dimensions) the masks leave whole, by name and shape: e.g.
    ``nn.MultiheadAttention``'s ``in_proj_weight`` or a position embedding, which are not
    Conv/Linear weights. Tables list them so that a density never silently ignores them."""
    return {name: tuple(p.shape) for name, p in model.named_parameters()
            if p.dim() >= 2 and name not in masks}


@dataclass(frozen=True)
class LayerStats:
    """Kept and total counts of one masked tensor."""

    name: str
    shape: tuple[int, ...]
    kept: int
    total: int

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 0.0

    @property
    def collapsed(self) -> bool:
        return self.kept == 0


class Masks(Mapping[str, Tensor]):
    """An immutable map from parameter name to a bool keep-mask of the same shape."""

    def __init__(self, masks: Mapping[str, Tensor]):
        if not isinstance(masks, Mapping) or not all(isinstance(m, Tensor)
                                                     for m in masks.values()):
            raise PruningError(f"masks must map parameter names to bool tensors, got "
                               f"{type(masks).__name__}")
        for name, m in masks.items():
            if m.dtype != torch.bool and m.device.type != "meta" and not bool(
                    ((m == 0) | (m == 1)).all()):
                bad = m[(m != 0) & (m != 1)].reshape(-1)[0].item()  # NaN, 0.5, 2, -1 ...
                raise PruningError(f"the mask for {name!r} holds {bad!r}: masks hold only "
                                   f"True/False (or 0/1)")
        self._masks = {name: m.detach().to(torch.bool).cpu() for name, m in masks.items()}

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module, **prunable_kw) -> Masks:
        """Keep everything prunable in ``model``."""
        params = prunable_parameters(model, **prunable_kw)
        return cls(
            {n: torch.ones_like(p, dtype=torch.bool, device="cpu") for n, p in params.items()}
        )

    # -- Mapping protocol -----------------------------------------------------------------
    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, density={self.density():.4f})"

    # -- statistics -----------------------------------------------------------------------
    @property
    def kept(self) -> int:
        return sum(int(m.sum()) for m in self._masks.values())

    @property
    def total(self) -> int:
        return sum(m.numel() for m in self._masks.values())

    def density(self) -> float:
        """Fraction of prunable weights kept."""
        return self.kept / self.total if self.total else 0.0

    def sparsity(self) -> float:
        return 1.0 - self.density()

    def layer_stats(self) -> list[LayerStats]:
        """Kept/total per masked tensor, in order."""
        return [
            LayerStats(n, tuple(m.shape), int(m.sum()), m.numel()) for n, m in self._masks.items()
        ]

    def layer_density(self) -> dict[str, float]:
        return {s.name: s.density for s in self.layer_stats()}

    def collapsed_layers(self) -> list[str]:
        """Names of layers that kept no weight at all (layer collapse)."""
        return [s.name for s in self.layer_stats() if s.collapsed]

    # -- applying to a model ---------------------------------------------------------------
    def _check(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        for name, m in self._masks.items():
            if name not in params:
                raise PruningError(f"mask for {name!r} but the model has no such parameter")
            if tuple(params[name].shape) != tuple(m.shape):
                raise PruningError(
                    f"mask for {name!r} has shape {tuple(m.shape)}, parameter has "
                    f"{tuple(params[name].shape)}"
                )
        return params

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place; returns the model."""
        params = self._check(model)
        for name, m in self._masks.items():
            p = params[name]
            p.mul_(m.to(device=p.device, dtype=p.dtype))
        return model

    def attach(self, model: nn.Module) -> MaskHandle:
        """Zero pruned weights now and keep them at zero through any later training.

        Gradients of pruned weights are zeroed by hooks (so momentum and Adam state stay zero),
        and ``MaskHandle.reapply()`` re-zeroes after each optimiser step (weight decay on a zero
        weight is zero, but the call makes the guarantee independent of the optimiser).
        """
        self.apply_(model)
        params = self._check(model)
        handles = []
        for name, m in self._masks.items():
            p = params[name]
            keep = m.to(device=p.device, dtype=p.dtype)
            handles.append(p.register_hook(lambda g, keep=keep: g * keep.to(g.device, g.dtype)))
        return MaskHandle(self, model, handles)

    def to_torch_prune(self, model: nn.Module) -> nn.Module:
        """Install the masks as ``torch.nn.utils.prune`` reparametrisations (``*_mask``)."""
        from torch.nn.utils import prune

        self._check(model)
        modules = dict(model.named_modules())
        for name, m in self._masks.items():
            module_name, _, attr = name.rpartition(".")
            module = modules[module_name]
            prune.custom_from_mask(module, attr, m.to(getattr(module, attr).device))
        return model

    # -- combining ------------------------------------------------------------------------
    def __and__(self, other: Masks) -> Masks:
        return Masks({n: m & other[n] for n, m in self._masks.items()})

    def overlap(self, other: Masks) -> float:
        """Fraction of this mask's kept weights that ``other`` also keeps."""
        both = sum(int((m & other[n]).sum()) for n, m in self._masks.items())
        return both / self.kept if self.kept else 1.0

    def in_order_of(self, model: nn.Module) -> Masks:
        """The same masks in ``model.named_parameters()`` order (a file sorts the names, but a
        global threshold breaks ties by position and the trainer's checkpoint fingerprint
        depends on the order); names the model lacks come last."""
        order = [n for n, _ in model.named_parameters() if n in self._masks]
        return Masks({n: self._masks[n] for n in order + [n for n in self._masks
                                                           if n not in order]})

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path, metadata: Mapping[str, object] | None = None) -> None:
        """Write the masks to a safetensors file (bool tensors), atomically: a reader sees the
        old file or the new one, never half of one (a full disk is a one-line OutputError).
        ``metadata`` (e.g. method, sparsity, seed, model) is stored beside them, with the
        tensors' order (``load`` restores it: safetensors itself sorts the names)."""
        from safetensors.torch import save

        meta = {"format": "pxprune.masks", "extra": json.dumps(dict(metadata or {})),
                "order": json.dumps(list(self._masks))}
        blob = save({n: m.contiguous() for n, m in self._masks.items()}, metadata=meta)
        atomic_write_bytes(path, lambda f: f.write(blob))  # type: ignore[attr-defined]

    @classmethod
    def load(cls, path: str | Path) -> Masks:
        """Read masks written by :meth:`save`; a corrupt file raises PruningError naming it."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise PruningError(f"cannot read masks from {path}: {exc}") from exc
        not_bool = [n for n, t in tensors.items() if t.dtype != torch.bool]
        if not_bool:
            raise PruningError(f"{path} is not a masks file: {not_bool[0]!r} holds "
                               f"{tensors[not_bool[0]].dtype} values, masks are bool")
        order = _header(path).get("order")
        try:
            names = json.loads(order) if order else []
        except ValueError:
            names = []
        if sorted(names) == sorted(tensors):  # the order they were saved in
            tensors = {n: tensors[n] for n in names}
        return cls(tensors)

    @staticmethod
    def metadata(path: str | Path) -> dict:
        """What :meth:`save` stored beside the masks (method, sparsity, seed, model, ...);
        {} for a file without it."""
        try:
            extra = json.loads(_header(path).get("extra") or "{}")
        except ValueError:
            return {}
        return extra if isinstance(extra, dict) else {}


def _header(path: str | Path) -> dict:
    """The safetensors header metadata of ``path`` ({} when unreadable: load reports that)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}


class MaskHandle:
    """Keeps a model's pruned weights at zero; ``remove()`` detaches the gradient hooks."""

    def __init__(self, masks: Masks, model: nn.Module, handles: list):
        self.masks, self.model, self._handles = masks, model, handles

    def reapply(self) -> None:
        self.masks.apply_(self.model)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
