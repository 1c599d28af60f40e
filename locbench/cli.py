"""The ``locbench`` command line: a thin layer over the library.

Each subcommand lives in ``locbench/commands/<name>.py`` and defines ``add_parser(subparsers)``, which registers
its arguments and sets ``func`` to a function of the parsed arguments. Those modules import heavy libraries
(torch, timm) inside ``func`` only, so ``locbench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import pkgutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import locbench.commands as commands
from locbench import __version__
from locbench.errors import Interrupted, LocbenchError, signal_name

log = logging.getLogger("locbench")


def did_you_mean(word: str, candidates: list[str]) -> str | None:
    """The candidate closest to a mistyped ``word`` (difflib's ratio ≥ 0.6), or ``None``."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


class Parser(argparse.ArgumentParser):
    """argparse without guessing: no abbreviated options (``--epoch`` is not ``--epochs``), and a "did you mean"
    for a mistyped command, choice or option. Subcommand parsers are of the same class (argparse makes them with
    ``type(parent)``); a parser reports its own unknown options, so the message shows that command's usage."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value) -> None:
        # argparse's own hook for a value outside `choices` (subcommand names included); same message, plus a hint
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError:
            choices = [str(c) for c in action.choices]
            close = did_you_mean(value, choices) if isinstance(value, str) else None
            if close is None:
                raise
            msg = f"invalid choice: {value!r}; did you mean {close}? (choose from {', '.join(choices)})"
            raise argparse.ArgumentError(action, msg) from None

    def add_subparsers(self, **kwargs):
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        self._refuse_unknown_options(args)
        return super().parse_known_args(args, namespace)

    def _refuse_unknown_options(self, args: list[str]) -> None:
        """Name every unknown option before parsing, so that ``--ot x`` is reported as itself (with a hint) rather
        than as a missing ``--out``. A parser with subcommands checks only the options before its first word (the
        subcommand, or a value: either way what follows is not its own)."""
        known = [s for action in self._actions for s in action.option_strings]
        commands = getattr(self, "_commands", None)
        unknown = []
        for arg in args:
            if arg == "--" or (commands is not None and not arg.startswith("-")):
                break
            if arg.startswith("--"):
                name = arg.split("=", 1)[0]
            elif len(arg) > 1 and arg[0] == "-" and arg[1].isalpha():
                name = arg[:2]  # -x, -xVALUE, or flags run together (-vq): argparse reads the first letter first
            else:
                continue
            if name not in known:
                close = did_you_mean(name, known)
                unknown.append(f"{name} (did you mean {close}?)" if close else name)
        if unknown:
            self.error(f"unrecognized option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="locbench",
        description="Benchmark deep-learning pipelines for protein localization on HPA-style images.",
    )
    parser.add_argument("--version", action="version", version=f"locbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"locbench.commands.{info.name}").add_parser(sub)
    return parser


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose, args.quiet)
    try:
        with stop_on_signals():
            return int(args.func(args) or 0)
    except LocbenchError as e:
        print(f"locbench {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        # A path the OS refused (disk full, permissions, a file where a folder should be) is the user's to fix:
        # name it, no traceback. OSErrors without a path may be bugs: those keep their traceback.
        if e.filename is None:
            raise
        log.debug("OS error", exc_info=True)
        where = f"{e.filename} -> {e.filename2}" if e.filename2 else f"{e.filename}"
        print(f"locbench {args.command}: error: {e.strerror or e}: {where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        how = (
            "run the same command with --resume to continue"
            if args.command == "train"
            else "run the same command again to resume"
        )
        print(
            f"locbench {args.command}: interrupted by {signal_name(signum)}; finished work is kept: {how}",
            file=sys.stderr,
        )
        return 128 + signum


#: The signals that stop a command cleanly (the run is left interrupted, resumable): Ctrl-C and `kill`.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the command runs, SIGINT and SIGTERM raise :class:`~locbench.errors.Interrupted` in the main thread
    (SIGTERM's default would end the process without a word); the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
