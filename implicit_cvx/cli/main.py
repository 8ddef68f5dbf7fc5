"""The parser and the error policy of `implicit-cvx`.

Every failure ends in one line on stderr — the traceback only with --debug: exit code 2 for bad
input (a file, a flag, a config, a model that is refused), 1 when the computation itself fails (a
solver, an equilibrium, memory, the disk, a cluster), 130 for Ctrl-C (a fit leaves a checkpoint to
--resume from); a closed pipe (`implicit-cvx predict … | head`) ends quietly.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError
from . import fit, inspect, reproduce, robust

BAD_INPUT = (ConfigError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
             IsADirectoryError, PermissionError)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help text with every option's default shown (unless it is None or a switch's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="implicit-cvx", formatter_class=_Formatter,
        description="Implicit models x = φ(Ax + Bu + b_x), ŷ = Cx + Du + b_y, trained by convex "
                    "optimization, with robustness certificates.")
    p.add_argument("--version", action="version", version=f"implicit-cvx {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (inspect, fit, robust, reproduce):
        module.add_commands(sub, _Formatter)
    for command in sub.choices.values():  # `implicit-cvx fit … --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of an error")
    return p


def _fail(command: str, exc: BaseException, code: int, hint: str = "") -> int:
    print(f"implicit-cvx {command}: error: {exc}{hint}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command
    try:
        return args.func(args)
    except KeyboardInterrupt:
        hint = "; continue with --resume" if command == "fit" else ""
        print(f"implicit-cvx {command}: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, BAD_INPUT):
            return _fail(command, exc, 2)
        if isinstance(exc, MemoryError):
            return _fail(command, f"out of memory ({exc or 'allocation failed'}); use fewer states "
                                  "or samples", 1)
        known = isinstance(exc, (RuntimeError, OSError, ArithmeticError))
        hint = "" if known else " (unexpected: rerun with --debug and report it)"
        return _fail(command, f"{type(exc).__name__}: {exc}" if not known else exc, 1, hint)
