"""The LR range test: train with an exponentially growing LR, suggest where the loss falls fastest."""

from __future__ import annotations

import copy
import math
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
from typing_extensions import override

from lightning_tune._validation import check_int, check_number

__all__ = ["LRRangeResult", "lr_range_test", "suggest_lr"]


@dataclass
class LRRangeResult:
    """What :func:`lr_range_test` measured.

    Attributes:
        lrs: the LR of each step.
        losses: the smoothed (bias-corrected EMA) training loss of each step.
        raw_losses: the training loss of each step.
        suggested_lr: the LR where the smoothed loss falls fastest (per log-LR), before its
            minimum; None if the loss never fell.
        stopped_early: the sweep stopped because the loss diverged.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    raw_losses: list[float] = field(default_factory=list)
    suggested_lr: float | None = None
    stopped_early: bool = False

    def plot(self, path: str | os.PathLike) -> pathlib.Path:
        """Save the loss-vs-LR curve with the suggestion marked as a PNG."""
        import matplotlib.pyplot as plt

        path = pathlib.Path(path)
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        ax.plot(self.lrs, self.raw_losses, color="0.75", lw=1, label="loss")
        ax.plot(self.lrs, self.losses, lw=2, label="smoothed")
        if self.suggested_lr is not None:
            ax.axvline(
                self.suggested_lr,
                color="tab:red",
                ls="--",
                label=f"suggested {self.suggested_lr:.2g}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title("LR range test")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def suggest_lr(lrs: list[float], losses: list[float], skip_begin: int = 5) -> float | None:
    """The LR where ``losses`` falls fastest per log-LR, looking only before its minimum.

    Example:
        >>> lrs = [10 ** (-6 + k / 4) for k in range(25)]
        >>> losses = [2.3 - 2 / (1 + math.exp(-(k - 12))) + (0 if k < 20 else k - 20) for k in range(25)]
        >>> round(math.log10(suggest_lr(lrs, losses)), 2)
        -3.0
    """
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    if len(finite) < skip_begin + 3:
        return None
    end = min(finite[-1], min(finite, key=lambda i: losses[i]))
    best, best_slope = None, 0.0
    for i in range(max(1, skip_begin), end):  # central differences, as numpy.gradient
        slope = (losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
        if slope < best_slope:
            best, best_slope = i, slope
    return lrs[best] if best is not None else None


class _Sweep(pl.Callback):
    def __init__(
        self, lrs: list[float], beta: float, diverge: float, result: LRRangeResult
    ) -> None:
        self.lrs, self.beta, self.diverge, self.result = lrs, beta, diverge, result
        self.avg = 0.0
        self.best = math.inf

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        lr = self.lrs[min(trainer.global_step, len(self.lrs) - 1)]
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr * float(group.get("lr_scale", 1.0))
        self.result.lrs.append(lr)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        value = float(loss.detach()) if loss is not None else math.nan
        n = len(self.result.raw_losses) + 1
        self.result.raw_losses.append(value)
        self.avg = self.beta * self.avg + (1 - self.beta) * value
        smoothed = self.avg / (1 - self.beta**n)
        self.result.losses.append(smoothed)
        self.best = min(self.best, smoothed) if math.isfinite(smoothed) else self.best
        if not math.isfinite(smoothed) or (n > 5 and smoothed > self.diverge * self.best):
            self.result.stopped_early = True
            trainer.should_stop = True


def lr_range_test(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule | None = None,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.9,
    diverge_factor: float = 4.0,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> LRRangeResult:
    """Train a copy of ``module`` for ``num_steps`` with the LR growing from ``min_lr`` to ``max_lr``.

    Every param group's LR is set each step (times its ``lr_scale``, so layer-wise decay is
    kept); the sweep stops when the smoothed loss exceeds ``diverge_factor`` x its best. The
    suggestion is the LR where the smoothed loss falls fastest before its minimum (the rule of
    Lightning's ``lr_find``, restricted to the falling part). ``module`` itself is not trained.

    Example (trains for a few seconds, so not run as a doctest)::

        result = lr_range_test(TimmClassifier("test_resnet"), DigitsDataModule(image_size=16))
        print(result.suggested_lr)
        result.plot("lr_range.png")
    """
    check_number("min_lr", min_lr, low=0, low_open=True)
    check_number("max_lr", max_lr, low=min_lr, low_open=True)
    check_int("num_steps", num_steps, minimum=10)
    check_number("smoothing", smoothing, low=0, high=1, high_open=True)
    check_number("diverge_factor", diverge_factor, low=1, low_open=True)
    ratio = max_lr / min_lr
    lrs = [min_lr * ratio ** (k / (num_steps - 1)) for k in range(num_steps)]
    result = LRRangeResult()
    options = {
        "accelerator": "auto",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        **(trainer_kwargs or {}),
        "max_steps": num_steps,
        "max_epochs": -1,
        "callbacks": [_Sweep(lrs, smoothing, diverge_factor, result)],
    }
    trainer = pl.Trainer(**options)
    trainer.fit(copy.deepcopy(module), datamodule=datamodule)
    result.suggested_lr = suggest_lr(result.lrs, result.losses)
    return result
