"""Training diagnostics benchmarks: the bug zoo, per-step overhead, diagnosis-driven pruning,
and our LR range test against Lightning's ``lr_find``.

* ``zoo``: every setup of ``diagnostics_zoo.SETUPS`` trains 200 steps with
  ``TrainingDiagnostics()`` (defaults: the first 5 steps, then every 20); per setup: detected
  (the expected code among the findings), the step of that finding, and the error-level
  findings on healthy setups (false alarms).
* ``overhead``: ``TimmClassifier("test_resnet")`` on the digits at 32 px; arms ``bare``,
  ``every20`` (``every_n_steps=20``) and ``every1`` (every step), interleaved over repeats in
  one process; the step time is the wall time between consecutive ``on_train_batch_start``
  calls, per fit its median, then the median of the per-repeat ratios to ``bare``.
* ``pruning``: the same seeded random sweep over a space with many broken configurations
  (LR 1e-5..10, init scale, activation) with median pruning, with and without
  ``diagnostics=True``; per seed: the sweep's wall time until it first reached its final best
  value, and that best value.
* ``lr``: ``lr_range_test`` vs Lightning's ``Tuner.lr_find`` on the same module and data:
  suggestions, time, and the validation loss after a short training with each suggestion.

Run: ``python benchmarks/bench_diagnostics.py zoo|overhead|pruning|lr [--seeds 6] ...``;
prints one JSON line per result.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from diagnostics_zoo import SETUPS, ZooData, ZooMLP

from lightning_tune import DigitsDataModule, TimmClassifier, TrainingDiagnostics, Tuner

QUIET = {
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


def zoo(args: argparse.Namespace) -> None:
    for name, code, build in SETUPS:
        if args.only and name not in args.only:
            continue
        module, data = build(0)
        diag = TrainingDiagnostics(verbose=False)
        trainer = pl.Trainer(**QUIET, max_steps=200, limit_val_batches=2, callbacks=[diag])
        start = time.perf_counter()
        crashed = None
        try:
            trainer.fit(module, data)
        except Exception as err:  # targets off by one: the loss crashes after the finding
            crashed = type(err).__name__
        hits = [f for f in diag.findings if f.code == code]
        errors = [f.code for f in diag.findings if f.severity == "error"]
        row = {
            "setup": name,
            "expected": code,
            "detected": bool(hits) if code else None,
            "detected_at_step": hits[0].step if hits else None,
            "false_alarms": errors if code is None else None,
            "codes": sorted({f.code for f in diag.findings}),
            "crashed": crashed,
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(row), flush=True)


class _StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.last: float | None = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        now = time.perf_counter()
        if self.last is not None and idx > 0:
            self.times.append(now - self.last)
        self.last = now


def _timed_fit(arm: str, steps: int) -> float:
    torch.manual_seed(0)
    module = TimmClassifier("test_resnet", num_classes=10)
    data = DigitsDataModule(image_size=32, batch_size=32)
    timer = _StepTimer()
    callbacks: list[pl.Callback] = [timer]
    if arm != "bare":
        every = 20 if arm == "every20" else 1
        callbacks.append(TrainingDiagnostics(every_n_steps=every, verbose=False))
    trainer = pl.Trainer(
        **QUIET, max_steps=steps, limit_val_batches=0, callbacks=callbacks, max_epochs=-1
    )
    trainer.fit(module, data)
    return statistics.median(timer.times)


def overhead(args: argparse.Namespace) -> None:
    arms = ("bare", "every20", "every1")
    per: dict[str, list[float]] = {a: [] for a in arms}
    for _ in range(args.repeats):
        for arm in arms:
            per[arm].append(_timed_fit(arm, args.steps))
    ratios = {
        arm: statistics.median(t / b for t, b in zip(per[arm], per["bare"])) for arm in arms[1:]
    }
    print(
        json.dumps(
            {
                "benchmark": "overhead",
                "model": "test_resnet, digits 32px, batch 32",
                "median_step_ms": {a: round(1e3 * statistics.median(v), 2) for a, v in per.items()},
                "ratio_to_bare": {a: round(r, 3) for a, r in ratios.items()},
                "repeats": args.repeats,
                "steps": args.steps,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


def _space(trial: Any) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 1e-5, 10.0, log=True),
        "init_std": trial.suggest_categorical("init_std", [0.05, 0.3, 1.0]),
        "activation": trial.suggest_categorical("activation", ["relu", "sigmoid", "tanh"]),
        "depth": trial.suggest_categorical("depth", [2, 6]),
    }


def _sweep(seed: int, diagnostics: bool, args: argparse.Namespace, out: str) -> dict[str, Any]:
    tuner = Tuner(
        ZooMLP,
        _space,
        datamodule=ZooData,
        output_dir=out,
        study_name=f"s{seed}_{int(diagnostics)}",
        trainer_kwargs={
            "accelerator": "cpu",
            "devices": 1,
            "limit_train_batches": args.batches,
            "limit_val_batches": 4,
            "num_sanity_val_steps": 0,
        },
        max_epochs=args.epochs,
        sampler="random",
        pruner="median",
        pruner_kwargs={"n_startup_trials": args.startup, "n_warmup_steps": args.warmup},
        storage="memory",
        seed=seed,
        quiet=True,
        keep_checkpoints=0,
        loggers=(),
        diagnostics=diagnostics,  # True: TrainingDiagnostics at its defaults
    )
    start = time.perf_counter()
    finished: list[tuple[float, float | None]] = []
    seconds: dict[int, tuple[float, float]] = {}  # trial number -> (end, duration)

    def record(study: Any, trial: Any) -> None:
        now = time.perf_counter() - start
        seconds[trial.number] = (now, now - (finished[-1][0] if finished else 0.0))
        finished.append((now, trial.value))

    tuner.open_storage()
    study = tuner.create_study()
    with tuner.quiet_libraries():
        study.optimize(
            tuner.objective, n_trials=args.trials, callbacks=[record], catch=(Exception,)
        )
    values = [v for _, v in finished if v is not None and math.isfinite(v)]
    best = min(values) if values else math.nan
    reached = next(t for t, v in finished if v is not None and v == best) if values else math.nan
    states = [t.state.name for t in study.trials]
    return {
        "best": best,
        "time_to_best_s": reached,
        "finished": finished,
        "total_s": finished[-1][0],
        "pruned": states.count("PRUNED"),
        "diagnosed": sum("diagnosis" in t.user_attrs for t in study.trials),
        "diagnosed_numbers": [t.number for t in study.trials if "diagnosis" in t.user_attrs],
        # trials that never validated below chance (ln 10 for the 10 digits): learned nothing
        "chance_numbers": [
            t.number
            for t in study.trials
            if not any(
                math.isfinite(v) and v < math.log(10) for v in t.intermediate_values.values()
            )
        ],
        "seconds": seconds,
    }


def _without(run: dict[str, Any], numbers: list[int], until: float) -> float:
    """``until`` minus the whole time of trials ``numbers`` of ``run`` that ended by then."""
    return until - sum(d for n, (end, d) in run["seconds"].items() if n in numbers and end <= until)


def pruning(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for seed in range(args.seeds):
            arms = [(False, "median"), (True, "median+diagnostics")]
            if seed % 2:  # alternate which arm runs first
                arms.reverse()
            runs = {name: _sweep(seed, diagnostics, args, out) for diagnostics, name in arms}
            median, diag = runs["median"], runs["median+diagnostics"]
            # Time until each arm first reaches the baseline's final best (the same best).
            target = median["best"] + 1e-12
            reach = {
                name: next(
                    (t for t, v in run.pop("finished") if v is not None and v <= target), None
                )
                for name, run in runs.items()
            }
            # Floors: what a perfect detector could give, one that skips every trial a finding
            # stopped (the same trial numbers: the seeded sampler draws the same configurations
            # in both arms) at no cost, nothing built or trained. `floor_same_dynamics`: this
            # run with diagnostics without those trials; `floor_free`: the median run without
            # them (no diagnostics cost on the healthy trials either).
            broken = diag["diagnosed_numbers"]
            floors: dict[str, float | None] = {"floor_same_dynamics": None, "floor_free": None}
            if reach["median+diagnostics"] is not None:
                floors["floor_same_dynamics"] = _without(diag, broken, reach["median+diagnostics"])
            floors["floor_free"] = _without(median, broken, reach["median"])
            # wider: every trial of the median run that never got below chance, skipped for free
            floors["floor_chance"] = _without(median, median["chance_numbers"], reach["median"])
            for run in runs.values():
                del run["seconds"]
            row = {
                "seed": seed,
                "median": median,
                "median+diagnostics": diag,
                "time_to_same_best_s": reach,
                "time_to_best_ratio": (
                    round(reach["median+diagnostics"] / reach["median"], 3)
                    if reach["median+diagnostics"] is not None
                    else None
                ),
                **{
                    f"{name}_ratio": None if floor is None else round(floor / reach["median"], 3)
                    for name, floor in floors.items()
                },
                "total_time_ratio": round(diag["total_s"] / median["total_s"], 3),
                "same_or_better_best": diag["best"] <= median["best"] + 1e-12,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    ratios = [r["time_to_best_ratio"] for r in rows if r["time_to_best_ratio"] is not None]
    print(
        json.dumps(
            {
                "benchmark": "pruning",
                "settings": {
                    k: getattr(args, k) for k in ("seeds", "trials", "epochs", "batches", "startup")
                }
                | {"warmup": args.warmup},
                "median_time_to_best_ratio": statistics.median(ratios) if ratios else None,
                "median_total_time_ratio": statistics.median(r["total_time_ratio"] for r in rows),
                **{
                    f"median_{name}_ratio": statistics.median(
                        r[f"{name}_ratio"] for r in rows if r[f"{name}_ratio"] is not None
                    )
                    for name in ("floor_same_dynamics", "floor_free", "floor_chance")
                },
                "never_worse": all(r["same_or_better_best"] for r in rows),
            }
        )
    )


def _val_loss_after(lr: float, epochs: int) -> float:
    torch.manual_seed(0)
    module = TimmClassifier("test_resnet", num_classes=10, lr=lr)
    trainer = pl.Trainer(**QUIET, max_epochs=epochs, limit_train_batches=20)
    trainer.fit(module, DigitsDataModule(image_size=16, batch_size=32))
    return float(trainer.callback_metrics["val_loss"])


def lr(args: argparse.Namespace) -> None:
    from pytorch_lightning.tuner import Tuner as LightningTuner

    from lightning_tune.diagnostics import lr_range_test

    torch.manual_seed(0)
    module = TimmClassifier("test_resnet", num_classes=10)
    data = DigitsDataModule(image_size=16, batch_size=32)
    start = time.perf_counter()
    ours = lr_range_test(module, data, num_steps=100, accelerator="cpu")
    ours_s = time.perf_counter() - start
    torch.manual_seed(0)
    theirs_module = TimmClassifier("test_resnet", num_classes=10)
    trainer = pl.Trainer(**QUIET, max_epochs=3)
    start = time.perf_counter()
    found = LightningTuner(trainer).lr_find(
        theirs_module,
        datamodule=DigitsDataModule(image_size=16, batch_size=32),
        min_lr=1e-7,
        max_lr=10.0,
        num_training=100,
        attr_name="hparams.lr",
        update_attr=False,
    )
    theirs_s = time.perf_counter() - start
    theirs_lr = found.suggestion()
    result = {
        "benchmark": "lr_range_vs_lr_find",
        "ours_lr": ours.suggestion,
        "ours_s": round(ours_s, 1),
        "ours_diverged": ours.diverged,
        "lightning_lr": theirs_lr,
        "lightning_s": round(theirs_s, 1),
        "val_loss_after_2_epochs": {
            "ours": _val_loss_after(ours.suggestion, 2) if ours.suggestion else None,
            "lightning": _val_loss_after(theirs_lr, 2) if theirs_lr else None,
            "default_1e-3": _val_loss_after(1e-3, 2),
        },
    }
    print(json.dumps(result))


def main() -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["zoo", "overhead", "pruning", "lr"])
    parser.add_argument("--only", nargs="*", default=None, help="zoo: these setups only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="pruning: training batches/epoch")
    parser.add_argument(
        "--startup", type=int, default=5, help="pruning: MedianPruner n_startup_trials (Optuna's 5)"
    )
    parser.add_argument(
        "--warmup", type=int, default=0, help="pruning: MedianPruner n_warmup_steps (Optuna's 0)"
    )
    args = parser.parse_args()
    {"zoo": zoo, "overhead": overhead, "pruning": pruning, "lr": lr}[args.what](args)


if __name__ == "__main__":
    main()
