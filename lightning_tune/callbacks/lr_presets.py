"""Presets of :class:`~lightning_tune.callbacks.LRSchedule` with torch's argument names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from lightning_tune.callbacks._lr_settings import check_lrs
from lightning_tune.callbacks.lr_schedule import LRSchedule
from lightning_tune.schedules import Cyclic
from lightning_tune.schedules import OneCycle as _OneCycleSchedule

__all__ = ["CyclicLR", "OneCycle", "Warmup"]


class Warmup(LRSchedule):
    """A warmup to the peak LR, then constant: ``LRSchedule("constant", warmup, ...)``.

    Example:
        >>> Warmup(4, warmup_start_factor=0.2).preview(6, lr=1.0)
        [0.2, 0.4, 0.6000000000000001, 0.8, 1.0, 1.0]
    """

    def __init__(self, warmup: int | float, **kwargs: Any) -> None:
        super().__init__("constant", warmup, **kwargs)


class CyclicLR(LRSchedule):
    """Smith's cyclical LR with torch's ``CyclicLR`` arguments (momentum cycled by default).

    With ``base_lr`` and ``max_lr`` every scheduled group cycles between them (times its
    ``lr_scale``), as in torch; lists give each param group its own bounds, as torch's lists
    do. Without them, between ``base_factor`` times the group's own ``initial_lr`` and that
    ``initial_lr``. The groups' ``initial_lr`` is never overwritten.

    Args:
        base_lr: lower LR (with ``max_lr``), or one per param group.
        max_lr: upper LR, >= ``base_lr``, or one per param group.
        step_size_up: steps from base to peak.
        step_size_down: steps from peak to base (default ``step_size_up``).
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: ``exp_range`` decay per step.
        base_factor: lower bound as a fraction of the peak when ``base_lr`` is not given.
        cycle_momentum: cycle momentum / beta1 between ``base_momentum`` and ``max_momentum``.
        base_momentum: torch's default 0.8.
        max_momentum: torch's default 0.9.
        **kwargs: other :class:`LRSchedule` arguments (``warmup``, ``optimizers``, ...).

    Example:
        >>> [round(lr, 6) for lr in CyclicLR(base_lr=0.1, max_lr=0.5, step_size_up=2).preview(5)]
        [0.1, 0.3, 0.5, 0.3, 0.1]
    """

    def __init__(
        self,
        base_lr: float | Sequence[float] | None = None,
        max_lr: float | Sequence[float] | None = None,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        base_factor: float = 0.1,
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        **kwargs: Any,
    ) -> None:
        if (base_lr is None) != (max_lr is None):
            raise ValueError(
                f"give both `base_lr` and `max_lr` (or neither), but got {base_lr=!r}, {max_lr=!r}"
            )
        if base_lr is not None:
            _check_bounds(base_lr, check_lrs("max_lr", max_lr))
        schedule = Cyclic(
            step_size_up=step_size_up,
            step_size_down=step_size_down,
            mode=mode,
            gamma=gamma,
            base_factor=base_factor,
            min_lr=base_lr,
        )
        momentum = _momentum(cycle_momentum, base_momentum, max_momentum)
        super().__init__(schedule, max_lr=max_lr, **momentum, **kwargs)


def _momentum(cycle: bool, base: float, top: float) -> dict[str, Any]:
    """The momentum arguments of :class:`LRSchedule` (torch's names)."""
    return {"cycle_momentum": cycle, "base_momentum": base, "max_momentum": top}


def _check_bounds(base_lr: Any, max_lr: Any) -> None:
    """``base_lr <= max_lr`` pairwise (floats or per-group lists of the same length)."""
    bases = tuple(base_lr) if isinstance(base_lr, Sequence) else (base_lr,)
    tops = max_lr if isinstance(max_lr, tuple) else (max_lr,)
    if len(bases) > 1 and len(tops) > 1 and len(bases) != len(tops):
        raise ValueError(
            f"`base_lr` and `max_lr` need one entry per param group each, but got "
            f"{len(bases)} and {len(tops)}: {base_lr=!r}, {max_lr=!r}"
        )
    for i, base in enumerate(bases):
        top = tops[min(i, len(tops) - 1)]
        if isinstance(base, bool) or not isinstance(base, (int, float)):
            raise TypeError(
                f"`base_lr` must be a number or a list of numbers, but got {base_lr=!r}"
            )
        if not top >= base:
            raise ValueError(
                f"`max_lr` must be > 0 and >= `base_lr`, but got {max_lr=!r} < {base_lr=!r}: "
                "swap them"
            )


class OneCycle(LRSchedule):
    """The one-cycle policy with torch's ``OneCycleLR`` arguments (momentum cycled by default).

    Args:
        max_lr: the peak LR of every scheduled group, or one per group as torch's list
            (default: each group's ``initial_lr``).
        pct_start: fraction of the run going up.
        div_factor: start LR = ``max_lr / div_factor``.
        final_div_factor: last LR = start LR / ``final_div_factor``.
        three_phase: torch's three-phase variant.
        anneal: ``"cos"`` or ``"linear"`` (torch's ``anneal_strategy``).
        cycle_momentum: cycle momentum / beta1 between ``base_momentum`` and ``max_momentum``.
        base_momentum: torch's default 0.85.
        max_momentum: torch's default 0.95.
        **kwargs: other :class:`LRSchedule` arguments (``total_steps``, ``optimizers``, ...).

    Example:
        >>> lrs = OneCycle(max_lr=1.0, pct_start=0.5, div_factor=10).preview(5)
        >>> [round(lr, 4) for lr in lrs]
        [0.1, 0.775, 0.9045, 0.3455, 0.0]
    """

    def __init__(
        self,
        max_lr: float | Sequence[float] | None = None,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        anneal: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        **kwargs: Any,
    ) -> None:
        schedule = _OneCycleSchedule(
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            three_phase=three_phase,
            anneal=anneal,
        )
        momentum = _momentum(cycle_momentum, base_momentum, max_momentum)
        super().__init__(schedule, max_lr=max_lr, **momentum, **kwargs)
