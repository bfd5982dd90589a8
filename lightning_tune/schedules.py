"""Learning-rate schedules as pure, closed-form functions of the step.

Every schedule here maps a step ``t`` (optimizer steps or epochs, whichever unit the caller
counts in) to a **multiplier** of a parameter group's peak LR (its ``initial_lr``), and keeps no
state: the value at step ``t`` never depends on the steps before it. That is what makes
resuming from a checkpoint exact and lets one callback
(:class:`~lightning_tune.callbacks.LRSchedule`) schedule any number of parameter groups, each
with its own base LR and ``lr_scale``.

Main schedules are small frozen dataclasses, called as ``schedule(step, total)`` where
``total`` is the length of the main schedule (the run minus the warmup; ``None`` when unknown).
A warmup in front of them is :func:`warmup_factor`; :func:`schedule_factor` composes the two.
Warmup reaches the peak (multiplier 1.0) exactly at step ``warmup_steps``, where every main
schedule starts at 1.0, so the hand-over has no jump.

Example:
    >>> cosine = Cosine(min_factor=0.1)
    >>> [round(cosine(t, 4), 4) for t in range(5)]
    [1.0, 0.8682, 0.55, 0.2318, 0.1]
    >>> [round(schedule_factor(t, cosine, total=6, warmup_steps=2), 4) for t in range(6)]
    [0.0, 0.5, 1.0, 0.8682, 0.55, 0.2318]
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from lightning_tune._schedule_base import Schedule, _check_min_lr, _need_total
from lightning_tune._validation import check_choice, check_int, check_number, check_optional

__all__ = [
    "ANNEAL_MODES",
    "CYCLIC_MODES",
    "MIN_LR_ALIASES",
    "SCHEDULES",
    "WARMUP_MODES",
    "Constant",
    "Cosine",
    "CosineRestarts",
    "Cyclic",
    "Exponential",
    "Linear",
    "MultiStep",
    "OneCycle",
    "Polynomial",
    "Schedule",
    "StableDecay",
    "Step",
    "make_schedule",
    "schedule_factor",
    "warmup_factor",
]

WARMUP_MODES: tuple[str, ...] = ("linear", "cosine", "exponential")
CYCLIC_MODES: tuple[str, ...] = ("triangular", "triangular2", "exp_range")
ANNEAL_MODES: tuple[str, ...] = ("cos", "linear")


# --------------------------------------------------------------------------------- warmup
def warmup_factor(
    step: float,
    warmup_steps: float,
    start_factor: float = 0.0,
    mode: Literal["linear", "cosine", "exponential"] = "linear",
) -> float:
    """The warmup multiplier at ``step``: from ``start_factor`` at 0 to exactly 1.0 at the end.

    ``linear`` matches ``torch.optim.lr_scheduler.LinearLR`` (``end_factor=1``) and timm's warmup
    with ``warmup_prefix=True``; ``cosine`` eases in and out; ``exponential`` multiplies the LR
    by a constant each step (needs ``start_factor > 0``). From ``warmup_steps`` on it is 1.0.

    Example:
        >>> [warmup_factor(t, 4, start_factor=0.2) for t in range(6)]
        [0.2, 0.4, 0.6000000000000001, 0.8, 1.0, 1.0]
        >>> warmup_factor(2, 4, 0.25, "exponential")
        0.5
    """
    if step >= warmup_steps:
        return 1.0
    progress = step / warmup_steps
    if mode == "linear":
        return start_factor + (1.0 - start_factor) * progress
    if mode == "cosine":
        return start_factor + (1.0 - start_factor) * 0.5 * (1.0 - math.cos(math.pi * progress))
    if mode == "exponential":
        return start_factor ** (1.0 - progress)
    raise ValueError(f"`mode` must be one of {list(WARMUP_MODES)}, but got mode={mode!r}")


# ------------------------------------------------------------------------- main schedules
@dataclass(frozen=True)
class Constant(Schedule):
    """The peak LR, unchanged (useful after a warmup).

    Example:
        >>> Constant()(10)
        1.0
    """

    def __call__(self, step: float, total: int | None = None) -> float:
        return 1.0


@dataclass(frozen=True)
class Cosine(Schedule):
    """Half a cosine from 1.0 down to ``min_factor`` over ``total`` steps, then flat.

    Same values as ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total, eta_min=min_lr)``
    and timm's ``CosineLRScheduler(t_initial=total, lr_min=min_lr)``.

    Args:
        min_factor: the floor, as a fraction of each group's peak LR, in [0, 1].
        min_lr: or the floor as an absolute LR (torch's ``eta_min``, timm's ``lr_min``), one
            shared by all param groups or one per group; see :meth:`Schedule.for_group`.

    Example:
        >>> round(Cosine(min_factor=0.0)(5, 10), 6)
        0.5
    """

    min_factor: float = 0.0
    min_lr: float | tuple[float, ...] | None = None
    needs_total: ClassVar[bool] = True
    floor_field: ClassVar[str | None] = "min_factor"

    def __post_init__(self) -> None:
        check_number("min_factor", self.min_factor, low=0, high=1)
        _check_min_lr(self)

    def __call__(self, step: float, total: int | None = None) -> float:
        self._relative()
        total = _need_total(self, total)
        progress = min(step, total) / total
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


@dataclass(frozen=True)
class Linear(Schedule):
    """A straight line from 1.0 to ``end_factor`` over ``total`` steps, then flat.

    ``min_lr`` gives the end as an absolute LR instead (shared, or one per param group).

    Example:
        >>> Linear(end_factor=0.5)(5, 10)
        0.75
    """

    end_factor: float = 0.0
    min_lr: float | tuple[float, ...] | None = None
    needs_total: ClassVar[bool] = True
    floor_field: ClassVar[str | None] = "end_factor"

    def __post_init__(self) -> None:
        check_number("end_factor", self.end_factor, low=0, high=1)
        _check_min_lr(self)

    def __call__(self, step: float, total: int | None = None) -> float:
        self._relative()
        total = _need_total(self, total)
        return 1.0 - (1.0 - self.end_factor) * min(step, total) / total


@dataclass(frozen=True)
class StableDecay(Schedule):
    """Flat at the peak, then half a cosine down to ``min_factor`` over the last ``decay`` part.

    After a warmup this is the warmup-stable-decay ("WSD", trapezoidal) shape: the run keeps
    the peak LR for most of its length, as a constant LR does, and still ends annealed. With
    ``decay=1.0`` it is :class:`Cosine`.

    Args:
        decay: fraction of the schedule spent decaying, in (0, 1].
        min_factor: the last multiplier, in [0, 1].

    Example:
        >>> [round(StableDecay(decay=0.5)(t, 8), 3) for t in range(9)]
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """

    decay: float = 0.2
    min_factor: float = 0.0
    needs_total: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_number("decay", self.decay, low=0, low_open=True, high=1)
        check_number("min_factor", self.min_factor, low=0, high=1)

    def __call__(self, step: float, total: int | None = None) -> float:
        total = _need_total(self, total)
        length = self.decay * total
        start = total - length
        if step <= start:
            return 1.0
        progress = min(step - start, length) / length
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


@dataclass(frozen=True)
class Polynomial(Schedule):
    """``end + (1 - end) * (1 - t / total) ** power``: polynomial decay to ``end_factor``.

    Example:
        >>> Polynomial(power=2.0)(5, 10)
        0.25
    """

    power: float = 1.0
    end_factor: float = 0.0
    min_lr: float | tuple[float, ...] | None = None
    needs_total: ClassVar[bool] = True
    floor_field: ClassVar[str | None] = "end_factor"

    def __post_init__(self) -> None:
        check_number("power", self.power, low=0, low_open=True)
        check_number("end_factor", self.end_factor, low=0, high=1)
        _check_min_lr(self)

    def __call__(self, step: float, total: int | None = None) -> float:
        self._relative()
        total = _need_total(self, total)
        remaining = 1.0 - min(step, total) / total
        return self.end_factor + (1.0 - self.end_factor) * remaining**self.power


@dataclass(frozen=True)
class Exponential(Schedule):
    """``gamma ** t``, as ``torch.optim.lr_scheduler.ExponentialLR``.

    Example:
        >>> Exponential(gamma=0.5)(3)
        0.125
    """

    gamma: float = 0.99

    def __post_init__(self) -> None:
        check_number("gamma", self.gamma, low=0, low_open=True, high=1)

    def __call__(self, step: float, total: int | None = None) -> float:
        return self.gamma**step


@dataclass(frozen=True)
class Step(Schedule):
    """``gamma ** (t // step_size)``, as ``torch.optim.lr_scheduler.StepLR``.

    Example:
        >>> Step(step_size=2, gamma=0.5)(5)
        0.25
    """

    step_size: int = 1
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_int("step_size", self.step_size, minimum=1)
        check_number("gamma", self.gamma, low=0, high=1)

    def __call__(self, step: float, total: int | None = None) -> float:
        return self.gamma ** (step // self.step_size)


@dataclass(frozen=True)
class MultiStep(Schedule):
    """Multiply by ``gamma`` at every milestone, as ``torch.optim.lr_scheduler.MultiStepLR``.

    Example:
        >>> [MultiStep(milestones=(2, 4), gamma=0.5)(t) for t in range(6)]
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """

    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        milestones = tuple(self.milestones)
        if not milestones:
            raise ValueError("`milestones` must list at least one step, but got milestones=()")
        for i, value in enumerate(milestones):
            check_int(f"milestones[{i}]", value, minimum=1)
        if list(milestones) != sorted(set(milestones)):
            raise ValueError(
                f"`milestones` must be strictly increasing, but got milestones={milestones!r}"
            )
        object.__setattr__(self, "milestones", milestones)
        check_number("gamma", self.gamma, low=0, high=1)

    def __call__(self, step: float, total: int | None = None) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, step)


@dataclass(frozen=True)
class Cyclic(Schedule):
    """Smith's cyclical LR between ``base_factor`` and 1.0 (the peak), as torch's ``CyclicLR``.

    With ``base_factor = base_lr / max_lr`` (or ``min_lr=base_lr``, shared or per group) and
    the group's peak LR equal to ``max_lr``, the values equal
    ``torch.optim.lr_scheduler.CyclicLR(base_lr, max_lr, step_size_up, step_size_down, mode,
    gamma)``. Like torch, a cycle starts at the base LR.

    Args:
        step_size_up: steps from base to peak (> 0).
        step_size_down: steps from peak to base (default: ``step_size_up``).
        mode: ``triangular`` (constant amplitude), ``triangular2`` (halved every cycle) or
            ``exp_range`` (scaled by ``gamma ** step``).
        gamma: the ``exp_range`` decay per step, in (0, 1].
        base_factor: the lower bound as a fraction of the peak, in [0, 1].
        min_lr: or the lower bound as an absolute LR (torch's ``base_lr``), shared or per group.

    Example:
        >>> cyclic = Cyclic(step_size_up=2, base_factor=0.5)
        >>> [cyclic(t) for t in range(5)]
        [0.5, 0.75, 1.0, 0.75, 0.5]
    """

    step_size_up: int = 2000
    step_size_down: int | None = None
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    gamma: float = 1.0
    base_factor: float = 0.1
    min_lr: float | tuple[float, ...] | None = None
    cycles_momentum: ClassVar[bool] = True
    default_momentum: ClassVar[tuple[float, float]] = (0.8, 0.9)
    floor_field: ClassVar[str | None] = "base_factor"

    def __post_init__(self) -> None:
        check_int("step_size_up", self.step_size_up, minimum=1)
        check_optional(check_int, "step_size_down", self.step_size_down, minimum=1)
        check_choice("mode", self.mode, CYCLIC_MODES)
        check_number("gamma", self.gamma, low=0, low_open=True, high=1)
        check_number(
            "base_factor",
            self.base_factor,
            low=0,
            high=1,
            what="a number (base_lr / max_lr; max_lr must be >= base_lr)",
        )
        if self.min_lr is not None:
            object.__setattr__(self, "base_factor", 0.0)
            _check_min_lr(self)

    def _height(self, step: float) -> float:
        up = float(self.step_size_up)
        down = float(self.step_size_down) if self.step_size_down is not None else up
        size = up + down
        ratio = up / size
        cycle = math.floor(1 + step / size)
        x = 1.0 + step / size - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        if self.mode == "triangular2":
            return scale * (1 / (2.0 ** (cycle - 1)))
        if self.mode == "exp_range":
            return scale * self.gamma**step
        return scale

    def __call__(self, step: float, total: int | None = None) -> float:
        self._relative()
        return self.base_factor + (1.0 - self.base_factor) * self._height(step)

    def momentum(
        self, step: float, total: int | None, base_momentum: float, max_momentum: float
    ) -> float:
        """Momentum moves opposite to the LR, from ``max_momentum`` down to ``base_momentum``.

        Example:
            >>> round(Cyclic(step_size_up=2).momentum(2, None, 0.8, 0.9), 6)
            0.8
        """
        return max_momentum - (max_momentum - base_momentum) * self._height(step)


@dataclass(frozen=True)
class CosineRestarts(Schedule):
    """Cosine annealing with warm restarts (SGDR), as torch's and timm's cosine schedulers.

    Cycle ``i`` lasts ``period * period_mult ** i`` steps and anneals from ``decay ** i`` down to
    ``min_factor``; after ``cycle_limit`` cycles the LR stays at the floor. ``k_decay`` bends the
    curve as in timm (``cos(pi * t**k / T**k)``).

    Equals ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0=period, T_mult,
    eta_min=min_lr)`` for integer ``period_mult``, and timm's ``CosineLRScheduler(
    t_initial=period, cycle_mul=period_mult, cycle_decay=decay, cycle_limit, k_decay,
    lr_min=min_lr)``. The cycle is found exactly (timm's float logarithm can put a step on the
    wrong side of a restart; we correct it). ``cycle_limit`` defaults to None (unlimited
    restarts), as torch's ``CosineAnnealingWarmRestarts`` whose name this schedule carries;
    timm's ``CosineLRScheduler`` defaults to ``cycle_limit=1`` (a single cosine, what
    :class:`Cosine` is): pass ``cycle_limit`` explicitly to match a timm configuration.

    Args:
        period: length of the first cycle in steps (> 0).
        period_mult: each cycle is this many times longer than the one before (>= 1).
        min_factor: the floor as a fraction of the peak, in [0, 1].
        min_lr: or the floor as an absolute LR (torch's ``eta_min``, timm's ``lr_min``), shared
            or one per param group.
        decay: the peak of cycle ``i`` is ``decay ** i``, in (0, 1].
        cycle_limit: number of cycles before staying at the floor (None: unlimited).
        k_decay: timm's k-decay exponent (> 0).

    Example:
        >>> restarts = CosineRestarts(period=2, period_mult=2, decay=0.5)
        >>> [round(restarts(t), 4) for t in range(7)]
        [1.0, 0.5, 0.5, 0.4268, 0.25, 0.0732, 0.25]
    """

    period: int = 1
    period_mult: float = 1.0
    min_factor: float = 0.0
    decay: float = 1.0
    cycle_limit: int | None = None
    k_decay: float = 1.0
    min_lr: float | tuple[float, ...] | None = None
    floor_field: ClassVar[str | None] = "min_factor"

    def __post_init__(self) -> None:
        check_int("period", self.period, minimum=1)
        check_number("period_mult", self.period_mult, low=1)
        check_number("min_factor", self.min_factor, low=0, high=1)
        check_number("decay", self.decay, low=0, low_open=True, high=1)
        check_optional(check_int, "cycle_limit", self.cycle_limit, minimum=1)
        check_number("k_decay", self.k_decay, low=0, low_open=True)
        _check_min_lr(self)

    def _cycle_start(self, i: int) -> float:
        m = self.period_mult
        return (1 - m**i) / (1 - m) * self.period

    def cycle(self, step: float) -> tuple[int, float, float]:
        """``(cycle index, step within the cycle, cycle length)`` at ``step``.

        Example:
            >>> CosineRestarts(period=3, period_mult=2).cycle(10)
            (2, 1.0, 12.0)
        """
        m = self.period_mult
        if m == 1:
            i = int(step // self.period)
            return i, step - self.period * i, float(self.period)
        i = max(0, math.floor(math.log(1 - step / self.period * (1 - m), m)))
        while i > 0 and self._cycle_start(i) > step:
            i -= 1
        while self._cycle_start(i + 1) <= step:
            i += 1
        return i, step - self._cycle_start(i), float(m**i * self.period)

    def __call__(self, step: float, total: int | None = None) -> float:
        self._relative()
        i, t_curr, t_i = self.cycle(step)
        if self.cycle_limit is not None and i >= self.cycle_limit:
            return self.min_factor
        peak = self.decay**i
        k = self.k_decay
        cos = math.cos(math.pi * t_curr**k / t_i**k)
        return self.min_factor + 0.5 * (peak - self.min_factor) * (1 + cos)


@dataclass(frozen=True)
class OneCycle(Schedule):
    """The one-cycle policy, with the same phases and values as torch's ``OneCycleLR``.

    Two phases (up to the peak over ``pct_start`` of the run, then down to
    ``1 / (div_factor * final_div_factor)``) or, with ``three_phase``, up, back down to
    ``1 / div_factor`` and then the final annihilation. Multipliers are of the peak
    (torch's ``max_lr``): the run starts at ``1 / div_factor``. Past ``total`` the last value
    is held (torch raises).

    Args:
        pct_start: fraction of the run spent going up, in (0, 1) (below 0.5 for three phases).
        div_factor: the start LR is ``peak / div_factor`` (>= 1).
        final_div_factor: the last LR is ``start / final_div_factor`` (>= 1).
        three_phase: use torch's three-phase variant.
        anneal: ``"cos"`` or ``"linear"``.

    Example:
        >>> one = OneCycle(pct_start=0.5, div_factor=10, final_div_factor=10)
        >>> [round(one(t, 5), 4) for t in range(5)]
        [0.1, 0.775, 0.9055, 0.352, 0.01]
    """

    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    anneal: Literal["cos", "linear"] = "cos"
    needs_total: ClassVar[bool] = True
    cycles_momentum: ClassVar[bool] = True

    def __post_init__(self) -> None:
        limit = 0.5 if self.three_phase else 1.0
        pct = check_number("pct_start", self.pct_start)
        if not 0 < pct < limit:
            raise ValueError(
                f"`pct_start` must be in (0, {limit}){' with three_phase=True' * self.three_phase}"
                f", but got pct_start={self.pct_start!r}"
            )
        check_number("div_factor", self.div_factor, low=1)
        check_number("final_div_factor", self.final_div_factor, low=1)
        check_choice("anneal", self.anneal, ANNEAL_MODES)

    def _phase(self, step: float, total: int) -> tuple[int, float]:
        # The same phase boundaries as torch's OneCycleLR, including its float end steps.
        if self.three_phase:
            ends = (
                float(self.pct_start * total) - 1,
                float(2 * self.pct_start * total) - 2,
                total - 1,
            )
        else:
            ends = (float(self.pct_start * total) - 1, total - 1)
        start = 0.0
        for i, end in enumerate(ends):
            if step <= end or i == len(ends) - 1:
                # torch divides by zero for a phase of no length (pct_start * total == 1) and
                # raises past the end; here such a phase is over and the last value is held
                return i, min(1.0, (step - start) / (end - start)) if end > start else 1.0
            start = end
        raise AssertionError("unreachable")  # pragma: no cover

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def __call__(self, step: float, total: int | None = None) -> float:
        total = _need_total(self, total)
        low = 1.0 / self.div_factor
        points = (
            ((low, 1.0), (1.0, low), (low, low / self.final_div_factor))
            if self.three_phase
            else ((low, 1.0), (1.0, low / self.final_div_factor))
        )
        phase, pct = self._phase(step, total)
        return self._anneal(*points[phase], pct)

    def momentum(
        self, step: float, total: int | None, base_momentum: float, max_momentum: float
    ) -> float:
        """Momentum: ``max -> base`` while the LR rises, back to ``max`` while it falls.

        Example:
            >>> OneCycle(pct_start=0.5).momentum(0, 10, 0.85, 0.95)
            0.95
        """
        total = _need_total(self, total)
        hi, lo = max_momentum, base_momentum
        points = ((hi, lo), (lo, hi), (hi, hi)) if self.three_phase else ((hi, lo), (lo, hi))
        phase, pct = self._phase(step, total)
        return self._anneal(*points[phase], pct)


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "cosine": Cosine,
    "linear": Linear,
    "stable_decay": StableDecay,
    "polynomial": Polynomial,
    "exponential": Exponential,
    "step": Step,
    "multistep": MultiStep,
    "cyclic": Cyclic,
    "cosine_restarts": CosineRestarts,
    "one_cycle": OneCycle,
}

# Arguments without a sensible default: asked for by name when missing.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "step": ("step_size",),
    "multistep": ("milestones",),
    "cosine_restarts": ("period",),
}


#: torch's and timm's names of the absolute floor, accepted for ``min_lr``.
MIN_LR_ALIASES: dict[str, str] = {"eta_min": "min_lr", "lr_min": "min_lr"}


def make_schedule(name: str, **kwargs: Any) -> Schedule:
    """The main schedule called ``name`` (a key of :data:`SCHEDULES`) with ``kwargs``.

    torch's ``eta_min`` and timm's ``lr_min`` are accepted as names of ``min_lr`` (the
    absolute floor) for the schedules that have a floor.

    Example:
        >>> make_schedule("cosine", min_factor=0.1)
        Cosine(min_factor=0.1, min_lr=None)
        >>> make_schedule("cosine_restarts", period=10, eta_min=1e-5).min_lr
        1e-05
    """
    if not isinstance(name, str):
        raise TypeError(f"`schedule` must be a name or a Schedule, but got schedule={name!r}")
    cls = SCHEDULES.get(name)
    if cls is None:
        raise ValueError(f"`schedule` must be one of {list(SCHEDULES)}, but got schedule={name!r}")
    fields = [f.name for f in dataclasses.fields(cls)]
    for alias, field in MIN_LR_ALIASES.items():
        if alias in kwargs and field in fields:
            if field in kwargs:
                raise ValueError(f"give `{alias}` or `{field}` (the same floor), not both")
            kwargs[field] = kwargs.pop(alias)
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise TypeError(
            f"schedule={name!r} got unexpected argument(s) {unknown}; it accepts {fields}"
        )
    missing = [arg for arg in _REQUIRED.get(name, ()) if arg not in kwargs]
    if missing:
        raise ValueError(f"schedule={name!r} needs {missing}; it accepts {fields}")
    if "milestones" in kwargs and isinstance(kwargs["milestones"], Sequence):
        kwargs["milestones"] = tuple(kwargs["milestones"])
    return cls(**kwargs)


def schedule_factor(
    step: float,
    schedule: Schedule,
    total: int | None = None,
    warmup_steps: float = 0,
    warmup_start_factor: float = 0.0,
    warmup_mode: Literal["linear", "cosine", "exponential"] = "linear",
) -> float:
    """Warmup for ``warmup_steps``, then ``schedule`` over the remaining ``total - warmup_steps``.

    This is timm's ``warmup_prefix=True`` (the main schedule starts after the warmup and its
    length excludes it), so the peak is reached exactly. timm's default
    ``warmup_prefix=False`` overlays the warmup on the first steps of the main schedule and
    never reaches the peak; we deliberately do not reproduce that.

    Example:
        >>> schedule_factor(3, Cosine(), total=10, warmup_steps=3)
        1.0
    """
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps, warmup_start_factor, warmup_mode)
    main_total = None if total is None else total - warmup_steps
    return schedule(step - warmup_steps, main_total)
