"""``lightning-tune dashboard``: optuna-dashboard on a sweep's study storage.

Needs the optional ``optuna-dashboard`` package (``pip install "lightning-tune[dashboard]"``).
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
from typing import Any

__all__ = ["add_subcommand", "dashboard_storage", "serve"]

INSTALL_HINT = (
    "lightning-tune dashboard needs optuna-dashboard: pip install 'lightning-tune[dashboard]' "
    "(or pip install optuna-dashboard)"
)


def dashboard_storage(target: str) -> str:
    """The storage URL to serve for ``target``: a study directory (``<dir>/study.db``), an
    output directory holding exactly one study, a ``.db``/``.sqlite`` file or a storage URL.

    Example:
        >>> dashboard_storage("postgresql://user@host/db")
        'postgresql://user@host/db'
        >>> dashboard_storage("no/such/dir")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no study at 'no/such/dir': give a study directory (with study.db), a .db file or a storage URL
    """
    if "://" in target:
        return target
    path = pathlib.Path(target)
    if path.is_dir():
        if (path / "study.db").is_file():
            path = path / "study.db"
        else:
            found = sorted(p.parent for p in path.glob("*/study.db"))
            if len(found) != 1:
                names = [p.name for p in found]
                raise ValueError(
                    f"{target!r} holds {len(found)} studies {names}: give one study directory"
                    if found
                    else f"{target!r} has no study.db (is it a study directory?)"
                )
            path = found[0] / "study.db"
    if path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{path.resolve()}"
    if path.is_file() and path.suffix in (".log", ".jsonl"):
        return f"journal:{path.resolve()}"
    raise FileNotFoundError(
        f"no study at {target!r}: give a study directory (with study.db), a .db file or a "
        "storage URL"
    )


def _open(url: str) -> Any:
    if url.startswith("journal:"):
        from lightning_tune.tuner.storage import resolve_storage

        return resolve_storage(url, pathlib.Path("."))
    return url


def serve(target: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve ``target``'s studies with optuna-dashboard until interrupted (prints the URL).

    Example (blocks, so not run as a doctest)::

        serve("lightning_tune_runs/lightning_tune")  # http://127.0.0.1:8080/
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    from lightning_tune.tuner.storage import mask_url

    url = dashboard_storage(target)
    print(
        f"optuna-dashboard: {mask_url(url)} at http://{host}:{port}/ (Ctrl+C to stop)", flush=True
    )
    optuna_dashboard.run_server(_open(url), host=host, port=port)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.target, host=args.host, port=args.port)
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lightning-tune dashboard``."""
    parser = subparsers.add_parser(
        "dashboard",
        help="browse a sweep's study with optuna-dashboard",
        description="Start optuna-dashboard (an optional extra) on a study's storage and print "
        "its URL.",
    )
    parser.add_argument("target", help="study directory, .db file or storage URL")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.set_defaults(func=_cmd_dashboard)
