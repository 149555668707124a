"""How a method is named and drawn in a report: the paper's spelling, its colour, and a line
style telling a method's option specs apart."""

from __future__ import annotations

from ...methods import REGISTRY
from ..config import DENSE

DENSE_STYLE = ("Dense", "#000000")  # the dense reference is not a registered method


def method_display(name: str) -> str:
    """A registered method's display name (PX, NTK-SAP, GraSP, ...), from the registry."""
    if name == DENSE:
        return DENSE_STYLE[0]
    method = REGISTRY.get(name)
    return method.display_name if method is not None else name


def method_color(name: str) -> str | None:
    """A registered method's colour in figures, from the registry."""
    if name == DENSE:
        return DENSE_STYLE[1]
    method = REGISTRY.get(name)
    return method.color if method is not None else None


def split_spec(method: str) -> tuple[str, str]:
    """A method spec's name and its bracketed options (``'px', '[variant=cvpr2024]'``)."""
    name, bracket, rest = method.partition("[")
    return name, bracket + rest


def display_name(method: str) -> str:
    """The paper's spelling of a method name (PX, NTK-SAP, GraSP, ...), options kept."""
    name, options = split_spec(method)
    return method_display(name) + (f" {options}" if options else "")


def line_style(method: str, methods: list[str]) -> tuple[str | None, str]:
    """Colour of the method's base name and a line style that tells its option specs apart."""
    name, _ = split_spec(method)
    siblings = [m for m in methods if split_spec(m)[0] == name and m != name]
    style = "-" if method == name else ("--", ":", "-.")[siblings.index(method) % 3]
    return method_color(name), style
