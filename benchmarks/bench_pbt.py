"""PBT vs Hyperband vs random search vs Ray Tune's PopulationBasedTraining, at equal epochs.

Task: ``TimmClassifier("test_resnet")`` (AdamW) on the digits at 8 px, half of the training
split, ``val_loss`` minimized; search space ``lr`` in [1e-4, 1e-1] and ``weight_decay`` in
[1e-5, 1e-1], both log-uniform. Every arm trains the same number of epochs in total,
``population * max_epochs`` (default 4 x 6 = 24):

* ``pbt``: ``Tuner(strategy="pbt")``, population 4, interval 2 epochs, quantile 0.25, async
  (the default), both parameters mutable, in-memory study, one process;
* ``hyperband``: ``Tuner`` with TPE + Hyperband (the tuner's defaults), trials until the sweep
  has trained the budget's epochs;
* ``random``: random search without pruning, ``budget / max_epochs`` full trials;
* ``ray``: Ray Tune's ``PopulationBasedTraining`` with the same population, interval,
  quantile, resample probability, factors and mutations, one trial at a time (``num_cpus=1``,
  as the other arms use one process), the same Lightning module and data; after a restore the
  explored hyperparameters reach the optimizer through the same ``HyperparameterUpdate``.

Reported per (arm, seed): the best *final* val_loss / val_acc (the best run that trained all
``max_epochs`` epochs, measured at its last epoch), epochs trained and wall time. The summary
gives mean ± sd over seeds and wall-time ratios to Ray Tune's PBT from the same run. Arms are
interleaved per seed. One JSON line per run, then ``{"summary": ...}``.

Run (niced; Ray only in the ``bench`` extra): ``pip install -e ".[bench]"`` then
``nice python benchmarks/bench_pbt.py --seeds 0 1 2 3 [--arms pbt hyperband random ray]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from typing import Any

import pytorch_lightning as pl
import torch

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.tuner import Float, Tuner
from lightning_tune.tuner.pbt import HyperparameterUpdate

ARMS = ("pbt", "hyperband", "random", "ray")
SPACE = {"lr": Float(1e-4, 1e-1, log=True), "weight_decay": Float(1e-5, 1e-1, log=True)}
DATA = {"image_size": 8, "train_fraction": 0.5, "batch_size": 64}
TRAINER = {"accelerator": "cpu", "devices": 1, "num_sanity_val_steps": 0}
RECORDS: list[dict[str, Any]] = []  # every validation of every arm: params, epoch, metrics


class Record(pl.Callback):
    """Keeps each validation's val_loss / val_acc with the run's params and epoch."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = {k: params[k] for k in SPACE}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        RECORDS.append(
            {
                "params": self.params,
                "epoch": trainer.current_epoch + 1,
                "val_loss": float(metrics["val_loss"]),
                "val_acc": float(metrics["val_acc"]),
            }
        )


def _tuner(name: str, seed: int, args: argparse.Namespace, out: str, **kwargs: Any) -> Tuner:
    return Tuner(
        TimmClassifier,
        SPACE,
        module_kwargs={"model_name": "test_resnet"},
        datamodule=DigitsDataModule,
        datamodule_kwargs=DATA,
        callbacks=[lambda params: Record(params)],
        max_epochs=args.max_epochs,
        storage="memory",
        study_name=f"{name}-{seed}",
        output_dir=out,
        seed=seed,
        loggers=(),
        keep_checkpoints=0,
        quiet=True,
        trainer_kwargs=TRAINER,
        **kwargs,
    )


def run_pbt(seed: int, args: argparse.Namespace, out: str) -> None:
    pbt = {"population": args.population, "interval": args.interval}
    _tuner("pbt", seed, args, out, strategy="pbt", pbt=pbt).run()


def run_sweep(seed: int, args: argparse.Namespace, out: str, pruner: str) -> None:
    sampler = "tpe" if pruner == "hyperband" else "random"
    tuner = _tuner(pruner, seed, args, out, pruner=pruner, sampler=sampler, objective="last")
    budget = args.population * args.max_epochs
    start = len(RECORDS)
    with tuner.quiet_libraries():
        while len(RECORDS) - start < budget:  # one record per epoch trained
            tuner.optimize(n_trials=1)


def run_ray(seed: int, args: argparse.Namespace, out: str) -> None:
    """Ray Tune's PBT; its trials run in Ray worker processes, so the records come from the
    results Ray keeps (one row per reported epoch)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    def trainable(config: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        checkpoint = tune.get_checkpoint()
        path = None
        if checkpoint is not None:
            path = os.path.join(checkpoint.to_directory(), "state.ckpt")
        pl.seed_everything(seed, workers=True, verbose=False)
        datamodule = DigitsDataModule(**DATA)
        module = TimmClassifier("test_resnet", lr=config["lr"], weight_decay=config["weight_decay"])

        class Report(pl.Callback):
            def on_train_epoch_end(self, trainer: pl.Trainer, _: Any) -> None:
                with tempfile.TemporaryDirectory() as directory:
                    trainer.save_checkpoint(os.path.join(directory, "state.ckpt"))
                    metrics = trainer.callback_metrics
                    tune.report(
                        {k: float(metrics[k]) for k in ("val_loss", "val_acc")},
                        checkpoint=tune.Checkpoint.from_directory(directory),
                    )

        update = HyperparameterUpdate(config, ["lr", "weight_decay"], resumed=path is not None)
        callbacks = [update, Report()]
        trainer = pl.Trainer(
            **TRAINER,
            max_epochs=args.max_epochs,
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=path, weights_only=True)

    space = {"lr": tune.loguniform(1e-4, 1e-1), "weight_decay": tune.loguniform(1e-5, 1e-1)}
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=args.interval,
        hyperparam_mutations=space,
        quantile_fraction=0.25,
        resample_probability=0.25,
        perturbation_factors=(1.2, 0.8),
    )
    # A shared, loaded machine: Ray's memory monitor would kill trials that are fine.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="val_loss",
                mode="min",
                scheduler=scheduler,
                num_samples=args.population,
                search_alg=tune.search.BasicVariantGenerator(random_state=seed),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"ray-{seed}",
                storage_path=os.path.join(out, "ray"),
                stop={"training_iteration": args.max_epochs},
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
        grid = tuner.fit()
        for result in grid:
            frame = result.metrics_dataframe
            for _, row in frame.iterrows():
                params = {k: float(result.config[k]) for k in SPACE}
                RECORDS.append(
                    {
                        "params": params,
                        "epoch": int(row["training_iteration"]),
                        "val_loss": float(row["val_loss"]),
                        "val_acc": float(row["val_acc"]),
                    }
                )
    finally:
        ray.shutdown()


def _run(arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    start_records = len(RECORDS)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        if arm == "pbt":
            run_pbt(seed, args, out)
        elif arm == "ray":
            run_ray(seed, args, out)
        else:
            run_sweep(seed, args, out, pruner="hyperband" if arm == "hyperband" else "none")
        seconds = time.perf_counter() - start
    records = RECORDS[start_records:]
    final = [r for r in records if r["epoch"] == args.max_epochs]
    best = min(final, key=lambda r: r["val_loss"]) if final else None
    return {
        "arm": arm,
        "seed": seed,
        "best_final_val_loss": best and best["val_loss"],
        "best_final_val_acc": best and best["val_acc"],
        "best_params": best and best["params"],
        "full_runs": len(final),
        "epochs": len(records),
        "seconds": seconds,
    }


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def summarize(runs: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Mean ± sd per arm, and per-seed wall-time ratios to Ray Tune's PBT (same run)."""
    out: dict[str, Any] = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm and r["best_final_val_loss"] is not None]
        out[arm] = {
            key: _mean_sd([r[key] for r in mine])
            for key in ("best_final_val_loss", "best_final_val_acc", "seconds", "epochs")
        }
        if "ray" in arms and arm != "ray":
            ray_seconds = {r["seed"]: r["seconds"] for r in runs if r["arm"] == "ray"}
            ratios = [
                r["seconds"] / ray_seconds[r["seed"]] for r in mine if r["seed"] in ray_seconds
            ]
            out[arm]["wall_time_ratio_to_ray"] = _mean_sd(ratios) if ratios else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--jsonl", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            try:
                run = _run(arm, seed, args)
            except Exception as err:  # one broken arm must not lose the others' numbers
                _emit({"error": {"arm": arm, "seed": seed, "error": repr(err)[:2000]}}, args.jsonl)
                continue
            runs.append(run)
            _emit({"run": run}, args.jsonl)
    _emit({"summary": summarize(runs, args.arms), "args": vars(args)}, args.jsonl)


def _emit(line: dict[str, Any], path: str | None) -> None:
    text = json.dumps(line)
    print(text, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
