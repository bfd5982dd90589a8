"""The short sweep of ``lightning-tune demo``: a few pruned trials on the digits, in seconds."""

from __future__ import annotations

import pathlib
from typing import Any

__all__ = ["run_demo_sweep"]


def run_demo_sweep(
    n_trials: int = 6,
    max_epochs: int = 3,
    output_dir: str | pathlib.Path = "lightning_tune_runs/demo",
    seed: int = 0,
    quiet: bool = False,
    limit_train_batches: int | float = 1.0,
) -> dict[str, Any]:
    """Sweep lr / weight decay / batch size of ``test_resnet`` on 16x16 digits (median pruning).

    The study is kept in memory (a fresh demo every time); the report (CSV, plots) goes to
    ``<output_dir>/sweep/report``. Returns best value/params and the trial states.
    """
    from lightning_tune.data import DigitsDataModule
    from lightning_tune.models import TimmClassifier
    from lightning_tune.tuner.loop import trial_states
    from lightning_tune.tuner.space import Float, PowerOfTwo
    from lightning_tune.tuner.tuner import Tuner

    tuner = Tuner(
        TimmClassifier,
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "weight_decay": Float(1e-5, 1e-1, log=True),
            "batch_size": PowerOfTwo(32, 128),
        },
        module_kwargs={"model_name": "test_resnet"},
        datamodule=DigitsDataModule,
        datamodule_kwargs={"image_size": 16, "train_fraction": 0.5, "seed": seed},
        sampler="random",
        pruner="median",
        pruner_kwargs={"n_startup_trials": 2},
        storage="memory",
        study_name="sweep",
        output_dir=output_dir,
        seed=seed,
        max_epochs=max_epochs,
        keep_checkpoints=1,
        trainer_kwargs={
            "accelerator": "cpu",
            "devices": 1,
            "num_sanity_val_steps": 0,
            "limit_train_batches": limit_train_batches,
        },
        quiet=quiet,
    )
    result = tuner.run(n_trials=n_trials, plots=True)
    return {
        "best_value": result.best_value,
        "best_params": result.best_params,
        "states": trial_states(result.study),
        "report": str(tuner.study_dir / "report"),
    }
