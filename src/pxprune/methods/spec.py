"""Method specs with options, ``name[key=value,...]`` (e.g. ``px[variant=cvpr2024]``).

A small, safe parser (no ``eval``): keys are identifiers, values are ints, floats or plain words
(``[A-Za-z0-9_.-]``). ``canonical`` writes a spec back with sorted keys and no spaces, and
``folder_name`` turns it into a filesystem-safe name, ``px+variant=cvpr2024``, that is distinct
per canonical spec: ``+`` and ``=`` appear in no name, key or value, so it can be read back.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

from ..masks import PruningError
from ..schedule import SCOPES
from . import REGISTRY

Value = int | float | str

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VALUE = re.compile(r"[A-Za-z0-9_.-]+")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT_E = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?")


def _value(text: str, spec: str, key: str) -> Value:
    """An int, a float or the word itself; a clear error for anything else."""
    if not _VALUE.fullmatch(text):
        raise PruningError(f"method spec {spec!r}: value {text!r} of {key!r} must be a number "
                           "or a word of letters, digits, '_', '.' and '-'")
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT_E.fullmatch(text):
        number = float(text)
        if number != number or number in (float("inf"), float("-inf")):
            raise PruningError(f"method spec {spec!r}: {key}={text} is not finite")
        return number
    return text


def parse_method_spec(spec: str) -> tuple[str, dict[str, Value]]:
    """``'px[variant=cvpr2024,rounds=20]'`` -> ``('px', {'variant': 'cvpr2024', 'rounds': 20})``."""
    if not isinstance(spec, str):
        raise PruningError(f"method spec must be a string, got {type(spec).__name__}")
    text = spec.strip()
    if "[" not in text and "]" not in text:
        if not _NAME.fullmatch(text):
            raise PruningError(f"bad method name {spec!r}: expected letters, digits and '_', "
                               "optionally with options as name[key=value,...]")
        return text, {}
    head, sep, rest = text.partition("[")
    name = head.strip()
    if not sep or not rest.endswith("]") or "[" in rest or "]" in rest[:-1]:
        raise PruningError(f"bad method spec {spec!r}: expected name[key=value,...] with one "
                           "pair of brackets at the end")
    if not _NAME.fullmatch(name):
        raise PruningError(f"bad method spec {spec!r}: method name {name!r} must be letters, "
                           "digits and '_'")
    body = rest[:-1].strip()
    if not body:
        raise PruningError(f"bad method spec {spec!r}: empty brackets (drop them or add "
                           "key=value)")
    options: dict[str, Value] = {}
    for item in body.split(","):
        key, eq, raw = (part.strip() for part in item.partition("="))
        if not eq or not key or not raw:
            raise PruningError(f"bad method spec {spec!r}: {item.strip()!r} is not key=value")
        if not _KEY.fullmatch(key):
            raise PruningError(f"bad method spec {spec!r}: key {key!r} is not an identifier")
        if key in options:
            raise PruningError(f"bad method spec {spec!r}: key {key!r} given twice")
        options[key] = _value(raw, spec, key)
    return name, options


def _format_value(value: Value) -> str:
    """A value as the parser reads it back to the same value."""
    return repr(value) if isinstance(value, float) else str(value)


def format_method_spec(name: str, options: dict[str, Value]) -> str:
    """The canonical spec: sorted keys, no spaces; the bare name when there are no options."""
    if not options:
        return name
    body = ",".join(f"{k}={_format_value(options[k])}" for k in sorted(options))
    return f"{name}[{body}]"


def canonical(spec: str) -> str:
    """The canonical form of ``spec`` (raises PruningError when it does not parse)."""
    return format_method_spec(*parse_method_spec(spec))


def folder_name(spec: str) -> str:
    """A filesystem-safe folder name, distinct per canonical spec: ``px+scope=layer``."""
    name, options = parse_method_spec(spec)
    return name + "".join(f"+{k}={_format_value(options[k])}" for k in sorted(options))


PIPELINE_KEYS = ("rounds", "scope")  # handled by pxprune.prune, not by the score function


def check_options(name: str, options: dict[str, Value], spec: str | None = None,
                  pipeline_keys: bool = True) -> None:
    """Check that method ``name`` is registered, takes each of ``options`` and their values.

    ``pipeline_keys`` allows ``rounds`` and ``scope`` (handled by ``pxprune.prune``, not by the
    score function); ``spec`` is what the user wrote, for the message.
    """
    where = repr(spec) if spec is not None else f"method {name!r}"
    if name not in REGISTRY:
        written = f" in {spec!r}" if spec and spec.strip() != name else ""
        raise PruningError(f"unknown method {name!r}{written}; choose one of "
                           f"{', '.join(sorted(REGISTRY))}")
    params = inspect.signature(REGISTRY[name].score).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    allowed = (allowed - {"seed"}) | (set(PIPELINE_KEYS) if pipeline_keys else set())
    unknown = [k for k in options if k not in allowed and not accepts_any]
    if unknown or "seed" in options:
        raise PruningError(f"{where}: {name} has no option {', '.join(unknown or ['seed'])}; "
                           f"it takes {', '.join(sorted(allowed))}")
    rounds = options.get("rounds")
    if "rounds" in options and not (isinstance(rounds, int) and not isinstance(rounds, bool)
                                    and rounds > 0):
        raise PruningError(f"{where}: rounds must be a positive integer, got {rounds!r}")
    if "scope" in options and options["scope"] not in SCOPES:
        raise PruningError(f"{where}: scope must be one of {', '.join(SCOPES)}")
    try:
        REGISTRY[name].check_values({k: v for k, v in options.items() if k not in PIPELINE_KEYS})
    except PruningError as exc:
        raise PruningError(f"{where}: {exc}") from None


def check_method_spec(spec: str) -> tuple[str, dict[str, Value]]:
    """Parse ``spec`` and check the name is registered and each key is an option it accepts."""
    name, options = parse_method_spec(spec)
    check_options(name, options, spec)
    return name, options


def merge_options(spec: str, options: dict[str, Value], keywords: dict) -> dict:
    """The spec's options and the keyword options together; one key given both ways with two
    values is an error."""
    clash = [k for k in keywords if k in options and options[k] != keywords[k]]
    if clash:
        raise PruningError(f"{spec!r}: option {', '.join(clash)} given both in the spec and as a "
                           "keyword, with different values")
    return {**options, **keywords}


def resolved_spec(spec: str, legacy: bool = False) -> str:
    """The canonical spec with the defaults that define the method written out: ``px`` ->
    ``px[variant=cvpr2024]``. Recorded in run configs, so that a folder scored under an older
    default is never resumed under a newer one (``legacy``: the meaning before the last change
    of a default, for folders that recorded none)."""
    name, options = parse_method_spec(spec)
    if name not in REGISTRY:
        return format_method_spec(name, options)
    return format_method_spec(name, REGISTRY[name].resolved_options(options, legacy))


@dataclass(frozen=True)
class MethodSpec:
    """A method spec parsed once: what was written, the name, and every option (the pipeline's
    ``rounds`` and ``scope`` among them). The one object drivers pass around instead of
    re-splitting the text."""

    text: str
    name: str
    options: dict[str, Value] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, *, check: bool = True) -> MethodSpec:
        """Parse ``text``; ``check``: also refuse an unknown name or option (PruningError)."""
        name, options = check_method_spec(text) if check else parse_method_spec(text)
        return cls(text, name, options)

    @property
    def score_options(self) -> dict[str, Value]:
        """The options the score function takes (all but ``rounds`` and ``scope``)."""
        return {k: v for k, v in self.options.items() if k not in PIPELINE_KEYS}

    @property
    def rounds(self) -> int | None:
        """The spec's own ``rounds=`` (None when it gives none)."""
        value = self.options.get("rounds")
        return None if value is None else int(value)

    def scope(self, default: str) -> str:
        """The spec's own ``scope=``, else ``default``."""
        return str(self.options.get("scope", default))

    def canonical(self) -> str:
        """Sorted keys, no spaces (see :func:`canonical`)."""
        return format_method_spec(self.name, self.options)

    def resolved(self, legacy: bool = False) -> str:
        """The canonical spec with its defining defaults written out (see :func:`resolved_spec`)."""
        return resolved_spec(self.text, legacy)


def split_method_list(text: str) -> list[str]:
    """Split ``'px,px[variant=cvpr2024,scope=layer],snip'`` at the commas outside brackets."""
    items, depth, current = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise PruningError(f"unbalanced ']' in method list {text!r}")
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise PruningError(f"unbalanced '[' in method list {text!r}")
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]
