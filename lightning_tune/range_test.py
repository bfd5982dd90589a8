"""The LR range test: a short run with an exponentially growing LR, and the LR it suggests.

Smith's test (as fastai's ``lr_find`` and Lightning's ``Tuner.lr_find``): train a *copy* of the
module for ``num_steps`` optimizer steps while the LR grows geometrically from ``min_lr`` to
``max_lr``, record the training loss, stop early when it diverges, and suggest the LR of the
lowest loss (smoothed by a centred moving average) divided by ``divisor`` (3 by default:
on a quadratic with SGD or Adam this lands within 1.5x of the best constant LR). With
``monitor="val_loss"`` (what the fine-tuning preset uses) the copy is validated every few
steps of the ramp and that curve decides instead. The user's module, its optimizer and its
weights are untouched.

Each parameter group keeps its ``lr_scale`` (layer-wise decay): the group's LR is
``lr * lr_scale``, so the suggestion is the base LR that ``TimmClassifier(lr=...)`` or
``LRSchedule(max_lr=...)`` take.
"""

from __future__ import annotations

import copy
import math
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from typing_extensions import override

from lightning_tune._compat import run_namespace
from lightning_tune._lightning import Callback
from lightning_tune._validation import check_choice, check_int, check_number

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["DIVISOR", "RangeTestResult", "centred_average", "lr_range_test", "suggest_lr"]

#: The suggestion is the LR of the lowest (smoothed) loss divided by this.
DIVISOR = 3.0


@dataclass(frozen=True)
class RangeTestResult:
    """What an LR range test measured.

    Attributes:
        lrs: the base LR of each recorded step.
        losses: the training loss of each step, smoothed by a centred moving average (no lag:
            an exponential average would move the minimum to higher LRs).
        suggestion: the suggested base LR (see :func:`suggest_lr`).
        diverged: whether the run stopped early because the loss blew up.
        monitor: the validation metric the curve shows (``losses`` are then its values, every
            ``val_every`` steps); None: the training loss.
        mode: ``"min"``, or ``"max"`` when the best ``monitor`` value is the highest.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    suggestion: float
    diverged: bool
    monitor: str | None = None
    mode: str = "min"

    @property
    def best_loss_lr(self) -> float:
        """The LR at the best smoothed value (the lowest loss; the highest with mode "max")."""
        sign = -1.0 if self.mode == "max" else 1.0
        return self.lrs[min(range(len(self.losses)), key=lambda i: sign * self.losses[i])]

    def plot(self, path: str | os.PathLike) -> pathlib.Path:
        """Save the loss-vs-LR curve with the suggestion marked as a PNG."""
        label = "training loss" if self.monitor is None else self.monitor
        title = "LR range test" + (" (stopped: the loss diverged)" if self.diverged else "")
        return plot_lr_curve(
            path, self.lrs, self.losses, self.suggestion, ylabel=label,
            label=f"{label} (smoothed)", title=title,
        )  # fmt: skip


def plot_lr_curve(
    path: str | os.PathLike,
    lrs: Sequence[float],
    values: Sequence[float],
    suggestion: float,
    *,
    ylabel: str,
    label: str,
    title: str,
    marker: str = "",
) -> pathlib.Path:
    """Save ``values`` against ``lrs`` (log x axis) with the suggestion marked, as a PNG (the
    plots of :class:`RangeTestResult` and :class:`~lightning_tune.lr_probe.ProbeResult`).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "lr.png"
        >>> plot_lr_curve(out, [1e-3, 1e-2], [0.9, 0.5], 1e-2, ylabel="loss", label="loss",
        ...               title="LRs").stat().st_size > 0
        True
    """
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(lrs, values, marker=marker or None, lw=2, label=label)
    ax.axvline(suggestion, color="tab:red", ls="--", label=f"suggested {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def centred_average(values: Sequence[float], window: int) -> list[float]:
    """Moving average over ``window`` values centred on each (shorter at the ends).

    Example:
        >>> centred_average([1.0, 2.0, 6.0, 2.0, 1.0], 3)
        [1.5, 3.0, 3.3333333333333335, 3.0, 1.5]
    """
    half = window // 2
    return [
        sum(values[max(0, i - half) : i + half + 1]) / len(values[max(0, i - half) : i + half + 1])
        for i in range(len(values))
    ]


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], divisor: float = DIVISOR) -> float:
    """The LR of the lowest loss divided by ``divisor``, never below the first LR tried.

    The lowest loss of the ramp sits just below the LR where training breaks down; a safe
    constant LR is a fraction of it.

    Example:
        >>> suggest_lr([1e-4, 1e-3, 1e-2, 1e-1], [2.0, 1.5, 0.9, 5.0], divisor=10)
        0.001
    """
    if not lrs or len(lrs) != len(losses):
        raise ValueError(
            f"`lrs` and `losses` must be non-empty and of the same length, but got "
            f"{len(lrs)} LRs and {len(losses)} losses"
        )
    best = min(range(len(losses)), key=lambda i: losses[i])
    return max(lrs[0], lrs[best] / divisor)


class _Ramp(Callback):
    """Sets the geometric LR before each step and records the smoothed loss after it."""

    def __init__(
        self,
        min_lr: float,
        max_lr: float,
        num_steps: int,
        smoothing: float,
        monitor: str | None = None,
        mode: str = "min",
    ) -> None:
        self.min_lr, self.max_lr, self.num_steps = min_lr, max_lr, num_steps
        self.smoothing, self.monitor, self.mode = smoothing, monitor, mode
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.val_lrs: list[float] = []
        self.val_values: list[float] = []
        self.diverged = False
        self._average = 0.0
        self._best = math.inf

    def lr_at(self, step: int) -> float:
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / max(1, self.num_steps - 1))

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        lr = self.lr_at(trainer.global_step)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else math.nan
        step = len(self.losses)
        if not math.isfinite(value):
            self.diverged, trainer.should_stop = True, True
            return
        self.lrs.append(self.lr_at(trainer.global_step - 1))
        self.losses.append(value)
        # Divergence is judged on a bias-corrected exponential average (as fastai, Lightning).
        self._average = self.smoothing * value + (1 - self.smoothing) * self._average
        smoothed = self._average / (1 - (1 - self.smoothing) ** (step + 1))
        self._best = min(self._best, smoothed)
        if step > 0 and smoothed > 4 * self._best:
            self.diverged, trainer.should_stop = True, True

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None or trainer.global_step == 0:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ValueError(
                f"lr_range_test(monitor={self.monitor!r}): the module logged no such validation "
                f"metric (logged: {sorted(trainer.callback_metrics)}); pass the name it logs in "
                "`validation_step`, or monitor=None for the training loss"
            )
        value = float(value)
        self.val_lrs.append(self.lr_at(trainer.global_step - 1))
        # stored as "lower is better", so one suggestion rule serves both modes
        self.val_values.append(value if self.mode == "min" else -value)
        if not math.isfinite(value):
            self.diverged, trainer.should_stop = True, True


def lr_range_test(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule | None = None,
    *,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_steps: int = 60,
    smoothing: float = 0.05,
    divisor: float = DIVISOR,
    monitor: str | None = None,
    mode: str = "min",
    val_every: int | None = None,
    **trainer_kwargs: Any,
) -> RangeTestResult:
    """Run an LR range test on a copy of ``module`` and suggest a base LR.

    Args:
        module: the LightningModule (its ``configure_optimizers`` builds the optimizer; a torch
            LR scheduler it returns is ignored during the test). It is deep-copied: the
            original keeps its weights.
        datamodule: gives the training batches (or pass ``train_dataloaders``).
        train_dataloaders: training batches when there is no datamodule.
        val_dataloaders: validation batches for ``monitor`` when there is no datamodule.
        min_lr: first LR (> 0).
        max_lr: last LR (> ``min_lr``).
        num_steps: optimizer steps of the ramp (>= 5); it stops earlier when the smoothed loss
            exceeds 4x its minimum or is not finite.
        smoothing: weight of the newest loss in the exponential average that detects
            divergence, in (0, 1].
        divisor: the suggestion is the LR of the lowest smoothed loss divided by this (>= 1).
        monitor: judge each LR by this *validation* metric (e.g. ``"val_loss"``, as the module
            logs it in ``validation_step``) instead of the training loss: the module is
            validated every ``val_every`` steps during the ramp and the suggestion comes from
            that curve. On a pretrained model and a small training set the training loss keeps
            falling at LRs that already wreck what the model knew (the few examples are
            memorised; batch norm's running statistics drift), which only held-out data shows.
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy) for ``monitor``.
        val_every: optimizer steps between validations with ``monitor`` (default: a 20th of
            ``num_steps``, at least 1).
        **trainer_kwargs: extra ``pl.Trainer`` arguments (``accelerator``, ``precision``, ...).

    Returns:
        the recorded curve and the suggested LR.

    Example:
        >>> from lightning_tune import DigitsDataModule, TimmClassifier
        >>> import pytorch_lightning as pl
        >>> _ = pl.seed_everything(0, verbose=False)
        >>> result = lr_range_test(
        ...     TimmClassifier("test_resnet"), DigitsDataModule(image_size=16), num_steps=20
        ... )
        >>> 1e-6 <= result.suggestion < 1.0
        True

        Judged on the validation loss, one point every ``val_every`` steps:

        >>> result = lr_range_test(
        ...     TimmClassifier("test_resnet"), DigitsDataModule(image_size=16),
        ...     num_steps=12, monitor="val_loss", val_every=3,
        ... )
        >>> result.monitor, len(result.lrs)
        ('val_loss', 4)
    """
    min_lr = check_number("min_lr", min_lr, low=0, low_open=True)
    max_lr = check_number("max_lr", max_lr, low=min_lr, low_open=True)
    num_steps = check_int("num_steps", num_steps, minimum=5)
    smoothing = check_number("smoothing", smoothing, low=0, high=1, low_open=True)
    divisor = check_number("divisor", divisor, low=1)
    mode = check_choice("mode", mode, ("min", "max"))
    if val_every is None:
        val_every = max(1, num_steps // 20)
    val_every = check_int("val_every", val_every, minimum=1)
    _check_sources(datamodule, train_dataloaders, val_dataloaders)
    ramp = _Ramp(min_lr, max_lr, num_steps, smoothing, monitor, mode)
    options = _trainer_options(monitor, val_every, trainer_kwargs)
    ns = run_namespace(module, datamodule)
    trainer = ns.Trainer(max_steps=num_steps, max_epochs=-1, callbacks=[ramp], **options)
    trainer.fit(
        copy.deepcopy(module),
        datamodule=datamodule,
        train_dataloaders=train_dataloaders,
        val_dataloaders=val_dataloaders,
    )
    if not ramp.losses:
        raise RuntimeError(
            "the LR range test recorded no finite training loss: `training_step` must return "
            "the loss (a tensor, or a dict with 'loss')"
        )
    if monitor is not None:
        return _monitored_result(ramp, divisor, val_every)
    losses = centred_average(ramp.losses, max(3, num_steps // 12))
    return RangeTestResult(
        lrs=tuple(ramp.lrs),
        losses=tuple(losses),
        suggestion=suggest_lr(ramp.lrs, losses, divisor),
        diverged=ramp.diverged,
    )


def _check_sources(datamodule: Any, train_dataloaders: Any, val_dataloaders: Any) -> None:
    if (datamodule is None) == (train_dataloaders is None):
        raise ValueError(
            "lr_range_test needs the training batches: pass `datamodule` or "
            f"`train_dataloaders` (exactly one), but got {datamodule=!r}, {train_dataloaders=!r}"
        )
    if datamodule is not None and val_dataloaders is not None:
        raise ValueError(
            "lr_range_test takes validation batches from `datamodule` or from `val_dataloaders`, "
            "not both: drop `val_dataloaders` or pass `train_dataloaders` instead of the datamodule"
        )


def _trainer_options(
    monitor: str | None, val_every: int, trainer_kwargs: dict[str, Any]
) -> dict[str, Any]:
    validation: dict[str, Any] = (
        {"limit_val_batches": 0}
        if monitor is None
        # every `val_every` optimizer steps, counted across epochs
        else {"val_check_interval": val_every, "check_val_every_n_epoch": None}
    )
    return quiet_trainer_options({**validation, **trainer_kwargs})


def quiet_trainer_options(trainer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Trainer arguments of a throwaway run (range test, LR probe): one device of Lightning's
    choice (a GPU when there is one, as ``Trainer()`` picks), no logger, checkpoint, progress
    bar, summary or sanity check; ``trainer_kwargs`` override them.

    Example:
        >>> options = quiet_trainer_options({"accelerator": "cpu", "precision": "bf16-mixed"})
        >>> options["accelerator"], options["precision"], options["logger"]
        ('cpu', 'bf16-mixed', False)
        >>> quiet_trainer_options({})["accelerator"]
        'auto'
    """
    return {
        "accelerator": "auto",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        **trainer_kwargs,
    }


def _monitored_result(ramp: _Ramp, divisor: float, val_every: int) -> RangeTestResult:
    if not ramp.val_values:
        raise RuntimeError(
            f"the LR range test validated no step with monitor={ramp.monitor!r}: no validation "
            f"ran in the ramp's {len(ramp.losses)} steps (val_every={val_every}); give it "
            "validation batches (the datamodule's `val_dataloader` or `val_dataloaders`), lower "
            "`val_every`, or pass monitor=None for the training loss"
        )
    values = centred_average(ramp.val_values, 3)  # stored as "lower is better"
    return RangeTestResult(
        lrs=tuple(ramp.val_lrs),
        losses=tuple(values if ramp.mode == "min" else [-v for v in values]),
        suggestion=suggest_lr(ramp.val_lrs, values, divisor),
        diverged=ramp.diverged,
        monitor=ramp.monitor,
        mode=ramp.mode,
    )
