"""Presets: callbacks whose choices follow the run's length in optimizer steps and the data size.

:func:`finetune` is the fine-tuning preset. Its choices were measured on a grid of settings
(``benchmarks/bench_finetuning.py``, results in ``docs/benchmarks/finetuning.md``), not tuned
on one: what holds there is that a short run is limited by how far the LR can carry it, so it
keeps the LR at its peak, and that a longer run gains from a warmup and an annealed end
(which also rescues a too-high LR) while keeping the peak for most of its length.
:func:`plan_finetuning` gives the same choices as a pure function of the run's length, to read
or to test them without a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from lightning_tune._validation import check_choice, check_int, check_number, check_optional
from lightning_tune.callbacks.lr_schedule import LRSchedule

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["SHORT_RUN_STEPS", "FinetunePlan", "finetune", "plan_finetuning"]

#: Runs with fewer optimizer steps keep a constant LR: every step at the peak counts.
SHORT_RUN_STEPS = 50
#: The LR probe trains each candidate LR for this many steps at most (a shorter run: all of it).
PROBE_STEPS = 120
#: Longer runs: warmup over this fraction of the run, ...
WARMUP_FRACTION = 0.05
#: ... starting at this fraction of the peak, ...
WARMUP_START_FACTOR = 0.1
#: ... and a cosine decay to 0 over this last fraction of the schedule.
DECAY_FRACTION = 0.2


@dataclass(frozen=True)
class FinetunePlan:
    """The fine-tuning preset's choices for one run, and the callbacks that carry them out.

    Attributes:
        total_steps: optimizer steps of the run.
        train_size: training examples, when known.
        lr: the peak LR (None: the module's own, untouched).
        lr_source: ``"given"``, ``"probe"``, ``"range test"`` or ``"module"``.
        warmup_steps: steps of linear warmup (0: none).
        warmup_start_factor: where the warmup starts, as a fraction of the peak.
        decay_fraction: last fraction of the schedule spent decaying to 0 (0: constant LR).
        reason: one line on why these choices.
    """

    total_steps: int
    train_size: int | None
    lr: float | None
    lr_source: str
    warmup_steps: int
    warmup_start_factor: float
    decay_fraction: float
    reason: str

    @property
    def callbacks(self) -> list[pl.Callback]:
        """The callbacks to give the Trainer (one :class:`LRSchedule` owning the LR).

        Example:
            >>> plan_finetuning(total_steps=200, lr=1e-3).callbacks[0].schedule
            StableDecay(decay=0.2, min_factor=0.0)
        """
        if self.decay_fraction == 0:
            schedule = LRSchedule("constant", warmup=self.warmup_steps, max_lr=self.lr)
        else:
            # The warmup as a fraction: LRSchedule measures the run on the Trainer itself.
            schedule = LRSchedule(
                "stable_decay",
                warmup=WARMUP_FRACTION,
                warmup_start_factor=self.warmup_start_factor,
                decay=self.decay_fraction,
                max_lr=self.lr,
            )
        return [schedule]

    def summary(self) -> dict[str, Any]:
        """The choices as a plain dict (JSON-ready)."""
        return asdict(self)

    def __str__(self) -> str:
        lr = "the module's" if self.lr is None else f"{self.lr:.3g} ({self.lr_source})"
        if self.decay_fraction == 0:
            shape = "constant at the peak" + (
                f" after {self.warmup_steps} warmup steps" if self.warmup_steps else ""
            )
        else:
            shape = (
                f"{self.warmup_steps} warmup steps from {self.warmup_start_factor:g}x, the peak, "
                f"then a cosine to 0 over the last {self.decay_fraction:.0%}"
            )
        size = "" if self.train_size is None else f", {self.train_size} training examples"
        return (
            f"finetune: {self.total_steps} optimizer steps{size}\n"
            f"  LR: {lr}\n  schedule: {shape}\n  freezing: none (every layer trains)\n"
            f"  why: {self.reason}"
        )


def plan_finetuning(
    total_steps: int, *, train_size: int | None = None, lr: float | None = None
) -> FinetunePlan:
    """The preset's choices for a run of ``total_steps`` optimizer steps.

    Args:
        total_steps: optimizer steps of the whole run (>= 1).
        train_size: number of training examples, when known (shown, not used yet).
        lr: the peak LR; None keeps the module's.

    Example:
        >>> plan = plan_finetuning(total_steps=30, lr=1e-3)
        >>> plan.warmup_steps, plan.decay_fraction
        (0, 0.0)
        >>> plan = plan_finetuning(total_steps=1000, lr=1e-3)
        >>> plan.warmup_steps, plan.decay_fraction
        (50, 0.2)
    """
    total_steps = check_int("total_steps", total_steps, minimum=1)
    train_size = check_optional(check_int, "train_size", train_size, minimum=1)
    lr = check_optional(check_number, "lr", lr, low=0, low_open=True)
    source = "module" if lr is None else "given"
    if total_steps < SHORT_RUN_STEPS:
        return FinetunePlan(
            total_steps, train_size, lr, source, 0, 1.0, 0.0,
            f"a short run (< {SHORT_RUN_STEPS} steps) is limited by its LR budget: "
            "any warmup or decay costs accuracy",
        )  # fmt: skip
    warmup = max(1, round(WARMUP_FRACTION * total_steps))
    return FinetunePlan(
        total_steps, train_size, lr, source, warmup, WARMUP_START_FACTOR, DECAY_FRACTION,
        "a warmup protects the pretrained weights from the new head's first gradients; the "
        "peak is kept for most of the run and the annealed end settles it",
    )  # fmt: skip


def _loader_length(loader: Any) -> tuple[int, int | None]:
    """``(batches per epoch, examples)`` of a training loader."""
    try:
        batches = len(loader)
    except TypeError:
        raise ValueError(
            "finetune needs the number of training batches per epoch, but the train loader has "
            "no length (an iterable dataset?): pass `total_steps`"
        ) from None
    dataset = getattr(loader, "dataset", None)
    try:
        examples = len(dataset) if dataset is not None else None
    except TypeError:
        examples = None
    return batches, examples


def finetune(
    module: pl.LightningModule | None = None,
    datamodule: pl.LightningDataModule | None = None,
    *,
    max_epochs: int | None = None,
    total_steps: int | None = None,
    lr: float | None = None,
    accumulate_grad_batches: int = 1,
    range_test: bool | None = None,
    lr_search: str = "probe",
    monitor: str | None = "val_acc",
    mode: str = "max",
    tie_break: str | None = "val_loss",
    trainer_kwargs: dict[str, Any] | None = None,
) -> FinetunePlan:
    """The fine-tuning preset: choices from the run's length in steps, LR from a short probe.

    The run's length in optimizer steps is ``total_steps``, or ``max_epochs`` times the
    datamodule's training batches per epoch (divided by ``accumulate_grad_batches``). The LR is
    ``lr`` when given; otherwise the LR probe (:func:`lightning_tune.lr_probe.lr_probe`) picks
    it: five candidates from a tenth to ten times the module's ``hparams.lr`` each train a copy
    of ``module`` for ``min(total_steps, 120)`` steps (the whole run when it is shorter) with
    the preset's schedule for that many steps, and the one with the best ``monitor`` on the
    validation batches wins (on a grid of 27 settings it matched plain fine-tuning at the best
    of three LRs; ``docs/benchmarks/finetuning.md``). It costs five times
    ``min(total_steps, 120)`` training steps and five validations.
    ``range_test=False`` keeps the module's own LR instead. Give the Trainer the same
    ``max_epochs`` and the plan's :attr:`~FinetunePlan.callbacks`.

    Args:
        module: the LightningModule (for the LR search; it is copied, never trained).
        datamodule: gives the training batches (for the run length and the LR search) and the
            validation batches the search judges by.
        max_epochs: epochs of the run (with ``datamodule``).
        total_steps: or the optimizer steps of the run directly.
        lr: the peak LR; None: from the LR search.
        accumulate_grad_batches: the Trainer's gradient accumulation.
        range_test: search for the LR when ``lr`` is None (default True; needs ``module``
            and ``datamodule``); False keeps the module's LR.
        lr_search: ``"probe"`` (the default, above) or ``"range_test"``: one ramp of
            :func:`lightning_tune.range_test.lr_range_test`, cheaper (60 steps) but on the grid
            7 points below the best LR on average, its suggestion moving 8x between seeds.
        monitor: the validation metric the search judges each LR by (the module must log it in
            ``validation_step``; ``TimmClassifier`` logs ``val_acc`` and ``val_loss``). The
            accuracy by default: on a new head the loss can prefer an LR that collapsed the
            model to uniform predictions over one that classifies. None (range test only): the
            training loss.
        mode: ``"max"`` (an accuracy) or ``"min"`` (a loss) for ``monitor``.
        tie_break: the probe's second metric, lower is better, between LRs with the same
            ``monitor`` value (an accuracy on a small validation set ties often); None: the
            lower LR.
        trainer_kwargs: ``Trainer`` arguments for the LR search's runs (``accelerator``,
            ``precision``, ...; by default one device of Lightning's choice, a GPU when there
            is one).

    Example:
        >>> from lightning_tune import DigitsDataModule, TimmClassifier
        >>> data = DigitsDataModule(image_size=16, batch_size=64, train_fraction=0.1)
        >>> plan = finetune(TimmClassifier("test_resnet"), data, max_epochs=10, lr=1e-3)
        >>> plan.total_steps, plan.warmup_steps
        (20, 0)
        >>> import pytorch_lightning as pl
        >>> trainer = pl.Trainer(max_epochs=10, callbacks=plan.callbacks)

        Without an LR, the probe picks one around the module's own:

        >>> plan = finetune(TimmClassifier("test_resnet", lr=1e-3), data, max_epochs=2)
        >>> plan.lr_source, 1e-4 <= plan.lr <= 1e-2
        ('probe', True)
    """
    accumulate = check_int("accumulate_grad_batches", accumulate_grad_batches, minimum=1)
    lr_search = check_choice("lr_search", lr_search, ("probe", "range_test"))
    if trainer_kwargs is not None and not isinstance(trainer_kwargs, Mapping):
        raise TypeError(
            "`trainer_kwargs` must be a dict of Trainer arguments, but got "
            f"trainer_kwargs={trainer_kwargs!r}"
        )
    mode = check_choice("mode", mode, ("min", "max"))
    check_optional(check_int, "max_epochs", max_epochs, minimum=1)
    check_optional(check_int, "total_steps", total_steps, minimum=1)
    if (max_epochs is None) == (total_steps is None):
        raise ValueError(
            "finetune needs the run's length: pass `max_epochs` (with `datamodule`) or "
            f"`total_steps`, exactly one, but got {max_epochs=!r}, {total_steps=!r}"
        )
    train_size = None
    if datamodule is not None:
        batches, train_size = _loader_length(datamodule.train_dataloader())
        if max_epochs is not None:
            total_steps = max_epochs * math.ceil(batches / accumulate)
    elif max_epochs is not None:
        raise ValueError("`max_epochs` needs `datamodule` (its batches per epoch): pass both")
    assert total_steps is not None
    plan = plan_finetuning(total_steps, train_size=train_size, lr=lr)
    if lr is not None or range_test is False:
        return plan
    search = {"monitor": monitor, "mode": mode, "tie_break": tie_break}
    return _search_lr(plan, module, datamodule, lr_search, search, dict(trainer_kwargs or {}))


def _search_lr(
    plan: FinetunePlan,
    module: Any,
    datamodule: Any,
    lr_search: str,
    search: dict[str, Any],
    trainer_kwargs: dict[str, Any],
) -> FinetunePlan:
    """``plan`` with the peak LR that ``lr_search`` finds for ``module`` (``search``: its
    ``monitor``, ``mode`` and ``tie_break``)."""
    monitor = search["monitor"]
    if module is None or datamodule is None:
        raise ValueError(
            f"finetune searches for the LR (lr_search={lr_search!r}), which needs `module` and "
            "`datamodule`: pass them, or pass `lr`, or range_test=False to keep the module's LR"
        )
    if lr_search == "probe":
        if monitor is None:
            raise ValueError(
                "finetune(lr_search='probe') judges each LR on the validation batches: "
                "`monitor` must name a validation metric (e.g. 'val_acc'), but got None (the "
                "training loss is for lr_search='range_test')"
            )
        from lightning_tune.lr_probe import lr_probe

        steps = min(plan.total_steps, PROBE_STEPS)
        suggestion = lr_probe(
            module,
            datamodule,
            num_steps=steps,
            callbacks=lambda peak: plan_finetuning(steps, lr=peak).callbacks,
            **search,
            **trainer_kwargs,
        ).suggestion
        return FinetunePlan(**{**asdict(plan), "lr": suggestion, "lr_source": "probe"})
    from lightning_tune.range_test import lr_range_test

    suggestion = lr_range_test(
        module, datamodule, monitor=monitor, mode=search["mode"], **trainer_kwargs
    ).suggestion
    return FinetunePlan(**{**asdict(plan), "lr": suggestion, "lr_source": "range test"})
