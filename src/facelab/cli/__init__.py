"""The ``facelab`` command line.

Each sub-command lives in its own module of this package, which defines
``register(subparsers) -> None`` (adding its parser and setting ``func`` on it) — the list
:data:`COMMAND_MODULES` names them. A command's ``func(args) -> int`` returns the exit code;
facelab errors are reported as one readable line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from facelab.errors import FacelabError
from facelab.version import __version__

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

#: Modules (relative to this package) that each register one or more sub-commands.
COMMAND_MODULES = ("analyze", "models", "eval_cmd", "train_cmd", "gallery_cmd", "cluster_cmd", "video", "serve_cmd")

_logger = logging.getLogger("facelab.cli")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(prog="facelab", description="Face detection, recognition and analysis.")
    parser.add_argument("--version", action="version", version=f"facelab {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"facelab.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"facelab.cli.{name}":
                continue  # command module not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FacelabError as exc:
        print(f"facelab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
