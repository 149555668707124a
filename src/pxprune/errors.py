"""Every user-facing error class: bad input or an environment fault the user can fix. The CLI
prints any PxpruneError as one line with exit 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class PxpruneError(ValueError):
    """Bad input or an environment fault the user can fix; never a bug in pxprune.

    A ValueError so that code catching ValueError before this base existed keeps working.
    """


class OutputError(PxpruneError):
    """An output folder or file cannot be written (read-only, full disk, a file in the way)."""


class DamagedFileError(PxpruneError):
    """A file pxprune wrote earlier is truncated, not what it should hold, or was edited."""


class FileFormatError(PxpruneError):
    """A file pxprune reads is missing, truncated, corrupt, or holds more than tensors and plain
    values (refused: unpickling arbitrary objects can run code)."""


class UsageError(PxpruneError):
    """A command-line argument that names nothing usable."""


class DeviceError(PxpruneError):
    """A device that does not exist here (a typo, CUDA without a GPU, an index too high)."""


class DataError(PxpruneError):
    """A dataset file is missing, corrupt, truncated or inconsistent; the message names the file."""


class DatasetNotFoundError(DataError):
    """A dataset could not be found under the data root (and was not downloaded)."""


class PruningError(PxpruneError):
    """A user-facing error about pruning inputs (bad sparsity, nothing prunable, ...)."""


class UnsupportedLayerError(PxpruneError):
    """The model uses an operation that the path view (PX, SynFlow) cannot represent."""


class PXNumericsError(PruningError):
    """A PX copy overflowed or produced NaN, or carries no signal: the scores would be
    meaningless."""


class TrainingError(PxpruneError):
    """A recipe, precision or resume request the user can fix; the CLI prints it as one line."""


class TrainingDivergedError(PxpruneError, FloatingPointError):
    """Training loss turned NaN or infinite; the last good checkpoint is kept (a lower lr or
    another seed may help). Also a FloatingPointError, what training raised before this class."""
