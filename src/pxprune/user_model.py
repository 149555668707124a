"""What scoring sees of a user's model: the module inside ``torch.compile`` / ``DataParallel``
wrappers, and the logits among several outputs (a tuple, a dict, a Hugging Face-style object)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from torch import Tensor, nn

from .masks import PruningError

Output = int | str | None

_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """The module that ``torch.compile``, ``nn.DataParallel`` or DDP wrap, and the prefix
    (``"_orig_mod."``, ``"module."``) its parameter names carry in the wrapper.

    Methods score the inner module: its weights are the wrapper's weights, and the wrappers'
    machinery (graph capture, scatter to devices) does not take the functional and intercepted
    forwards the scores need.
    """
    prefix = ""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module):
            model, prefix = inner, prefix + "_orig_mod."
        elif isinstance(model, _WRAPPERS):
            model, prefix = model.module, prefix + "module."
        else:
            return model, prefix


def pick(out: object, output: Output) -> Tensor:
    """The logits in ``out``: ``out`` itself when it is a tensor, else ``out[output]`` (a tuple
    index or a dict key) or ``out.<output>``; a one-line error naming the ``output`` option."""
    if output is None:
        if isinstance(out, Tensor):
            return out
        raise PruningError(
            f"the model returns {_describe(out)}, not a tensor of logits; say which output is "
            f"the logits with output=... (e.g. output=0 or output='logits'; command line: "
            f"--output)")
    try:
        if isinstance(output, int) and isinstance(out, (tuple, list)):
            chosen = out[output]
        elif isinstance(output, str) and isinstance(out, Mapping):
            chosen = out[output]
        elif isinstance(output, str):
            chosen = getattr(out, output)
        else:
            raise KeyError(output)
    except (KeyError, IndexError, AttributeError):
        raise PruningError(f"output={output!r} is not among the model's outputs "
                           f"({_describe(out)})") from None
    if not isinstance(chosen, Tensor):
        raise PruningError(f"output={output!r} of the model is a {type(chosen).__name__}, "
                           f"not a tensor of logits")
    return chosen


def _describe(out: object) -> str:
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {list(out)[:6]}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}"
    return f"a {type(out).__name__}"


def check_output_option(output: object) -> Output:
    """``output`` as given, or a one-line error: an int index, a str key/attribute, or None."""
    if output is None or isinstance(output, str) or (
            isinstance(output, int) and not isinstance(output, bool)):
        return output
    raise PruningError(f"output must be an index (0), a key ('logits') or None, got "
                       f"{type(output).__name__}")


def _pick_hook(model: nn.Module, output: Output):
    """A forward hook on ``model`` replacing its return value by ``pick(out, output)``."""
    return model.register_forward_hook(lambda _m, _i, out: pick(out, output))


@contextmanager
def logits_of(model: nn.Module, output: Output = None) -> Iterator[nn.Module]:
    """While inside, ``model(x)`` returns the logits tensor (``pick``) whatever the model's own
    return value; parameter names and the forward itself are unchanged (a forward hook)."""
    handle = _pick_hook(model, check_output_option(output))
    try:
        yield model
    finally:
        handle.remove()


def select_output_permanently(model: nn.Module, output: Output) -> nn.Module:
    """Make ``model(x)`` return its ``output`` for good (the command line's ``--output``), for
    training and diagnostics as well as scoring; ``output=None`` leaves the model as it is."""
    output = check_output_option(output)
    if output is not None:
        _pick_hook(model, output)
    return model


@contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Restore every module's own train/eval flag on exit (models may mix modes)."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every module in eval mode while inside, then each back in its own mode (a model whose
    modules were in mixed modes stays mixed)."""
    with preserved_modes(model):
        model.eval()
        yield model
