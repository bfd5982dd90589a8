"""Parallel workers and storages: throughput with 1 vs 2 workers, storage overhead per trial.

Prints one JSON line. Three parts:

* ``storage``: seconds of storage work per trial (a trivial objective that reports 10
  intermediate values), for in-memory, SQLite (WAL, as ``resolve_storage`` sets it up), the
  journal file and PostgreSQL (when ``LIGHTNING_TUNE_TEST_POSTGRES_URL`` is set, e.g. after
  ``source .ci/postgres.sh; pg_start``), in one process and in 2 concurrent processes.
* ``throughput``: the same enqueued trials (tiny timm model on the digits, no pruning) run by 1
  worker (all CPU threads) and by 2 workers (half the threads each): finished trials per
  minute, with and without the workers' start-up (importing torch/Lightning/timm).
* ``hyperband``: a 1-worker sweep without pruning vs a 2-worker Hyperband sweep (same sampler
  and trial budget): when does the Hyperband sweep first reach the no-pruning sweep's best
  validation loss, as a fraction of the no-pruning sweep's wall time.

Run: ``python benchmarks/bench_workers.py [--quick]``.
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


def _tuner(study_dir: pathlib.Path, name: str, pruner: str, max_epochs: int, quick: bool):
    from lightning_tune import DigitsDataModule, TimmClassifier
    from lightning_tune.tuner import Tuner

    return Tuner(
        TimmClassifier,
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        },
        datamodule=DigitsDataModule,
        datamodule_kwargs={"image_size": 16, "train_fraction": 0.3 if quick else 0.5},
        module_kwargs={"model_name": "test_resnet"},
        study_name=name,
        output_dir=study_dir,
        max_epochs=max_epochs,
        trainer_kwargs={"accelerator": "cpu", "devices": 1, "num_sanity_val_steps": 0},
        pruner=pruner,
        pruner_kwargs={"min_resource": 1, "reduction_factor": 3} if pruner == "hyperband" else None,
        sampler="tpe",
        sampler_kwargs={"n_startup_trials": 4},
        keep_checkpoints=0,
        loggers=(),
        quiet=True,
    )


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
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    first = min(t.datetime_start.timestamp() for t in trials)
    last = max(t.datetime_complete.timestamp() for t in trials)
    return {"study": study, "start": start, "wall_s": wall, "trials_s": last - first}


def throughput(quick: bool, repeats: int = 3) -> dict:
    n_trials = 6 if quick else 10
    sampler = optuna.samplers.RandomSampler(seed=0)
    space = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "weight_decay": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
    }
    probe = optuna.create_study(sampler=sampler)
    params = []
    for _ in range(n_trials):
        trial = probe.ask(space)
        params.append(trial.params)
        probe.tell(trial, 0.0)
    out: dict = {"n_trials": n_trials, "max_epochs": 3, "runs": []}
    # Interleaved repeats (1, 2, 1, 2, ...): the machine is shared, so load drifts over time.
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
            })  # fmt: skip
    for key in ("trials_per_min_incl_startup", "trials_per_min_excl_startup"):
        medians = {}
        for n_workers in (1, 2):
            values = sorted(r[key] for r in out["runs"] if r["workers"] == n_workers)
            medians[n_workers] = values[len(values) // 2]
        out[f"median_{key}"] = {f"{k}_worker": v for k, v in medians.items()}
        out[f"speedup_{key.removeprefix('trials_per_min_')}"] = round(medians[2] / medians[1], 2)
    return out


def hyperband(quick: bool) -> dict:
    n_trials, max_epochs = (8, 3) if quick else (16, 6)
    tmp = pathlib.Path(tempfile.mkdtemp())
    base = _run(_tuner(tmp, "nopruning", "none", max_epochs, quick), n_trials, 1)
    target = base["study"].best_value
    hb = _run(_tuner(tmp, "hyperband", "hyperband", max_epochs, quick), n_trials, 2)
    reached = sorted(
        t.datetime_complete.timestamp() - hb["start"]
        for t in hb["study"].get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE and t.value is not None and t.value <= target
    )
    states = [t.state.name for t in hb["study"].get_trials(deepcopy=False)]
    return {
        "n_trials": n_trials,
        "max_epochs": max_epochs,
        "no_pruning_1_worker": {
            "wall_s": round(base["wall_s"], 1),
            "best_val_loss": round(target, 4),
        },
        "hyperband_2_workers": {
            "wall_s": round(hb["wall_s"], 1),
            "best_val_loss": round(hb["study"].best_value, 4),
            "pruned": states.count("PRUNED"),
            "complete": states.count("COMPLETE"),
            "reached_baseline_best_after_s": round(reached[0], 1) if reached else None,
        },
        "time_to_baseline_best_ratio": round(reached[0] / base["wall_s"], 3) if reached else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sweeps")
    parser.add_argument("--parts", default="storage,throughput,hyperband")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved throughput runs")
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
        result["throughput"] = throughput(args.quick, args.repeats)
    if "hyperband" in parts:
        result["hyperband"] = hyperband(args.quick)
    result["machine"]["load_avg_at_end"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    main()
