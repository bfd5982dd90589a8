"""Command-line parts of the workers: ``lightning-tune tune --workers N`` and
``lightning-tune worker`` (registered by :mod:`lightning_tune.tuner.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from typing import Any

from lightning_tune._validation import check_int
from lightning_tune.tuner.failfast import add_fail_fast_options
from lightning_tune.tuner.loop import finished_trials, run_worker, trial_states
from lightning_tune.tuner.recovery import HEARTBEAT_INTERVAL, MAX_RETRY, add_recovery_options
from lightning_tune.tuner.storage import (
    check_storage,
    describe_storage,
    heartbeat_settings,
    resolve_storage,
)
from lightning_tune.tuner.workers import run_workers

__all__ = ["add_worker_subcommand", "add_workers_option", "tune_with_workers"]


def tune_with_workers(
    config: str | os.PathLike | None, n_workers: int, **overrides: Any
) -> dict[str, Any]:
    """``lightning-tune tune --workers N``: run a config's sweep with N worker processes.

    ``n_trials`` (from the config or ``overrides``) is the number of finished trials the study
    should have, so running the same command again after a crash continues the sweep instead
    of adding ``n_trials`` more. Returns a JSON-able summary (no password in it).
    """
    from lightning_tune.tuner.config import (
        bundled_config,
        load_config,
        run_settings,
        tuner_from_config,
    )

    cfg = load_config(config if config is not None else bundled_config())
    overrides = {k: v for k, v in overrides.items() if v is not None}
    settings = run_settings(cfg, **overrides)
    if settings["n_trials"] is None:
        raise ValueError("parallel workers need `n_trials` (finished trials to reach)")
    merged = {**cfg, **overrides}
    interval = merged.get("heartbeat_interval", HEARTBEAT_INTERVAL) or None  # 0: off
    heartbeat = {
        "heartbeat_interval": interval,
        "grace_period": merged.get("grace_period") if interval else None,
        "max_retry": merged.get("max_retry", MAX_RETRY),
    }
    study = run_workers(
        cfg,
        settings["n_trials"],
        n_workers,
        timeout=settings["timeout"],
        overrides=overrides,
        **heartbeat,
    )
    tuner = tuner_from_config(cfg, **overrides)
    result = tuner.result(report=True, plots=settings["plots"])
    summary: dict[str, Any] = {
        "study": tuner.study_name,
        "study_dir": str(tuner.study_dir),
        "storage": tuner.storage_description,
        "workers": n_workers,
        "finished": finished_trials(study),
        "states": trial_states(study),
    }
    try:
        summary.update(best_trial=result.best_trial.number, best_value=result.best_value)
    except ValueError:
        summary["best_trial"] = None
    return summary


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--workers N`` to the ``tune`` command (see :func:`tune_with_workers`)."""
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on this machine (default 1); --n-trials counts the study's "
        "finished trials either way, so re-running after a crash continues the sweep",
    )


def _cmd_worker(args: argparse.Namespace) -> int:
    from lightning_tune.tuner.config import load_config, run_settings, tuner_from_config

    cfg = load_config(args.config)
    n_trials = args.n_trials if args.n_trials is not None else run_settings(cfg)["n_trials"]
    check_int("n_trials", n_trials, minimum=1)
    if args.threads is not None:
        check_int("threads", args.threads, minimum=1)
        import torch

        torch.set_num_threads(args.threads)
    study_dir = pathlib.Path(args.output_dir or cfg.get("output_dir") or "lightning_tune_runs")
    interval = args.heartbeat_interval or None  # 0: crash recovery off
    check_storage(args.storage, in_memory_ok=False)
    settings = heartbeat_settings(args.storage, interval, args.grace_period, args.max_retry)
    storage = resolve_storage(args.storage, study_dir / args.study, in_memory_ok=False, **settings)
    overrides = {
        "study_name": args.study,
        "output_dir": args.output_dir,
        "storage": storage,
        "heartbeat_interval": interval if interval is not None else 0,
        "grace_period": args.grace_period,
        "max_retry": args.max_retry,
        "preflight": False if args.no_preflight else None,
        "max_consecutive_failures": args.max_failures,
    }
    tuner = tuner_from_config(cfg, **{k: v for k, v in overrides.items() if v is not None})
    tuner.check_setup()
    study = tuner.create_study()
    study.sampler.reseed_rng()  # workers on other machines use the same config and seed
    ran = run_worker(tuner, n_trials, timeout=args.timeout, name=f"worker {os.getpid()}")
    summary = {
        "study": args.study,
        "storage": describe_storage(storage),
        "ran": ran,
        "finished": finished_trials(study),
        "n_trials": n_trials,
        "states": trial_states(study),
    }
    print(json.dumps({"worker": summary}))
    return 0


def add_worker_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lightning-tune worker``: join a study and run trials until it is complete."""
    parser = subparsers.add_parser(
        "worker",
        help="join a (shared) study and run its trials until it has n_trials finished ones",
        description="Run trials of the study NAME in STORAGE with the sweep of --config, "
        "together with any other workers (processes or machines) on the same storage. The "
        "study is created if it does not exist. Trials of dead workers are detected by "
        "their heartbeat and retried with the same parameters. Passwords in the URL are "
        "never printed.",
    )
    parser.add_argument(
        "--storage", required=True, help="storage URL or path, e.g. postgresql://user:pw@host/db"
    )
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--config", required=True, help="sweep YAML (the same on every machine)")
    parser.add_argument(
        "--n-trials",
        type=int,
        default=None,
        help="finished trials the study should reach (default: the config's)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds after which this worker starts no new trial",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--output-dir", default=None, help="logs and checkpoints (local)")
    add_recovery_options(parser, interval_default=HEARTBEAT_INTERVAL, max_retry=True)
    add_fail_fast_options(parser)
    parser.set_defaults(func=_cmd_worker)
