"""Pieces of a run cell that need care: the test split of a user file, pruning time over resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..data import DataError, ImageDataset
from ..io import atomic_write_json
from ..transfer.backbones import holdout_split
from .resolve import UsageError, is_data_file, load_any_dataset

CLOCK_FILE = "prune_time.json"


def train_test_sets(dataset: str, test_dataset: str | None, holdout: float,
                    seed: int) -> tuple[ImageDataset, ImageDataset]:
    """Train and test sets. A named dataset has its own test split; a ``.pt``/``.npz`` file
    needs ``test_dataset`` (a second file) or ``holdout`` (a per-class fraction held out,
    drawn with ``seed``): testing on the training images would report training accuracy."""
    if holdout and test_dataset:
        raise UsageError("give a test file (--test-dataset) or a held-out fraction (--holdout), "
                         "not both")
    if holdout and not 0.0 < holdout < 1.0:
        raise UsageError(f"--holdout must lie strictly between 0 and 1, got {holdout}")
    train_set = load_any_dataset(dataset, "train")
    if test_dataset:
        test_set = load_any_dataset(test_dataset, "test")
        if test_set.image_shape != train_set.image_shape:
            raise DataError(f"the test file {test_dataset} holds images of shape "
                            f"{tuple(test_set.image_shape)}, the training data "
                            f"{tuple(train_set.image_shape)}")
        if int(test_set.labels.max()) >= train_set.num_classes:
            raise DataError(f"the test file {test_dataset} has label "
                            f"{int(test_set.labels.max())}, beyond the training data's "
                            f"{train_set.num_classes} classes")
        return train_set, test_set
    if holdout:
        fit, held = holdout_split(train_set.labels, holdout, seed)
        if len(held) == 0:
            raise DataError(f"--holdout {holdout} of {dataset} holds out no example")
        return train_set.subset(fit), train_set.subset(held)
    if is_data_file(dataset):
        raise UsageError(f"--dataset {dataset} is one file: give a test file "
                         f"(--test-dataset FILE) or hold out a fraction of it (--holdout 0.2, "
                         f"drawn per class with --seed); testing on the training images would "
                         f"report training accuracy as test accuracy")
    return train_set, load_any_dataset(dataset, "test")


def describe_test_split(dataset: str, test_dataset: str | None, holdout: float,
                        seed: int) -> str:
    """Where the test accuracy comes from, in words, for summary.json."""
    if test_dataset:
        return f"the file {test_dataset}"
    if holdout:
        return f"{holdout:g} of {dataset} held out per class (seed {seed}), not trained on"
    return f"the {dataset} test split"


class PruneClock:
    """Seconds spent pruning in a folder, over interruptions: each attempt adds its time to
    ``prune_time.json`` (a killed attempt counts up to its last pruning checkpoint)."""

    def __init__(self, out: Path | None, checkpoint: Path | None = None):
        self.path = None if out is None else Path(out) / CLOCK_FILE
        self.checkpoint = checkpoint
        self.previous = self._earlier(checkpoint)
        self.start = time.perf_counter()
        if self.path is not None:
            atomic_write_json(self.path, {"seconds": self.previous,
                                          "attempt_started": time.time()}, indent=None)

    def _earlier(self, checkpoint: Path | None) -> float:
        """Time of earlier attempts, when their rounds are being resumed (else they are lost)."""
        if self.path is None or not self.path.is_file():
            return 0.0
        if checkpoint is None or not checkpoint.is_file():
            return 0.0
        try:
            saved = json.loads(self.path.read_text())
            seconds = float(saved.get("seconds", 0.0))
            started = saved.get("attempt_started")
        except (OSError, ValueError, TypeError, AttributeError):
            return 0.0
        if started is not None:
            seconds += max(0.0, checkpoint.stat().st_mtime - float(started))  # a killed attempt
        return seconds

    def seconds(self) -> float:
        """All the pruning time so far: earlier attempts plus this one."""
        return self.previous + time.perf_counter() - self.start

    def stop(self) -> None:
        """Record this attempt's time for a resume (on error or Ctrl-C with rounds saved);
        without a pruning checkpoint to resume from (done, or nothing saved) the file goes."""
        if self.path is None:
            return
        if self.checkpoint is not None and self.checkpoint.is_file():
            atomic_write_json(self.path, {"seconds": self.seconds()}, indent=None)
        else:
            self.path.unlink(missing_ok=True)
