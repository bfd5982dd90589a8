"""Parallel workers and storages: throughput with 1 vs 2 workers, storage overhead per trial.

Prints one JSON line. Three parts:

* ``storage``: seconds of storage work per trial (a trivial objective that reports 10
  intermediate values), for in-memory, SQLite (WAL, as ``resolve_storage`` sets it up), the
  journal file and PostgreSQL (when ``LIGHTNING_TUNE_TEST_POSTGRES_URL`` is set, e.g. after
  ``source .ci/postgres.sh; pg_start``), in one process and in 2 concurrent processes.
* ``throughput``: the same 30 enqueued trials (tiny timm model on the digits, no pruning) run
  by 1 worker (all CPU threads) and by 2 workers (half the threads each): finished trials per
  minute in steady state (both workers busy), over the trials' span, and including the
  workers' start-up (importing torch/Lightning/timm).
* ``hyperband``: per sampler seed, a 1-worker sweep without pruning vs a 2-worker Hyperband
  sweep on the same enqueued ``RandomSampler(seed)`` trials: when does the Hyperband sweep
  first reach the no-pruning sweep's best validation loss, and when has it trained that
  sweep's best configuration to the end (1 and 2 torch threads round differently), as
  fractions of the no-pruning sweep's wall time.

Run: ``python benchmarks/bench_workers.py [--quick] [--parts throughput,hyperband]
[--repeats 3] [--trials 30] [--seeds 0 1 2]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import platform
import sys
import tempfile
import time

import optuna
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.ERROR)

_REPORTS = 10


def _trivial(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    for step in range(_REPORTS):
        trial.report(x * x + step, step)
    return x * x


def _storage_worker(spec: str | None, study_dir: str, n: int, queue: multiprocessing.Queue) -> None:
    from lightning_tune.tuner.storage import resolve_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = resolve_storage(spec, study_dir, in_memory_ok=False)
    study = optuna.load_study(study_name="bench", storage=storage)
    start = time.perf_counter()
    study.optimize(_trivial, n_trials=n)
    queue.put(time.perf_counter() - start)


def storage_overhead(n_trials: int) -> dict[str, dict[str, float]]:
    from lightning_tune.tuner.storage import resolve_storage

    specs: dict[str, str | None] = {"memory": "memory", "sqlite": None, "journal": "journal"}
    pg = os.environ.get("LIGHTNING_TUNE_TEST_POSTGRES_URL")
    if pg:
        specs["postgresql"] = pg
    out: dict[str, dict[str, float]] = {}
    for name, spec in specs.items():
        tmp = tempfile.mkdtemp()
        if spec == "journal":
            spec = f"journal:{tmp}/study.log"
        study_name = f"bench-{time.time_ns()}"
        storage = resolve_storage(spec, tmp)
        study = optuna.create_study(study_name=study_name, storage=storage)
        start = time.perf_counter()
        study.optimize(_trivial, n_trials=n_trials)
        row = {"ms_per_trial_1proc": 1000 * (time.perf_counter() - start) / n_trials}
        if name != "memory":
            optuna.create_study(study_name="bench", storage=storage)
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            procs = [
                ctx.Process(target=_storage_worker, args=(spec, tmp, n_trials, queue))
                for _ in range(2)
            ]
            for p in procs:
                p.start()
            seconds = [queue.get() for _ in procs]
            for p in procs:
                p.join()
            bench = optuna.load_study(study_name="bench", storage=resolve_storage(spec, tmp))
            trials = bench.get_trials(deepcopy=False)
            row["ms_per_trial_2proc"] = 1000 * max(seconds) / n_trials
            row["complete_2proc"] = sum(t.state == TrialState.COMPLETE for t in trials)
            row["unique_numbers_2proc"] = len({t.number for t in trials}) == len(trials)
        out[name] = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
    base = out["memory"]["ms_per_trial_1proc"]
    for row in out.values():
        row["overhead_ms_per_trial"] = round(row["ms_per_trial_1proc"] - base, 2)
    return out


def _tuner(
    study_dir: pathlib.Path,
    name: str,
    pruner: str,
    max_epochs: int,
    quick: bool,
    sampler: str = "tpe",
    seed: int = 0,
):
    from lightning_tune import DigitsDataModule, TimmClassifier
    from lightning_tune.tuner import Tuner

    return Tuner(
        TimmClassifier,
        SPACE,
        datamodule=DigitsDataModule,
        datamodule_kwargs={"image_size": 16, "train_fraction": 0.3 if quick else 0.5},
        module_kwargs={"model_name": "test_resnet"},
        study_name=name,
        output_dir=study_dir,
        max_epochs=max_epochs,
        trainer_kwargs={"accelerator": "cpu", "devices": 1, "num_sanity_val_steps": 0},
        pruner=pruner,
        pruner_kwargs={"min_resource": 1, "reduction_factor": 3} if pruner == "hyperband" else None,
        sampler=sampler,
        sampler_kwargs={"n_startup_trials": 4} if sampler == "tpe" else {"seed": seed},
        seed=seed,
        keep_checkpoints=0,
        loggers=(),
        quiet=True,
    )


SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
}


def _random_params(n_trials: int, seed: int) -> list[dict]:
    """The first ``n_trials`` parameter sets a ``RandomSampler(seed)`` proposes for SPACE."""
    from lightning_tune.tuner.space import SearchSpace

    space = SearchSpace.coerce(SPACE).distributions()
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    params = []
    for _ in range(n_trials):
        trial = probe.ask(space)
        params.append(trial.params)
        probe.tell(trial, 0.0)
    return params


def _finished(study: optuna.Study) -> list:
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]


def steady_rate(trials: list, n_workers: int) -> float:
    """Finished trials per second while all ``n_workers`` workers were running trials.

    The window runs from the moment ``n_workers`` trials first ran at the same time (the last
    worker finished starting) to the last moment they did (the first worker ran out of trials);
    trials cut by the window count by the fraction of their run inside it.
    """
    events = sorted(
        [(t.datetime_start.timestamp(), 1) for t in trials]
        + [(t.datetime_complete.timestamp(), -1) for t in trials]
    )
    running, start, end = 0, None, None
    for time_s, delta in events:
        if delta < 0 and running == n_workers:
            end = time_s
        running += delta
        if running == n_workers and start is None:
            start = time_s
    if start is None or end is None or end <= start:
        return float("nan")
    done = 0.0
    for t in trials:
        a, b = t.datetime_start.timestamp(), t.datetime_complete.timestamp()
        inside = min(b, end) - max(a, start)
        if inside > 0:
            done += inside / (b - a)
    return done / (end - start)


def _run(tuner, n_trials: int, n_workers: int, enqueue: list[dict] | None = None) -> dict:
    from lightning_tune.tuner.workers import run_workers

    if enqueue:
        study = tuner.create_study()
        for params in enqueue:
            study.enqueue_trial(params)
        tuner.study = None
    start = time.time()
    study = run_workers(tuner, n_trials=n_trials, n_workers=n_workers, heartbeat_interval=10)
    wall = time.time() - start
    trials = _finished(study)
    first = min(t.datetime_start.timestamp() for t in trials)
    last = max(t.datetime_complete.timestamp() for t in trials)
    return {
        "study": study,
        "start": start,
        "first_trial_start": first,
        "wall_s": wall,
        "trials_s": last - first,
        "steady_per_s": steady_rate(trials, n_workers),
    }


def throughput(quick: bool, repeats: int = 3, n_trials: int | None = None) -> dict:
    n_trials = n_trials or (6 if quick else 30)
    params = _random_params(n_trials, seed=0)
    out: dict = {"n_trials": n_trials, "max_epochs": 3, "runs": []}
    # Interleaved repeats (1, 2, 1, 2, ...): load drifts over time.
    for repeat in range(repeats):
        for n_workers in (1, 2):
            tmp = pathlib.Path(tempfile.mkdtemp())
            tuner = _tuner(tmp, f"tp{n_workers}", "none", 3, quick)
            load = os.getloadavg()[0]
            run = _run(tuner, n_trials, n_workers, enqueue=params)
            out["runs"].append({
                "workers": n_workers,
                "repeat": repeat,
                "load_avg_before": round(load, 2),
                "wall_s": round(run["wall_s"], 1),
                "trials_per_min_incl_startup": round(60 * n_trials / run["wall_s"], 2),
                "trials_per_min_excl_startup": round(60 * n_trials / run["trials_s"], 2),
                "trials_per_min_steady": round(60 * run["steady_per_s"], 2),
            })  # fmt: skip
    for key in (
        "trials_per_min_incl_startup",
        "trials_per_min_excl_startup",
        "trials_per_min_steady",
    ):
        medians = {}
        for n_workers in (1, 2):
            values = sorted(r[key] for r in out["runs"] if r["workers"] == n_workers)
            medians[n_workers] = values[len(values) // 2]
        out[f"median_{key}"] = {f"{k}_worker": v for k, v in medians.items()}
        out[f"speedup_{key.removeprefix('trials_per_min_')}"] = round(medians[2] / medians[1], 2)
        # the same ratio within each interleaved pair, then its median
        pairs = sorted(b[key] / a[key] for a, b in zip(out["runs"][0::2], out["runs"][1::2]))
        out[f"pair_speedups_{key.removeprefix('trials_per_min_')}"] = [round(x, 2) for x in pairs]
    return out


def hyperband(
    quick: bool, seeds: list[int], n_trials: int | None = None, max_epochs: int | None = None
) -> dict:
    """No pruning with 1 worker vs Hyperband with 2 workers on the same enqueued trials.

    Trial k has the same parameters (``RandomSampler(seed)``), initial weights and batches
    (``seed + k``) in both sweeps, so the question is only when the Hyperband sweep has
    finished the no-pruning sweep's best configuration (or a better one) unpruned.
    """
    n_trials = n_trials or (8 if quick else 16)
    max_epochs = max_epochs or (3 if quick else 9)
    runs = []
    for seed in seeds:
        params = _random_params(n_trials, seed)
        tmp = pathlib.Path(tempfile.mkdtemp())
        base = _run(
            _tuner(tmp, "nopruning", "none", max_epochs, quick, "random", seed),
            n_trials,
            1,
            enqueue=params,
        )
        target = base["study"].best_value
        best_number = base["study"].best_trial.number
        hb = _run(
            _tuner(tmp, "hyperband", "hyperband", max_epochs, quick, "random", seed),
            n_trials,
            2,
            enqueue=params,
        )
        hb_trials = hb["study"].get_trials(deepcopy=False)
        # 1 vs 2 torch threads sum in a different order: equal up to float rounding
        tolerance = 1e-4 * abs(target)
        reached = sorted(
            t.datetime_complete.timestamp()
            for t in hb_trials
            if t.state == TrialState.COMPLETE
            and t.value is not None
            and t.value <= target + tolerance
        )
        same = hb_trials[best_number]
        # The configuration view: when Hyperband has trained the no-pruning best configuration
        # to the end (unpruned), whatever value float rounding gives it with 1 thread, or has
        # already reached its value with another one.
        config_done = reached[:1] + (
            [same.datetime_complete.timestamp()] if same.state == TrialState.COMPLETE else []
        )
        run = {
            "seed": seed,
            "no_pruning_1_worker": {
                "wall_s": round(base["wall_s"], 1),
                "startup_s": round(base["first_trial_start"] - base["start"], 1),
                "best_val_loss": round(target, 5),
                "best_trial": best_number,
                "epochs": sum(len(t.intermediate_values) for t in _finished(base["study"])),
            },
            "hyperband_2_workers": {
                "wall_s": round(hb["wall_s"], 1),
                "startup_s": round(hb["first_trial_start"] - hb["start"], 1),
                "best_val_loss": round(hb["study"].best_value, 5),
                "pruned": sum(t.state == TrialState.PRUNED for t in hb_trials),
                "epochs": sum(len(t.intermediate_values) for t in _finished(hb["study"])),
                "baseline_best_trial_state": same.state.name,
                "baseline_best_trial_value": None if same.value is None else round(same.value, 5),
            },
            # from the start of each sweep (worker start-up included in both)
            "time_to_baseline_best_ratio": (
                round((reached[0] - hb["start"]) / base["wall_s"], 3) if reached else None
            ),
            # from each sweep's first trial (start-up excluded in both)
            "time_to_baseline_best_ratio_excl_startup": (
                round((reached[0] - hb["first_trial_start"]) / base["trials_s"], 3)
                if reached
                else None
            ),
            "time_to_baseline_best_config_ratio": (
                round((min(config_done) - hb["start"]) / base["wall_s"], 3) if config_done else None
            ),
        }
        runs.append(run)
        print(json.dumps({"hyperband_run": run}), flush=True)
    ratios = [r["time_to_baseline_best_ratio"] for r in runs]
    excl = [r["time_to_baseline_best_ratio_excl_startup"] for r in runs]
    config = [r["time_to_baseline_best_config_ratio"] for r in runs]
    return {
        "n_trials": n_trials,
        "max_epochs": max_epochs,
        "sampler": "random (same enqueued trials in both sweeps)",
        "runs": runs,
        "reached_in": f"{sum(r is not None for r in ratios)} of {len(runs)} seeds",
        "median_ratio": _median(ratios),
        "median_ratio_excl_startup": _median(excl),
        "config_reached_in": f"{sum(r is not None for r in config)} of {len(runs)} seeds",
        "median_config_ratio": _median(config),
    }


def _median(values: list) -> float | None:
    """Median with a never-reached (None) counting as infinitely slow."""
    ordered = sorted(values, key=lambda v: float("inf") if v is None else v)
    return ordered[len(ordered) // 2] if ordered else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sweeps")
    parser.add_argument("--parts", default="storage,throughput,hyperband")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved throughput runs")
    parser.add_argument("--trials", type=int, default=None, help="trials per throughput sweep")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="sampler seeds of the Hyperband comparison",
    )
    args = parser.parse_args()
    parts = args.parts.split(",")
    result: dict = {
        "bench": "workers",
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "load_avg_at_start": os.getloadavg()[0],
            "python": platform.python_version(),
            "optuna": optuna.__version__,
        },
    }
    if "storage" in parts:
        result["storage"] = storage_overhead(30 if args.quick else 100)
    if "throughput" in parts:
        result["throughput"] = throughput(args.quick, args.repeats, args.trials)
    if "hyperband" in parts:
        result["hyperband"] = hyperband(args.quick, args.seeds)
    result["machine"]["load_avg_at_end"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    main()
