"""One configuration per command (prune, run, transfer, ntk), with its defaults, in one place.

The command line builds them (``pxprune.cli``, whose option defaults are read from here);
everything below takes them. A configuration holds what determines a result (not the device,
threads or progress bars), and is what a folder's ``config.json`` records and compares
(:func:`config_record`: one layout for every command).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import TypeVar

DENSE = "dense"
MASKS = "masks"  # the method of a run trained from a masks file that records none


def defaults_of(config: type) -> dict[str, object]:
    """Every field of a configuration class with a default, and that default: what the
    command line's options default to."""
    return {f.name: f.default for f in fields(config) if f.default is not MISSING}


def config_record(command: str, config: Mapping[str, object],
                  provenance: Mapping[str, object], **facts: object) -> dict:
    """``config.json``'s one layout for every command: ``command``, the provenance (``argv``
    and versions), the configuration's fields, then what was resolved while running (the
    resolved method, dataset facts)."""
    return {"command": command, **provenance, **config, **facts}


_Fields = TypeVar("_Fields", bound="MaskFields")


@dataclass(frozen=True)
class MaskFields:
    """What determines a mask, the fields ``prune`` and ``run`` share (``run`` trains on it)."""

    model: str = "resnet20"
    dataset: str = "cifar10"  # a name or a .pt/.npz file; its training split is pruned on
    method: str = "px"
    sparsity: float = 0.982
    seed: int = 0
    rounds: int | None = None
    scope: str = "global"
    per_class: int = 10
    norm: str = "dataset"
    weights: str | None = None
    output: str | None = None  # which of the model's outputs is the logits (--output)
    keep_dense: str | None = None  # layers left unpruned (--keep-dense first,last)
    allow_disconnected: bool = False  # keep masks that cut the output off the input

    @classmethod
    def from_dict(cls: type[_Fields], d: Mapping) -> _Fields:
        """From a config.json: its fields of this class, the rest (provenance, resolved facts)
        left out; a pruning folder written before the one layout has ``data`` for ``dataset``."""
        known = {f.name for f in fields(cls)}
        d = {"dataset": d["data"], **d} if "data" in d and "dataset" not in d else d
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class PruneConfig(MaskFields):
    """Everything that determines ``pxprune prune``'s masks (device and progress are not
    part of it)."""

    num_classes: int | None = None


@dataclass(frozen=True)
class NtkConfig:
    """Everything that determines an NTK study (``pxprune ntk``): the model at init, methods x
    sparsities, the pruning and measurement splits."""

    model: str = "resnet20"
    dataset: str = "cifar10"
    methods: str = "all"  # comma-separated specs, or all (every method but IMP)
    sparsities: str = "paper"  # paper (the nine-point grid) or a list
    rounds: int | None = None  # rounds of every iterative method (None: each one's own)
    n_images: int = 20  # test images the NTK is measured on (class-balanced)
    per_class: int = 10
    seed: int = 0
    top_k: int = 20
    chunk: int = 4  # samples per Jacobian chunk (memory, not the result)
    stem: str = "ntk"  # file names STEM.json, STEM.png, STEM_spectrum.png
    output: str | None = None


@dataclass(frozen=True)
class RunConfig(MaskFields):
    """Everything that determines a run's result (device and progress are not part of it)."""

    recipe: str = "cifar10_resnet20"
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    train_per_class: int | None = None
    test_per_class: int | None = None
    test_dataset: str | None = None  # a separate test file (a .pt/.npz --dataset needs one
    holdout: float = 0.0  # ... or this fraction of it held out per class, drawn with the seed)
    precision: str | None = None  # training precision (recipe's "auto" when None)
    masks: str | None = None  # train these masks (a file or a prune folder) instead of pruning
    masks_sha256: str | None = None  # ... whose content hash this is (checked when used)
    # ``method`` with its defining defaults written out (``px`` -> ``px[variant=cvpr2024]``),
    # filled in by run_experiment; "" in folders written before it was recorded
    resolved_method: str = ""

    def recipe_overrides(self) -> dict:
        names = ("epochs", "lr", "batch_size", "schedule", "precision", "weight_decay",
                 "momentum")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


CPU_RECIPE = "cpu_small"  # a run's recipe on the CPU when none is given


def default_recipe(device: str) -> str:
    """A run's training recipe when none is given: RunConfig's on an accelerator, the
    CPU-sized protocol on the CPU."""
    return CPU_RECIPE if device == "cpu" else RunConfig.recipe


MODES = ("probe", "finetune")


CELL_FIELDS = ("method", "sparsity", "seed")


@dataclass(frozen=True)
class TransferConfig:
    """Everything that determines a transfer run's result (not device, threads, progress)."""

    backbone: str
    dataset: str = "cifar10"
    test_dataset: str | None = None  # a separate test file (a .pt/.npz --dataset needs one
    holdout: float = 0.0  # ... or this fraction of it held out per class, drawn with the seed)
    method: str = "px"
    sparsity: float = 0.982
    seed: int = 0
    mode: str = "probe"
    weights: str | None = None  # as given; None = the backbone's default file
    classifier: str | None = None  # a user backbone's classifier module (None: found)
    output: str | None = None  # a user backbone's logits among several outputs (--output)
    keep_dense: str | None = None  # layers left unpruned (--keep-dense first,last)
    num_classes: int | None = None
    image_size: int | None = None  # resolved: --image-size or the backbone's native side
    train_per_class: int = 100
    test_per_class: int = 100
    head: str = "probe"
    l2: float | None = None
    per_class: int = 10
    rounds: int | None = None
    round_factor: float | None = None
    scope: str = "global"
    norm: str = "backbone"
    px_precision: str = "float32"
    recipe: str = ""  # "" = by mode: finetune_cpu for --mode finetune, cpu_small (unused) else
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    dense_finetune: bool = True

    def __post_init__(self) -> None:
        """Resolve an empty ``recipe``: the fine-tuning recipe in finetune mode (issue 23)."""
        if not self.recipe:
            from ..training.recipes import FINETUNE_RECIPE, PROBE_RECIPE

            object.__setattr__(self, "recipe",
                               FINETUNE_RECIPE if self.mode == "finetune" else PROBE_RECIPE)

    @classmethod
    def from_dict(cls, d: dict) -> TransferConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def protocol(self) -> dict:
        """The fields every cell of a transfer sweep shares (all but method, sparsity, seed);
        the user-backbone fields are left out at None, so an older sweep.json still matches."""
        return {k: v for k, v in asdict(self).items() if k not in CELL_FIELDS
                and not (k in ("classifier", "output", "test_dataset", "keep_dense")
                         and v is None)
                and not (k == "holdout" and not v)}


# Options only transfer runs take. ``pxprune sweep`` registers them with default None (so it
# can tell whether they were given without --transfer); their defaults are TransferConfig's.
TRANSFER_ONLY = ("backbone", "mode", "image_size", "head", "l2", "dense_finetune",
                 "px_precision", "round_factor", "classifier")
# Options a training sweep has too, with other defaults there (a transfer run's "recipe" ""
# means: by --mode, TransferConfig.__post_init__).
SHARED = ("train_per_class", "test_per_class", "recipe", "norm")
