"""The ``pxprune`` command: prune, run, sweep, report, ntk, transfer, demo."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import NoReturn

from .. import __version__
from ..api import DisconnectedMasksWarning
from ..errors import PxpruneError
from ..experiments.provenance import set_cli_argv
from ..io import USER_ERRNOS, describe_os_error
from . import demo, ntk, prune, recipes, report, run, sweep, transfer
from .common import check_common_args

DESCRIPTION = ("pxprune: foresight pruning of vision models with PX and the usual baselines.\n"
               "Run 'pxprune COMMAND --help' for a command's options.")
EPILOG = """\
examples:
  pxprune demo                                     PX vs random at 98.2 %, short CPU training
  pxprune prune --method px --sparsity 98.2% --out runs/p
  pxprune run --dataset my.npz --holdout 0.2 --method snip --sparsity 0.9 --out runs/r

--model package.module:function imports that module and calls the function: it runs your
code (only name modules you trust). Weights and checkpoints are read with weights_only=True.
Bad input is one line on stderr and exit status 2; a folder holding other work is refused."""

COMMANDS = (prune, run, demo, sweep, report, ntk, transfer, recipes)  # each: add_parser(sub)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming ``--help`` (not usage plus error);
    sub-command parsers inherit the class. ``commands``: the sub-command parsers by name."""

    commands: dict[str, argparse.ArgumentParser]  # set by build_parser

    def __init__(self, *args, **kwargs) -> None:
        # no abbreviated options: `--seed` must not quietly mean `--seeds`, and a script that
        # abbreviates must not change meaning when a later version adds an option
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` names each option's default, where it has one its help does not already
    state (None and False mean "not given", not a value)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The ``pxprune`` parser: one sub-command per module of :data:`COMMANDS`."""
    parser = OneLineParser(prog="pxprune", description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pxprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    for command_parser in sub.choices.values():  # every --help shows each option's default
        command_parser.formatter_class = DefaultsHelpFormatter
    parser.commands = dict(sub.choices)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a command may take options the parser does not know (the sweep's
    ``--slurm-*`` extras) through its ``take_unknown`` default, the rest is refused."""
    args, unknown = parser.parse_known_args(argv)
    take = getattr(args, "take_unknown", None)
    if unknown and take is not None:
        unknown = take(args, unknown)
    if unknown:  # named by the sub-command's parser: its --help lists what it takes
        commands = getattr(parser, "commands", {})
        commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _one_line(command: str, message: str) -> int:
    """Print ``message`` as one line on stderr; the exit status of a user-facing error (2)."""
    message = " ".join(message.split())
    print(f"pxprune {command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    set_cli_argv(argv)
    # the commands flag empty layers in their tables and refuse disconnected masks themselves
    warnings.filterwarnings("ignore", category=DisconnectedMasksWarning)
    parser = build_parser()
    args = parse(parser, argv)
    try:
        check_common_args(args)
        return int(args.func(args) or 0)
    except PxpruneError as exc:  # bad input or a fault the user can fix: one line, exit 2
        return _one_line(args.command, str(exc))
    except BrokenPipeError:  # ``pxprune recipes | head``: the reader left; not an error
        _silence_stdout()
        return 0
    except OSError as exc:  # disk full, read-only, a file in the way; other OSErrors are bugs
        if exc.errno not in USER_ERRNOS and not isinstance(exc, FileNotFoundError):
            raise
        return _one_line(args.command, describe_os_error(exc, "a file")
                         if not isinstance(exc, FileNotFoundError) else str(exc))
    except KeyboardInterrupt:
        print(f"pxprune {args.command}: interrupted; re-run the same command to resume",
              file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit raises no second broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
