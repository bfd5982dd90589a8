"""See a learning-rate schedule before training: numbers and a PNG, from Python or the shell.

``lightning-tune plot-schedule cosine --total-steps 1000 --warmup 0.1 --lr 3e-3 -o lr.png``
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from lightning_tune._validation import check_int, check_number, parse_assignments
from lightning_tune.callbacks.lr_schedule import INTERVALS, LRSchedule
from lightning_tune.schedules import SCHEDULES, WARMUP_MODES

__all__ = ["add_subcommand", "plot_schedule", "preview_schedule"]


def preview_schedule(
    schedule: str = "cosine",
    total_steps: int = 100,
    lr: float = 1.0,
    path: str | os.PathLike | None = None,
    steps_per_epoch: int | None = None,
    **kwargs: Any,
) -> list[float]:
    """The LR at every step of a run of ``total_steps``, optionally plotted to a PNG at ``path``.

    ``schedule`` and ``kwargs`` are exactly :class:`~lightning_tune.callbacks.LRSchedule`'s
    arguments (``warmup``, ``warmup_mode``, ``min_factor``, ...), and the values come from the
    same code the callback runs during training. ``lr`` is the peak LR of a group with
    ``lr_scale`` 1 (``max_lr``, if given, wins).

    Example:
        >>> lrs = preview_schedule("cosine", total_steps=6, lr=0.1, warmup=2)
        >>> [round(lr, 4) for lr in lrs]
        [0.0, 0.05, 0.1, 0.0854, 0.05, 0.0146]
    """
    check_int("total_steps", total_steps, minimum=1)
    lr = check_number("lr", lr, low=0, low_open=True, finite=False, type_error=ValueError)
    callback = LRSchedule(schedule, **kwargs)
    lrs = callback.preview(total_steps, lr=lr, steps_per_epoch=steps_per_epoch)
    if path is not None:
        momentum = None
        if callback.cycle_momentum:
            warmup, main_total = callback.lengths(total_steps, steps_per_epoch)
            momentum = [callback.momentum(t, warmup, main_total) for t in range(total_steps)]
        plot_schedule(lrs, path, title=_title(callback), unit=callback.interval, momentum=momentum)
    return lrs


def plot_schedule(
    lrs: Sequence[float],
    path: str | os.PathLike,
    title: str = "learning rate",
    unit: str = "step",
    momentum: Sequence[float] | None = None,
) -> None:
    """Write the LR curve ``lrs`` (and an optional momentum curve) as a PNG at ``path``.

    Uses matplotlib's Agg canvas directly, so it needs no display and leaves pyplot alone.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "lr.png"
        >>> plot_schedule([0.0, 0.5, 1.0, 0.5], out)
        >>> out.read_bytes()[:4] == b"\\x89PNG"
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(range(len(lrs)), lrs, color="tab:blue", label="lr")
    axes.set_xlabel(unit)
    axes.set_ylabel("learning rate")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    if momentum is not None:
        twin = axes.twinx()
        twin.plot(range(len(momentum)), momentum, color="tab:orange", label="momentum")
        twin.set_ylabel("momentum / beta1")
    figure.tight_layout()
    figure.savefig(os.fspath(path))


def _title(callback: LRSchedule) -> str:
    warmup = f"warmup={callback.warmup} ({callback.warmup_mode}) + " if callback.warmup else ""
    return f"{warmup}{callback.schedule!r}"


def _warmup(text: str) -> int | float:
    value = float(text)
    return int(value) if (value.is_integer() and value >= 1) or value == 0 else value


def _cmd_plot_schedule(args: argparse.Namespace) -> int:
    kwargs = parse_assignments(args.set or [], "--set", "min_factor=0.01")
    kwargs.update(warmup=args.warmup, warmup_mode=args.warmup_mode, interval=args.interval)
    if args.warmup_start_factor is not None:
        kwargs["warmup_start_factor"] = args.warmup_start_factor
    if args.max_lr is not None:
        kwargs["max_lr"] = args.max_lr
    lrs = preview_schedule(
        args.schedule,
        total_steps=args.total_steps,
        lr=args.lr,
        path=args.output,
        steps_per_epoch=args.steps_per_epoch,
        **kwargs,
    )
    if args.json:
        print(json.dumps({"schedule": args.schedule, "lr": lrs}))
        return 0
    width = len(str(len(lrs) - 1))
    shown = sorted({round(i * (len(lrs) - 1) / 10) for i in range(11)})
    print(
        f"{args.schedule}: {len(lrs)} {args.interval}s, peak {max(lrs):.6g} at "
        f"{args.interval} {lrs.index(max(lrs))}, last {lrs[-1]:.6g}"
    )
    for t in shown:
        print(f"  {args.interval} {t:>{width}}: {lrs[t]:.6g}")
    if args.output:
        print(f"plot written to {args.output}")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lightning-tune plot-schedule``."""
    parser = subparsers.add_parser(
        "plot-schedule",
        help="preview a learning-rate schedule (numbers and a PNG) before training",
        description="Print (and plot) the LR that LRSchedule sets at each step. Schedule "
        "arguments go through --set, e.g. --set min_factor=0.01 --set milestones=[30,60].",
    )
    parser.add_argument(
        "schedule",
        nargs="?",
        default="cosine",
        choices=list(SCHEDULES),
        help="main schedule (default: cosine)",
    )
    parser.add_argument(
        "--total-steps",
        type=int,
        default=1000,
        help="run length in optimizer steps (or epochs with --interval epoch)",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument(
        "--max-lr",
        type=float,
        default=None,
        help="peak LR overriding --lr (as LRSchedule(max_lr=...))",
    )
    parser.add_argument(
        "--warmup",
        type=_warmup,
        default=0,
        help="warmup length (int) or fraction of the run (float in (0, 1))",
    )
    parser.add_argument("--warmup-mode", choices=WARMUP_MODES, default="linear")
    parser.add_argument("--warmup-start-factor", type=float, default=None)
    parser.add_argument("--interval", choices=INTERVALS, default="step")
    parser.add_argument(
        "--steps-per-epoch", type=int, default=None, help="needed for --set warmup_unit=epoch"
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a schedule argument (repeatable), e.g. min_factor=0.01",
    )
    parser.add_argument("-o", "--output", default=None, help="write the plot to this PNG file")
    parser.add_argument("--json", action="store_true", help="print every LR as one JSON line")
    parser.set_defaults(func=_cmd_plot_schedule)
