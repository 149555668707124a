"""The configurations of a run and of a transfer run, with their defaults, in one place.

The command line builds them (``pxprune.cli``); everything below takes them. A configuration
holds what determines a result (not the device, threads or progress bars), and is what a run
folder's ``config.json`` records and compares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

DENSE = "dense"
MASKS = "masks"  # the method of a run trained from a masks file that records none


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result (device and progress are not part of it)."""

    model: str = "resnet20"
    dataset: str = "cifar10"
    method: str = "px"
    sparsity: float = 0.982
    seed: int = 0
    rounds: int | None = None
    scope: str = "global"
    per_class: int = 10
    recipe: str = "cifar10_resnet20"
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    train_per_class: int | None = None
    test_per_class: int | None = None
    weights: str | None = None
    norm: str = "dataset"
    test_dataset: str | None = None  # a separate test file (a .pt/.npz --dataset needs one
    holdout: float = 0.0  # ... or this fraction of it held out per class, drawn with the seed)
    allow_disconnected: bool = False  # keep masks that cut the output off the input
    precision: str | None = None  # training precision (recipe's "auto" when None)
    output: str | None = None  # which of the model's outputs is the logits (--output)
    keep_dense: str | None = None  # layers left unpruned (--keep-dense first,last)
    masks: str | None = None  # train these masks (a file or a prune folder) instead of pruning
    masks_sha256: str | None = None  # ... whose content hash this is (checked when used)
    # ``method`` with its defining defaults written out (``px`` -> ``px[variant=cvpr2024]``),
    # filled in by run_experiment; "" in folders written before it was recorded
    resolved_method: str = ""

    def recipe_overrides(self) -> dict:
        names = ("epochs", "lr", "batch_size", "schedule", "precision", "weight_decay",
                 "momentum")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


MODES = ("probe", "finetune")


# Options only transfer runs take, with their ``pxprune transfer`` defaults. ``pxprune sweep``
# registers them with default None (so it can tell whether they were given without --transfer).
TRANSFER_DEFAULTS = {"backbone": None, "mode": "probe", "image_size": None, "head": "probe",
                     "l2": None, "dense_finetune": True, "px_precision": "float32",
                     "round_factor": None, "classifier": None}


# Options that a training sweep has too, with other defaults there (None: not given).
# A transfer run's "recipe" "" means: by --mode (TransferConfig.__post_init__).
SHARED_DEFAULTS = {"train_per_class": 100, "test_per_class": 100, "recipe": "",
                   "norm": "backbone"}


CELL_FIELDS = ("method", "sparsity", "seed")


@dataclass(frozen=True)
class TransferConfig:
    """Everything that determines a transfer run's result (not device, threads, progress)."""

    backbone: str
    dataset: str = "cifar10"
    method: str = "px"
    sparsity: float = 0.982
    seed: int = 0
    mode: str = "probe"
    weights: str | None = None  # as given; None = the backbone's default file
    classifier: str | None = None  # a user backbone's classifier module (None: found)
    output: str | None = None  # a user backbone's logits among several outputs (--output)
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
                and not (k in ("classifier", "output") and v is None)}
