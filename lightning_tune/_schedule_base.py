"""The base of the pure schedules and their argument checks (see :mod:`lightning_tune.schedules`).

A schedule with a floor has two ways to give it: a fraction of each param group's peak
(``min_factor`` / ``end_factor`` / ``base_factor``) or an absolute LR, ``min_lr``, shared or one
per group. :meth:`Schedule.for_group` turns the absolute floor into the relative one for a
group's peak, so every schedule stays a pure multiplier of the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lightning_tune._validation import check_number

__all__ = ["Schedule"]


def _check_min_lr(schedule: Any) -> None:
    """``min_lr``: None, a float >= 0 or a non-empty sequence of them (stored as a tuple)."""
    min_lr = schedule.min_lr
    if min_lr is None:
        return
    if isinstance(min_lr, Sequence) and not isinstance(min_lr, str):
        if not min_lr:
            raise ValueError("`min_lr` must be a float or a non-empty list, but got min_lr=[]")
        values = tuple(check_number(f"min_lr[{i}]", v) for i, v in enumerate(min_lr))
    else:
        values = (check_number("min_lr", min_lr),)
    if any(v < 0 for v in values):
        raise ValueError(f"`min_lr` must be >= 0, but got min_lr={min_lr!r}")
    field = schedule.floor_field
    if getattr(schedule, field) != 0:
        raise ValueError(
            f"give `{field}` (a fraction of each group's peak) or `min_lr` (an absolute LR), not "
            f"both, but got {field}={getattr(schedule, field)!r} and min_lr={min_lr!r}"
        )
    shared = not isinstance(min_lr, Sequence) or isinstance(min_lr, str)
    object.__setattr__(schedule, "min_lr", values[0] if shared else values)


def _need_total(schedule: Schedule, total: int | None) -> int:
    if total is None:
        raise ValueError(
            f"{type(schedule).__name__} needs the total number of steps, but none is known: "
            "pass `total` (or `total_steps` to LRSchedule), or give the Trainer a finite "
            "`max_epochs` or `max_steps`"
        )
    if total <= 0:
        raise ValueError(f"{type(schedule).__name__} needs `total` > 0, but got total={total!r}")
    return total


@dataclass(frozen=True)
class Schedule:
    """Base of the main schedules: ``schedule(step, total) -> multiplier`` (1.0 at step 0).

    Subclasses with ``needs_total = True`` need the schedule's length; ``cycles_momentum``
    marks the ones that also define a momentum curve (:meth:`momentum`). A new schedule is a
    frozen dataclass with ``__call__``; :class:`~lightning_tune.callbacks.LRSchedule` takes it.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Halving(Schedule):
        ...     every: int = 10
        ...     def __call__(self, step, total=None):
        ...         return 0.5 ** (step // self.every)
        >>> [Halving(every=2)(t) for t in range(5)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    needs_total: ClassVar[bool] = False
    cycles_momentum: ClassVar[bool] = False
    #: (base_momentum, max_momentum) that torch uses by default for this schedule.
    default_momentum: ClassVar[tuple[float, float]] = (0.85, 0.95)
    #: the field holding the floor as a fraction of the peak, for schedules with a floor
    #: (they also have ``min_lr``, the same floor as an absolute LR).
    floor_field: ClassVar[str | None] = None

    def __call__(self, step: float, total: int | None = None) -> float:
        raise NotImplementedError

    def for_group(self, peak: float, index: int = 0) -> Schedule:
        """This schedule for a param group whose peak LR is ``peak`` (its ``index``-th).

        An absolute floor ``min_lr`` (one LR, or one per group) becomes the relative floor
        ``min_lr / peak``; a schedule without ``min_lr`` is returned as it is.

        Example:
            >>> from lightning_tune.schedules import Cosine
            >>> Cosine(min_lr=(0.01, 0.001)).for_group(0.1, index=1)
            Cosine(min_factor=0.01, min_lr=None)
        """
        min_lr = getattr(self, "min_lr", None)
        if min_lr is None or self.floor_field is None:
            return self
        if isinstance(min_lr, tuple):
            if index >= len(min_lr):
                raise ValueError(
                    f"`min_lr` has {len(min_lr)} entries (one per param group), but param group "
                    f"{index} needs one: give one floor per group, or one shared float"
                )
            min_lr = min_lr[index]
        if not 0 <= min_lr <= peak:
            raise ValueError(
                f"`min_lr={min_lr!r}` must be <= the peak LR of param group {index} "
                f"({peak!r}): the floor cannot be above the peak"
            )
        factor = min_lr / peak if peak else 0.0
        return dataclasses.replace(self, min_lr=None, **{self.floor_field: factor})

    def _relative(self) -> None:
        if getattr(self, "min_lr", None) is not None:
            raise ValueError(
                f"{type(self).__name__}(min_lr={self.min_lr!r}) is an absolute floor, so its "  # type: ignore[attr-defined]
                "multiplier depends on each param group's peak LR: call "
                "`schedule.for_group(peak_lr)` first (LRSchedule does)"
            )

    def momentum(
        self, step: float, total: int | None, base_momentum: float, max_momentum: float
    ) -> float:
        """The momentum (or Adam beta1) at ``step``; only for cycling schedules."""
        raise NotImplementedError(f"{type(self).__name__} does not cycle the momentum")
