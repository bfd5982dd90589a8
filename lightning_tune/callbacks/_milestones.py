"""When something happens in a run: in epochs, in optimizer steps, or as a fraction of the run.

A *moment* is an int in a unit (``"epoch"`` or ``"step"``) or a float in [0, 1), a fraction of
the run's optimizer steps. Fractions give a run of 30 steps and a run of 3,000 steps the same
shape; epochs do not (with 31 images and batch 32 an epoch is one step).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from lightning_tune._validation import check_choice, check_number, fail

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["UNITS", "Unit", "check_moment", "describe", "run_length", "to_steps"]

Unit = Literal["epoch", "step"]
UNITS: tuple[str, ...] = ("epoch", "step")


def check_moment(name: str, value: Any, unit: str, *, minimum: int = 0) -> int | float:
    """An int >= ``minimum`` (in ``unit``) or a float fraction of the run.

    Fractions are in [0, 1) for a moment (``minimum=0``) and in (0, 1) for a length.

    Example:
        >>> check_moment("unfreeze_at", 0.25, "epoch")
        0.25
        >>> check_moment("unfreeze_every", 0.0, "epoch", minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: `unfreeze_every` must be an int >= 1 (epochs) or a float in (0, 1) (a fraction of the run), but got unfreeze_every=0.0
    """
    check_choice("unit", unit, UNITS)
    low = "[0, 1)" if minimum == 0 else "(0, 1)"
    rule = f"an int >= {minimum} ({unit}s) or a float in {low} (a fraction of the run)"
    check_number(name, value, finite=False, what=rule)  # the type; the rule is checked below
    if isinstance(value, float):
        if not (0 <= value < 1 and (minimum == 0 or value > 0)):
            fail(name, rule, value)
    elif value < minimum:
        fail(name, rule, value)
    return value


def to_steps(
    value: int | float, unit: str, total_steps: int | None, steps_per_epoch: int | None
) -> int:
    """The optimizer step of a moment (or the number of steps of a length).

    Example:
        >>> to_steps(0.1, "epoch", total_steps=300, steps_per_epoch=10)
        30
        >>> to_steps(3, "epoch", total_steps=300, steps_per_epoch=10)
        30
        >>> to_steps(30, "step", total_steps=None, steps_per_epoch=None)
        30
    """
    if isinstance(value, float):
        if total_steps is None:
            raise ValueError(
                f"{value} is a fraction of the run, but the run's length in steps is unknown "
                "(max_epochs=-1 and no max_steps, or an iterable dataset): give it in steps"
            )
        return round(value * total_steps)
    if unit == "epoch":
        if steps_per_epoch is None:
            raise ValueError(
                f"{value} epochs in steps needs the number of steps per epoch, which is unknown "
                "(an iterable dataset?): give it in steps"
            )
        return value * steps_per_epoch
    return value


def run_length(trainer: pl.Trainer) -> tuple[int | None, int | None]:
    """``(optimizer steps of the run, optimizer steps per epoch)``, None where unknown."""
    total = trainer.estimated_stepping_batches
    batches = trainer.num_training_batches
    per_epoch = (
        math.ceil(batches / trainer.accumulate_grad_batches)
        if batches not in (0, math.inf)
        else None
    )
    return (None if total in (0, math.inf) else int(total)), per_epoch


def describe(value: int | float, unit: str) -> str:
    """A moment in words: ``"epoch 3"``, ``"step 30"`` or ``"10% of the run"``.

    Example:
        >>> describe(0.1, "epoch"), describe(3, "epoch"), describe(30, "step")
        ('10% of the run', 'epoch 3', 'step 30')
    """
    if isinstance(value, float):
        return f"{value:.0%} of the run"
    return f"{unit} {value}"
