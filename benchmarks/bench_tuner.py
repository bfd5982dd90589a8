"""The point of pruning: the same sweep with no pruning, median and Hyperband (issue 6).

Arms (the same sweep each time: digits at 16 px, ``test_resnet``, a space over lr / weight
decay / batch size / label smoothing, ``--n-trials`` trials of at most ``--max-epochs`` epochs):

* ``none``: ``lightning_tune.Tuner`` without pruning;
* ``median`` / ``hyperband``: ``Tuner`` with Optuna's ``MedianPruner`` / ``HyperbandPruner``;
* ``bare``: no tuner and no Optuna at all: the ``none`` arm's trials (same parameters, same
  seeds) as a plain loop of ``Trainer.fit`` calls, the floor any Lightning-based tuner pays;
  ``none`` minus ``bare`` is lightning_tune's own cost per trial;
* ``oi-median`` / ``oi-hyperband``: the same pruners through optuna-integration's
  ``PyTorchLightningPruningCallback`` and a hand-written objective (that callback needs the
  unified ``lightning`` package, so this arm trains with ``lightning.pytorch``);
* ``tpe`` / ``gp`` / ``cmaes`` / ``grid`` (which search?): no pruning, the same trial budget,
  ``sampler="tpe"``, ``"gp"`` or ``"cmaes"`` (seeded; CMA-ES samples the batch size, a
  categorical, with its independent sampler) or ``sampler="grid"``: a log grid of 4 learning rates x 3 weight decays over the same
  ranges (12 configurations, the default budget), batch size 64 and label smoothing 0.1 fixed
  (their middle values), shuffled by the seed. ``grid-jitter`` is that grid with
  ``jitter=0.5`` (each point moved by up to a quarter of its log spacing, seeded).

Every other arm uses ``RandomSampler(seed)`` (``none`` is random search) and seeds trial k with
``seed + k``, so trial k has the
same hyperparameters, the same initial weights and the same batches in every arm; the trial
value is the last validation loss (accuracy saturates on the digits). Arms are interleaved per
sampler seed. Per run we record the best value, the epochs trained, the wall time of the sweep
and the time outside ``training_step``/``validation_step`` (measured between the batch-start
and batch-end hooks, which enclose forward, backward and the optimizer step), and we check
whether the best configuration of the ``none`` arm was pruned.

One JSON line per (arm, seed) and a final ``{"summary": ...}`` line; ``--plot`` draws a PNG.

Run: ``python benchmarks/bench_tuner.py [--seeds 0 1 2] [--n-trials 12] [--max-epochs 6]
[--plot docs/benchmarks/tuner.png] [--jsonl results.jsonl]``
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
import warnings
from typing import Any

import optuna
import pytorch_lightning as pl
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_tune.data import DigitsDataModule
from lightning_tune.tuner import Fixed, Float, PowerOfTwo, Tuner

ARMS = (
    "none",
    "bare",
    "median",
    "hyperband",
    "oi-median",
    "oi-hyperband",
    "tpe",
    "gp",
    "cmaes",
    "grid",
    "grid-jitter",
    "preflight",
    "sqlite",
    "sqlite-heartbeat",
    "journal-lease",
)
#: Arms that are the ``none`` sweep with one setting changed (what it costs):
#: the pre-flight (one training and one validation batch of trial 0 before the sweep), and a
#: file storage without and with crash recovery (Optuna's heartbeat every 10 s on SQLite, the
#: lease on a journal file).
VARIANTS: dict[str, dict[str, Any]] = {
    "preflight": {"preflight": True},
    "sqlite": {"storage": "{dir}/study.db", "heartbeat_interval": None},
    "sqlite-heartbeat": {"storage": "{dir}/study.db", "heartbeat_interval": 10},
    "journal-lease": {"storage": "{dir}/study.log", "heartbeat_interval": 10},
}
#: Seconds the last ``run_ours`` spent in ``Tuner.check_setup`` (the pre-flight, if any).
LAST_SETUP = {"s": 0.0}
SPACE = {
    "lr": Float(1e-4, 1e-1, log=True),
    "weight_decay": Float(1e-5, 1e-1, log=True),
    "batch_size": PowerOfTwo(32, 128),
    "label_smoothing": Float(0.0, 0.2),
}
#: The grid arms' space: the same ranges, a log grid over the two that matter most.
GRID_SPACE = {
    "lr": Float(1e-4, 1e-1, log=True, grid_points=4),
    "weight_decay": Float(1e-5, 1e-1, log=True, grid_points=3),
    "batch_size": Fixed(64),
    "label_smoothing": Fixed(0.1),
}


def search_settings(arm: str, seed: int) -> dict[str, Any]:
    """The ``Tuner`` arguments of an arm's search: space, sampler and its options."""
    if arm in ("tpe", "gp", "cmaes"):  # seeded with the tuner's seed
        return {"search_space": SPACE, "sampler": arm}
    if arm.startswith("grid"):
        jitter = 0.5 if arm == "grid-jitter" else 0.0
        return {"search_space": GRID_SPACE, "sampler": "grid", "sampler_kwargs": {"jitter": jitter}}
    return {"search_space": SPACE, "sampler": optuna.samplers.RandomSampler(seed=seed)}


class FinalValidationGuard(optuna.pruners.BasePruner):
    """The baseline's pruner with lightning_tune's rule: never prune at the last validation.

    lightning_tune lets a trial that used its whole budget complete (pruning it would save
    nothing and drop a fully trained configuration from the ranking); optuna-integration's
    callback asks the pruner at every validation. With this guard the baseline runs the same
    pruning rule, so both arms can be compared decision by decision.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, last_step: int) -> None:
        self.pruner, self.last_step = pruner, last_step

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is not None and step >= self.last_step:
            return False
        return self.pruner.prune(study, trial)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name.startswith("oi-"):
        return FinalValidationGuard(make_pruner(name[3:], max_epochs), max_epochs - 1)
    if name.endswith("median"):
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name.endswith("hyperband"):
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def classifier_class(base: type) -> type:
    """The same small classifier over ``pytorch_lightning`` or ``lightning.pytorch``."""

    class Classifier(base):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            data: DigitsDataModule,
            lr: float,
            weight_decay: float,
            batch_size: int,
            label_smoothing: float,
        ) -> None:
            super().__init__()
            self.model = timm.create_model("test_resnet", num_classes=10, pretrained=False)
            self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
            self.eval_criterion = nn.CrossEntropyLoss()
            self.data = data
            self.lr, self.weight_decay, self.batch_size = lr, weight_decay, batch_size

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = self.criterion(self.model(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", self.eval_criterion(self.model(x), y), on_epoch=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def train_dataloader(self) -> DataLoader:
            return self.data.dataloader("train", batch_size=self.batch_size)

        def val_dataloader(self) -> DataLoader:
            return self.data.dataloader("val", batch_size=256)

    return Classifier


def step_timer_class(base: type) -> type:
    """A callback that sums the time between batch-start and batch-end hooks."""

    class StepTimer(base):  # type: ignore[misc, valid-type]
        total = 0.0
        per_fit: list[float] = []  # shared on purpose: one entry per fit

        def on_fit_start(self, *args: Any) -> None:
            type(self).per_fit.append(0.0)

        def _start(self, *args: Any) -> None:
            self.t0 = time.perf_counter()

        def _end(self, *args: Any) -> None:
            elapsed = time.perf_counter() - self.t0
            type(self).total += elapsed
            type(self).per_fit[-1] += elapsed

        on_train_batch_start = _start
        on_validation_batch_start = _start
        on_train_batch_end = _end
        on_validation_batch_end = _end

    return StepTimer


def trainer_kwargs() -> dict[str, Any]:
    return {
        "accelerator": "cpu",
        "devices": 1,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "deterministic": True,
        "log_every_n_steps": 5,
    }


def run_ours(
    arm: str,
    seed: int,
    data: DigitsDataModule,
    n_trials: int,
    max_epochs: int,
    workdir: str,
    keep_checkpoints: int = 0,
) -> tuple[optuna.Study, list[float]]:
    classifier, timer = classifier_class(pl.LightningModule), step_timer_class(pl.Callback)
    timer.total, timer.per_fit = 0.0, []
    variant = {
        k: v.format(dir=f"{workdir}/{arm}-{seed}") if isinstance(v, str) else v
        for k, v in VARIANTS.get(arm, {}).items()
    }
    tuner = Tuner(
        lambda p: classifier(data, **p),
        pruner=make_pruner(arm, max_epochs),
        seed=seed,
        **search_settings(arm, seed),
        **{"storage": "memory", **variant},
        study_name=f"sweep-{seed}",
        output_dir=f"{workdir}/{arm}",
        max_epochs=max_epochs,
        objective="last",
        callbacks=[timer()],
        trainer_kwargs=trainer_kwargs(),
        quiet=True,
        keep_checkpoints=keep_checkpoints,
    )
    start = time.perf_counter()
    tuner.check_setup()  # what optimize() does first, timed on its own
    LAST_SETUP["s"] = time.perf_counter() - start
    timer.total, timer.per_fit = 0.0, []  # the pre-flight's batches are not a trial
    study = tuner.optimize(n_trials=n_trials)
    return study, timer.per_fit


def run_optuna_integration(
    arm: str,
    seed: int,
    data: DigitsDataModule,
    n_trials: int,
    max_epochs: int,
    workdir: str,
    keep_checkpoints: int = 0,
) -> tuple[optuna.Study, list[float]]:
    import lightning.pytorch as lpl
    from optuna_integration import PyTorchLightningPruningCallback

    quiet_logs()  # `lightning` resets its log level when first imported

    classifier, timer = classifier_class(lpl.LightningModule), step_timer_class(lpl.Callback)
    timer.total, timer.per_fit = 0.0, []

    def objective(trial: optuna.Trial) -> float:
        params = {name: spec.suggest(trial, name) for name, spec in SPACE.items()}
        lpl.seed_everything(seed + trial.number, workers=True, verbose=False)
        model = classifier(data, **params)
        trainer = lpl.Trainer(
            max_epochs=max_epochs,
            enable_checkpointing=False,
            logger=lpl.loggers.CSVLogger(
                workdir, name=f"{arm}-{seed}", version=f"trial_{trial.number}"
            ),
            callbacks=[timer(), PyTorchLightningPruningCallback(trial, monitor="val_loss")],
            **trainer_kwargs(),
        )
        trainer.fit(model)
        return float(trainer.callback_metrics["val_loss"])

    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=make_pruner(arm, max_epochs),
        study_name=f"sweep-{seed}",
    )
    study.optimize(objective, n_trials=n_trials)
    return study, timer.per_fit


def run_bare(
    seed: int, data: DigitsDataModule, none_study: optuna.Study, max_epochs: int, workdir: str
) -> dict[str, Any]:
    """The ``none`` arm's trials as plain ``Trainer.fit`` calls, timed like the other arms."""
    classifier, timer = classifier_class(pl.LightningModule), step_timer_class(pl.Callback)
    timer.total, timer.per_fit = 0.0, []
    durations, values = [], []
    start = time.perf_counter()
    for trial in none_study.trials:
        t0 = time.perf_counter()
        pl.seed_everything(seed + trial.number, workers=True, verbose=False)
        model = classifier(data, **trial.user_attrs["params"])
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            enable_checkpointing=False,
            logger=pl.loggers.CSVLogger(
                workdir, name=f"bare-{seed}", version=f"trial_{trial.number}"
            ),
            callbacks=[timer()],
            **trainer_kwargs(),
        )
        trainer.fit(model)
        values.append(float(trainer.callback_metrics["val_loss"]))
        durations.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    trial_time, in_steps = sum(durations), sum(timer.per_fit)
    n = len(durations)
    return {
        "arm": "bare",
        "seed": seed,
        "n_trials": n,
        "best_val_loss": min(values),
        "same_values_as_none": values == [t.value for t in none_study.trials],
        "epochs": n * max_epochs,
        "epochs_no_pruning": n * max_epochs,
        "pruned": 0,
        "pruned_trials": [],
        "wall_s": round(wall, 3),
        "trial_s": round(trial_time, 3),
        "in_step_s": round(in_steps, 3),
        "outside_step_s_per_trial": round((trial_time - in_steps) / n, 4),
        "outside_step_fraction": round((trial_time - in_steps) / trial_time, 4),
        "median_outside_step_s_per_trial": round(
            statistics.median(d - s for d, s in zip(durations, timer.per_fit)), 4
        ),
        "median_outside_step_fraction": round(
            statistics.median((d - s) / d for d, s in zip(durations, timer.per_fit)), 4
        ),
    }


def summarize_run(
    arm: str, seed: int, study: optuna.Study, per_fit: list[float], wall: float, max_epochs: int
) -> dict[str, Any]:
    trials = study.trials
    assert len(per_fit) == len(trials)
    in_steps = sum(per_fit)
    outside = [t.duration.total_seconds() - s for t, s in zip(trials, per_fit)]
    fractions = [o / t.duration.total_seconds() for o, t in zip(outside, trials)]
    # epochs trained = validations reported (one per epoch); a pruned trial stops after its last
    epochs = sum(len(t.intermediate_values) for t in trials)
    durations = [t.duration.total_seconds() for t in trials if t.duration is not None]
    trial_time = sum(durations)
    states = [t.state.name for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "arm": arm,
        "seed": seed,
        "n_trials": len(trials),
        "best_val_loss": min(t.value for t in complete) if complete else None,
        "best_trial": min(complete, key=lambda t: t.value).number if complete else None,
        "epochs": epochs,
        "epochs_no_pruning": len(trials) * max_epochs,
        "pruned": states.count("PRUNED"),
        "pruned_trials": [t.number for t in trials if t.state.name == "PRUNED"],
        "wall_s": round(wall, 3),
        "trial_s": round(trial_time, 3),
        "in_step_s": round(in_steps, 3),
        "outside_step_s_per_trial": round((trial_time - in_steps) / len(trials), 4),
        "outside_step_fraction": round((trial_time - in_steps) / trial_time, 4),
        # per-trial medians: robust to load spikes on a shared machine
        "median_outside_step_s_per_trial": round(statistics.median(outside), 4),
        "median_outside_step_fraction": round(statistics.median(fractions), 4),
    }


def quiet_logs() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument(
        "--keep-checkpoints",
        type=int,
        default=0,
        help="checkpoints kept by lightning_tune's arms (0, like the baseline, "
        "which runs with enable_checkpointing=False)",
    )
    parser.add_argument("--plot", default=None, help="write a PNG summary plot here")
    parser.add_argument("--jsonl", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_logs()
    data = DigitsDataModule(image_size=16, train_fraction=args.train_fraction, seed=0)
    data.setup()

    out = open(args.jsonl, "a") if args.jsonl else None  # noqa: SIM115
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        # warm up both frameworks (imports, first allocations) outside the measurements
        run_ours("none", 99, data, 1, 1, workdir)
        if any(a.startswith("oi-") for a in args.arms):
            run_optuna_integration("oi-none", 99, data, 1, 1, workdir)
        for seed in args.seeds:
            none_study = None
            for arm in args.arms:
                if arm == "bare":
                    if none_study is None:
                        parser.error("--arms: 'bare' replays the 'none' arm: list 'none' first")
                    run = run_bare(seed, data, none_study, args.max_epochs, workdir)
                else:
                    runner = run_optuna_integration if arm.startswith("oi-") else run_ours
                    start = time.perf_counter()
                    study, per_fit = runner(
                        arm,
                        seed,
                        data,
                        args.n_trials,
                        args.max_epochs,
                        workdir,
                        args.keep_checkpoints,
                    )
                    wall = time.perf_counter() - start
                    run = summarize_run(arm, seed, study, per_fit, wall, args.max_epochs)
                    if not arm.startswith("oi-"):
                        run["setup_s"] = round(LAST_SETUP["s"], 3)
                        run["setup_fraction"] = round(LAST_SETUP["s"] / wall, 4)
                    if arm == "none":
                        none_study = study
                runs.append(run)
                line = json.dumps({"run": run})
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
                    out.flush()

    best_none = {r["seed"]: r["best_trial"] for r in runs if r["arm"] == "none"}
    summary: dict[str, Any] = {
        "task": {
            "data": "digits 16px",
            "train_fraction": args.train_fraction,
            "model": "test_resnet",
            "n_trials": args.n_trials,
            "max_epochs": args.max_epochs,
            "seeds": args.seeds,
            "sampler": "random",
            "metric": "val_loss (last)",
            "torch_threads": 1,
            "keep_checkpoints": args.keep_checkpoints,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "optuna": optuna.__version__,
            "pytorch_lightning": pl.__version__,
        },
        "arms": {},
    }
    for arm in args.arms:
        rs = [r for r in runs if r["arm"] == arm]
        summary["arms"][arm] = {
            "best_val_loss": mean_std([r["best_val_loss"] for r in rs]),
            "epochs": mean_std([r["epochs"] for r in rs]),
            "epochs_ratio_vs_no_pruning": mean_std(
                [r["epochs"] / r["epochs_no_pruning"] for r in rs]
            ),
            "wall_s": mean_std([r["wall_s"] for r in rs]),
            "outside_step_s_per_trial": mean_std([r["outside_step_s_per_trial"] for r in rs]),
            "outside_step_fraction": mean_std([r["outside_step_fraction"] for r in rs]),
            "median_outside_step_s_per_trial": mean_std(
                [r["median_outside_step_s_per_trial"] for r in rs]
            ),
            "median_outside_step_fraction": mean_std(
                [r["median_outside_step_fraction"] for r in rs]
            ),
            "best_of_none_pruned": sum(best_none.get(r["seed"]) in r["pruned_trials"] for r in rs),
        }
        if all("setup_s" in r for r in rs):
            summary["arms"][arm]["setup_s"] = mean_std([r["setup_s"] for r in rs])
            summary["arms"][arm]["setup_fraction"] = mean_std([r["setup_fraction"] for r in rs])
    by = {(r["arm"], r["seed"]): r for r in runs}
    own = [
        (by["none", s]["trial_s"] - by["bare", s]["trial_s"]) / by["none", s]["n_trials"]
        for s in args.seeds
        if ("none", s) in by and ("bare", s) in by
    ]
    if own:
        # lightning_tune's own cost: the same trials with the Tuner minus without it
        summary["tuner_own_s_per_trial"] = mean_std(own)
        summary["tuner_own_fraction_of_trial"] = mean_std(
            [
                (by["none", s]["trial_s"] - by["bare", s]["trial_s"]) / by["none", s]["trial_s"]
                for s in args.seeds
                if ("none", s) in by and ("bare", s) in by
            ]
        )
    line = json.dumps({"summary": summary})
    print(line)
    if out:
        out.write(line + "\n")
        out.close()
    if args.plot:
        plot(summary, args.plot)


def plot(summary: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary["arms"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title in zip(
        axes,
        ("epochs", "wall_s", "best_val_loss"),
        ("epochs trained (sweep)", "wall time of the sweep (s)", "best val_loss"),
    ):
        means = [summary["arms"][a][key]["mean"] for a in arms]
        stds = [summary["arms"][a][key]["std"] for a in arms]
        colors = [
            "0.6"
            if a == "none"
            else "0.8"
            if a == "bare"
            else "tab:blue"
            if not a.startswith("oi-")
            else "tab:orange"
            for a in arms
        ]
        ax.bar(arms, means, yerr=stds, color=colors, capsize=4)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    task = summary["task"]
    fig.suptitle(
        f"{task['n_trials']} trials x {task['max_epochs']} epochs, seeds "
        f"{task['seeds']} (blue: lightning_tune, orange: optuna-integration)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
