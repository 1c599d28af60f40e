"""The ``locbench`` command line: a thin layer over the library.

Each subcommand lives in ``locbench/commands/<name>.py`` and defines ``add_parser(subparsers)``, which registers
its arguments and sets ``func`` to a function of the parsed arguments. Those modules import heavy libraries
(torch, timm) inside ``func`` only, so ``locbench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import locbench.commands as commands
from locbench import __version__
from locbench.errors import LocbenchError

log = logging.getLogger("locbench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    except KeyboardInterrupt:
        print(f"locbench {args.command}: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
