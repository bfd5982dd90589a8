"""The same pruned sweep through both Lightning packages and through optuna-integration.

Arms (the sweep of ``bench_tuner.py``: digits at 16 px, ``test_resnet``, lr / weight decay /
batch size / label smoothing, ``RandomSampler(seed)``, ``MedianPruner``, trial k seeded with
``seed + k``, the last validation loss as the value):

* ``ours-pl``: ``lightning_tune.Tuner`` with a ``pytorch_lightning`` module (so a
  ``pytorch_lightning.Trainer`` runs each trial);
* ``ours-lightning``: the same with a ``lightning.pytorch`` module;
* ``oi-lightning``: optuna-integration's ``PyTorchLightningPruningCallback`` (it exists for
  ``lightning.pytorch`` only) with a hand-written objective;
* ``oi-again`` (with ``--aa``): the same baseline once more in the same pair, so that
  ``oi-again/oi-lightning`` shows the ratio that identical code gets by chance (the noise floor
  a ratio of ours has to be read against).

All arms log to CSV and keep no checkpoint. Arms are interleaved per seed and repeated
(``--repeats``); we check that the three arms prune the same trials with the same values and
report the wall-time ratios ``ours-*/oi-lightning`` measured in the same run.

Run: ``python benchmarks/bench_namespaces.py [--seeds 0 1] [--repeats 2] [--n-trials 10]
[--max-epochs 4] [--jsonl results.jsonl]``
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

import lightning.pytorch as lpl
import optuna
import pytorch_lightning as pl
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_tuner import (
    SPACE,
    classifier_class,
    make_pruner,
    quiet_logs,
    run_optuna_integration,
    step_timer_class,
    trainer_kwargs,
)

from lightning_tune.data import DigitsDataModule
from lightning_tune.tuner import Tuner

ARMS = {"ours-pl": pl, "ours-lightning": lpl, "oi-lightning": None, "oi-again": None}


def run_ours(ns: Any, seed: int, data: DigitsDataModule, args: argparse.Namespace, workdir: str):
    classifier, timer = classifier_class(ns.LightningModule), step_timer_class(ns.Callback)
    timer.total, timer.per_fit = 0.0, []
    tuner = Tuner(
        lambda p: classifier(data, **p),
        SPACE,
        pruner=make_pruner("median", args.max_epochs),
        sampler=optuna.samplers.RandomSampler(seed=seed),
        seed=seed,
        storage="memory",
        study_name=f"sweep-{seed}",
        output_dir=f"{workdir}/{ns.__name__}",
        max_epochs=args.max_epochs,
        objective="last",
        trainer_kwargs=trainer_kwargs(),
        callbacks=[timer()],
        quiet=True,
        keep_checkpoints=0,
    )
    study = tuner.optimize(n_trials=args.n_trials)
    packages = {t.user_attrs.get("lightning") for t in study.trials}
    assert packages == {ns.__name__}, packages
    return study, timer.per_fit


def run_arm(arm: str, seed: int, data: DigitsDataModule, args: argparse.Namespace, workdir: str):
    start = time.perf_counter()
    if arm.startswith("oi-"):
        study, per_fit = run_optuna_integration(
            "oi-median", seed, data, args.n_trials, args.max_epochs, workdir
        )
    else:
        study, per_fit = run_ours(ARMS[arm], seed, data, args, workdir)
    wall = time.perf_counter() - start
    in_steps = sum(per_fit)
    return {
        "arm": arm,
        "seed": seed,
        "wall_s": round(wall, 3),
        # forward/backward/optimizer steps (identical work in every arm) vs everything else:
        # the framework's own cost is the wall time outside the steps
        "in_step_s": round(in_steps, 3),
        "outside_step_s": round(wall - in_steps, 3),
        "pruned": [t.number for t in study.trials if t.state.name == "PRUNED"],
        "values": [round(t.value, 6) if t.value is not None else None for t in study.trials],
        "reported": [
            [round(v, 6) for _, v in sorted(t.intermediate_values.items())] for t in study.trials
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=4)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--jsonl", default=None)
    parser.add_argument("--aa", action="store_true", help="also run the baseline twice per pair")
    args = parser.parse_args()
    arms = [a for a in ARMS if args.aa or a != "oi-again"]

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_logs()
    data = DigitsDataModule(image_size=16, train_fraction=args.train_fraction, seed=0)
    data.setup()
    out = open(args.jsonl, "a") if args.jsonl else None  # noqa: SIM115
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        warm = argparse.Namespace(**{**vars(args), "n_trials": 1, "max_epochs": 1})
        for arm in arms:  # imports and first allocations outside the measurements
            run_arm(arm, 99, data, warm, workdir)
        for repeat in range(args.repeats):
            for seed in args.seeds:
                order = arms if repeat % 2 == 0 else list(reversed(arms))
                for arm in order:
                    run = {**run_arm(arm, seed, data, args, workdir), "repeat": repeat}
                    runs.append(run)
                    line = json.dumps({"run": run})
                    print(line, flush=True)
                    if out:
                        out.write(line + "\n")

    by_seed = {}
    for run in runs:
        key = (run["arm"], run["seed"])
        by_seed.setdefault(key, run)  # decisions are deterministic: the first run stands
        same = by_seed[key]
        assert (same["pruned"], same["values"]) == (run["pruned"], run["values"]), (key, run)
    identical = all(
        by_seed[arm, s]["pruned"] == by_seed["oi-lightning", s]["pruned"]
        and by_seed[arm, s]["values"] == by_seed["oi-lightning", s]["values"]
        for arm in arms
        for s in args.seeds
    )
    wall = {arm: [r["wall_s"] for r in runs if r["arm"] == arm] for arm in arms}

    def paired(key: str) -> dict[str, list[float]]:
        return {
            arm: [
                r[key] / o[key]
                for r in runs
                if r["arm"] == arm
                for o in runs
                if o["arm"] == "oi-lightning"
                and (o["seed"], o["repeat"]) == (r["seed"], r["repeat"])
            ]
            for arm in arms
            if arm != "oi-lightning"
        }

    ratios, outside_ratios = paired("wall_s"), paired("outside_step_s")
    outside = {arm: [r["outside_step_s"] for r in runs if r["arm"] == arm] for arm in arms}
    in_step = {arm: [r["in_step_s"] for r in runs if r["arm"] == arm] for arm in arms}
    summary = {
        "task": {
            "n_trials": args.n_trials,
            "max_epochs": args.max_epochs,
            "seeds": args.seeds,
            "repeats": args.repeats,
            "pruner": "median(n_startup_trials=3, n_warmup_steps=1)",
            "sampler": "random",
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "lightning": lpl.__version__,
            "optuna": optuna.__version__,
        },
        "identical_pruned_sets_and_values": identical,
        "pruned": {f"seed {s}": by_seed["oi-lightning", s]["pruned"] for s in args.seeds},
        "wall_s_median": {arm: round(statistics.median(v), 2) for arm, v in wall.items()},
        "wall_ratio_vs_oi_median": {
            arm: round(statistics.median(v), 3) for arm, v in ratios.items()
        },
        "wall_ratio_vs_oi_all": {arm: [round(x, 3) for x in v] for arm, v in ratios.items()},
        "wall_ratio_vs_oi_mean": {arm: round(statistics.fmean(v), 3) for arm, v in ratios.items()},
        "in_step_s_median": {arm: round(statistics.median(v), 2) for arm, v in in_step.items()},
        "outside_step_s_median": {
            arm: round(statistics.median(v), 3) for arm, v in outside.items()
        },
        "outside_step_ratio_vs_oi_median": {
            arm: round(statistics.median(v), 3) for arm, v in outside_ratios.items()
        },
    }
    line = json.dumps({"summary": summary})
    print(line)
    if out:
        out.write(line + "\n")
        out.close()


if __name__ == "__main__":
    main()
