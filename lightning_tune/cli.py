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
    "lightning_tune.dashboard",
    "lightning_tune.diagnostics.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand.

    Example:
        >>> args = build_parser().parse_args(["demo", "--epochs", "2"])
        >>> args.command, args.epochs
        ('demo', 2)
    """
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
    """Entry point of the ``lightning-tune`` console script; returns the exit code.

    Bad input is one line on stderr and exit code 2, never a traceback.

    Example:
        >>> main(["plot-schedule", "cosine", "--total-steps", "4", "--lr", "0.1", "--json"])
        {"schedule": "cosine", "lr": [0.1, 0.08535533905932738, 0.05, 0.014644660940672627]}
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    expected: tuple[type[BaseException], ...] = (
        ValueError,
        TypeError,
        FileNotFoundError,
        ConnectionError,
        ImportError,
    )
    from optuna.exceptions import StorageInternalError

    from lightning_tune.tuner.loop import TooManyFailuresError
    from lightning_tune.tuner.storage_files import StorageError

    expected += (StorageInternalError, TooManyFailuresError, StorageError)
    try:
        return int(args.func(args) or 0)
    except expected as err:
        print(f"lightning-tune {args.command}: error: {_masked(err, args)}", file=sys.stderr)
        return 2


def _masked(err: BaseException, args: argparse.Namespace) -> str:
    """The error message on one line, with any password of a storage URL replaced by ***."""
    from lightning_tune.tuner.storage import mask_url

    message = " ".join(str(err).split()) or type(err).__name__
    storage = getattr(args, "storage", None)
    if isinstance(storage, str):
        masked = mask_url(storage)
        if masked != storage:
            message = message.replace(storage, masked)
            password = _url_password(storage)
            if password:
                message = message.replace(password, "***")
    return message


def _url_password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
