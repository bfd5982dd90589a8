"""The ``lightning-tune`` command line.

Subcommands register themselves: each feature module that has a command exposes
``add_subcommand(subparsers)``; this file only lists those modules.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

# Modules that contribute subcommands, in help order. A missing module is skipped so that a
# feature can land on its own.
_SUBCOMMAND_MODULES = (
    "lightning_tune.demo",
    "lightning_tune.schedule_cli",
    "lightning_tune.tuner.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="lightning-tune",
        description="Lightning callbacks, timm fine-tuning and Optuna sweeps with pruning.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        module.add_subcommand(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-tune`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"lightning-tune {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
