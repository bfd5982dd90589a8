"""``lightning-tune demo``: train a tiny timm model on the bundled digits, offline, on CPU."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

__all__ = ["add_subcommand", "run_demo"]


def run_demo(
    model_name: str = "test_resnet",
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 3e-3,
    image_size: int = 32,
    train_fraction: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    output_dir: str = "lightning_tune_runs/demo",
    limit_train_batches: int | float = 1.0,
) -> dict[str, Any]:
    """Train ``model_name`` on the digits and return the final validation/test metrics.

    Uses the package's callbacks where they are available (warmup + cosine schedule, gradient
    clipping, early stopping, label smoothing).

    Example (about 15 s on a laptop CPU, so not run as a doctest)::

        metrics = run_demo(epochs=2, progress=False)
        print(metrics["val_acc"], metrics["test_acc"])
    """
    from lightning_tune._lightning import NAMESPACES
    from lightning_tune.data import DigitsDataModule
    from lightning_tune.models import TimmClassifier

    pl = NAMESPACES[0]  # the default Lightning package (every object here works with both)
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = DigitsDataModule(
        image_size=image_size, batch_size=batch_size, train_fraction=train_fraction, seed=seed
    )
    module = TimmClassifier(model_name, num_classes=datamodule.num_classes, lr=lr)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=pl.loggers.CSVLogger(output_dir, name=""),
        callbacks=demo_callbacks(),
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_train_batches=limit_train_batches,
        log_every_n_steps=5,
        deterministic=True,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    metrics: dict[str, Any] = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k in ("train_loss", "val_loss", "val_acc")
    }
    test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    metrics.update({k: float(v) for k, v in test.items()})
    metrics["epochs"] = trainer.current_epoch
    metrics["fit_seconds"] = round(fit_seconds, 2)
    return metrics


def demo_callbacks() -> list[Any]:
    """The callbacks the demo trains with."""
    from lightning_tune.callbacks import EarlyStopping, GradientClipping, LabelSmoothing, LRSchedule

    return [
        LRSchedule(warmup=0.1, schedule="cosine"),
        GradientClipping(max_norm=1.0),
        LabelSmoothing(epsilon=0.1),
        EarlyStopping(monitor="val_loss", patience=3),
    ]


def _cmd_demo(args: argparse.Namespace) -> int:
    metrics = run_demo(
        model_name=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        train_fraction=args.train_fraction,
        seed=args.seed,
        progress=not args.quiet,
        output_dir=args.output_dir,
        limit_train_batches=args.limit_train_batches,
    )
    print("\nFinal metrics (digits, offline):")
    for key, value in metrics.items():
        print(f"  {key:>12}: {value:.4f}" if isinstance(value, float) else f"  {key:>12}: {value}")
    print(json.dumps({"demo": metrics}))
    if args.sweep_trials > 0:
        from lightning_tune.tuner.demo import run_demo_sweep

        print(f"\nA short sweep ({args.sweep_trials} trials, median pruning, val_loss):")
        sweep = run_demo_sweep(
            n_trials=args.sweep_trials,
            output_dir=args.output_dir,
            seed=args.seed,
            quiet=args.quiet,
            limit_train_batches=args.limit_train_batches,
        )
        print(json.dumps({"demo_sweep": sweep}))
    return 0


def _batches(text: str) -> int | float:
    value = float(text)
    return int(value) if value > 1 else value


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lightning-tune demo``."""
    parser = subparsers.add_parser(
        "demo", help="train a tiny timm model on the bundled digits (offline, ~1 min on CPU)"
    )
    parser.add_argument("--model", default="test_resnet", help="timm model name")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument(
        "--limit-train-batches",
        type=_batches,
        default=1.0,
        help="fraction (<=1) or number of training batches per epoch",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="lightning_tune_runs/demo")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--sweep-trials",
        type=int,
        default=6,
        help="trials of the short Optuna sweep after training (0: no sweep)",
    )
    parser.set_defaults(func=_cmd_demo)
