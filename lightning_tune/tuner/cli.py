"""``lightning-tune tune``: run (or continue) a sweep described by a YAML config."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lightning_tune.tuner.recovery import add_recovery_options

__all__ = ["add_subcommand", "run_tune"]


def run_tune(config: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Run the sweep of ``config`` (the bundled digits sweep if None); return a JSON-able summary.

    ``overrides`` replace top-level config keys (``n_trials``, ``storage``, ``output_dir``, ...);
    None values are ignored. ``n_trials`` is the number of finished (COMPLETE + PRUNED) trials
    the study should have in the end (``Tuner.run(..., total=True)``): running the same sweep
    again after a crash continues it, after a finished sweep it adds nothing.

    Example (trains, so not run as a doctest; the same as ``lightning-tune tune --n-trials 4``)::

        summary = run_tune(None, n_trials=4, output_dir="runs")
        print(summary["best_params"], summary["best_value"])
    """
    from lightning_tune.tuner.config import (
        bundled_config,
        load_config,
        run_settings,
        tuner_from_config,
    )
    from lightning_tune.tuner.loop import trial_states
    from lightning_tune.tuner.report import trial_params

    cfg = load_config(config if config is not None else bundled_config())
    settings = run_settings(cfg, **overrides)
    tuner = tuner_from_config(cfg, **overrides)
    result = tuner.run(
        settings["n_trials"],
        settings["timeout"],
        test_best=settings["test_best"],
        plots=settings["plots"],
        total=True,
    )
    trials = result.trials
    summary: dict[str, Any] = {
        "study": tuner.study_name,
        "study_dir": str(tuner.study_dir),
        "trials": len(trials),
        "states": trial_states(result.study),
    }
    try:
        summary.update(
            best_trial=result.best_trial.number,
            best_value=result.best_value,
            best_params=result.best_params,
            best_checkpoint=str(result.best_checkpoint) if result.best_checkpoint else None,
        )
    except ValueError:
        summary["best_trial"] = None
    if len(result.study.directions) > 1:
        summary["pareto_front"] = [
            {"trial": t.number, "values": list(t.values), "params": trial_params(t)}
            for t in result.best_trials
        ]
    if result.test_metrics is not None:
        summary["test_metrics"] = result.test_metrics
    return summary


def _cmd_tune(args: argparse.Namespace) -> int:
    # --workers N: N worker processes on the shared study, see tuner/workers.py.
    runner = run_tune
    if getattr(args, "workers", 1) != 1:
        from functools import partial

        from lightning_tune.tuner.worker_cli import tune_with_workers

        runner = partial(tune_with_workers, n_workers=args.workers)
    summary = runner(
        args.config,
        n_trials=args.n_trials,
        timeout=args.timeout,
        storage=args.storage,
        output_dir=args.output_dir,
        study_name=args.new_study or args.study_name,
        resume="new" if args.new_study else ("force" if args.force_resume else None),
        seed=args.seed,
        quiet=True if args.quiet else None,
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        preflight=False if args.no_preflight else None,
        max_consecutive_failures=args.max_failures,
    )
    print(json.dumps({"tune": summary}))
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lightning-tune tune``."""
    parser = subparsers.add_parser(
        "tune",
        help="run or continue an Optuna sweep from a YAML config (median/Hyperband pruning)",
        description="Run the sweep a YAML config describes. Running the same command again "
        "continues the study (it lives in a SQLite file in the study directory unless "
        "`storage` says otherwise) until it has --n-trials finished (COMPLETE + PRUNED) "
        "trials, with or without --workers: after a crash it continues, after a finished sweep "
        "it runs nothing more. A trial left running by a killed run is marked FAIL once its "
        "heartbeat is older than the grace period and retried with its parameters. Without "
        "--config, the bundled digits sweep runs.",
    )
    parser.add_argument(
        "--config", default=None, help="sweep YAML (default: the bundled digits_sweep.yaml)"
    )
    parser.add_argument(
        "--n-trials",
        type=int,
        default=None,
        help="finished (COMPLETE + PRUNED) trials the study should have in the "
        "end, trials of earlier runs included (default: the config's)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds after which no new trial starts"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="'memory' or an Optuna storage URL (default: SQLite in the study dir)",
    )
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--study-name", default=None)
    parser.add_argument(
        "--new-study",
        default=None,
        metavar="NAME",
        help="start a new study NAME (refused if it exists) instead of continuing the config's",
    )
    parser.add_argument(
        "--force-resume",
        action="store_true",
        help="continue the study although it was created with other settings (search space, "
        "max_epochs, monitor, ...); without it such a rerun is refused with a diff",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_recovery_options(parser, interval_default=None)
    from lightning_tune.tuner.failfast import add_fail_fast_options

    add_fail_fast_options(parser)
    parser.set_defaults(func=_cmd_tune)
    # `tune --workers N` and `lightning-tune worker` (lightning_tune/tuner/worker_cli.py)
    from lightning_tune.tuner.worker_cli import add_worker_subcommand, add_workers_option

    add_workers_option(parser)
    add_worker_subcommand(subparsers)
