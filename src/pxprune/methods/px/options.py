"""PX's options and their allowed values, checked before any scoring starts (``px[...]`` specs
are validated here when a run, sweep or NTK study is planned, not when its cell fails)."""

from __future__ import annotations

from ...masks import PruningError
from ...pathview.record import BN_SOURCES

VARIANTS = ("cvpr2024", "bound")
DEFAULT_VARIANT = "cvpr2024"
PRECISIONS = ("float64", "float32")
CLASSIFIER_MODES = ("real", "ones")
# options of the bound only, with their defaults (the 2024 scoring takes none of them)
BOUND_ONLY = {"classifier": "real", "classifier_name": None, "approximate_unsupported": False,
              "bn": "running"}
CHOICES = {"variant": VARIANTS, "precision": PRECISIONS, "bn": BN_SOURCES,
           "classifier": CLASSIFIER_MODES, "approximate_unsupported": (True, False)}


def check_px_options(options: dict) -> None:
    """A PruningError naming the first option whose value PX does not take, or a bound-only
    option given to the 2024 scoring."""
    for key, allowed in CHOICES.items():
        if key in options and options[key] not in allowed:
            what = "PX variant" if key == "variant" else f"PX option {key}"
            raise PruningError(f"unknown {what} {options[key]!r}; choose one of "
                               f"{', '.join(map(str, allowed))}")
    if options.get("variant", DEFAULT_VARIANT) == "cvpr2024":
        extra = sorted(k for k, default in BOUND_ONLY.items()
                       if k in options and options[k] != default)
        if extra:
            raise PruningError(f"PX variant 'cvpr2024' takes no {', '.join(extra)} option "
                               "(options of variant 'bound')")
