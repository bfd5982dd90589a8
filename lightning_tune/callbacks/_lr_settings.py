"""Argument checks of :class:`~lightning_tune.callbacks.LRSchedule` and its presets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_tune._validation import check_bool, check_choice, check_int, check_number, fail
from lightning_tune.schedules import WARMUP_MODES, Schedule, make_schedule

INTERVALS: tuple[str, ...] = ("step", "epoch")


def build_schedule(schedule: str | Schedule, kwargs: dict[str, Any]) -> Schedule:
    """The main schedule: a configured :class:`Schedule`, or a name with its arguments."""
    if isinstance(schedule, Schedule):
        if kwargs:
            raise TypeError(
                f"schedule arguments {sorted(kwargs)} are only accepted with a "
                f"schedule name; {schedule!r} is already configured"
            )
        return schedule
    return make_schedule(schedule, **kwargs)


def is_number(value: Any) -> bool:
    """A real number (``int``/``float``, not ``bool``)."""
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_warmup(
    warmup: Any,
    mode: Any,
    start_factor: Any,
    start_lr: Any,
    unit: Any,
    interval: Any,
) -> None:
    """The warmup arguments, together (a start without a warmup is refused)."""
    if not is_number(warmup):
        raise TypeError(f"`warmup` must be an int or a float, but got warmup={warmup!r}")
    if warmup < 0 or (isinstance(warmup, float) and not warmup < 1):
        raise ValueError(
            "`warmup` must be an int >= 0 (a length) or a float in (0, 1) (a fraction of "
            f"the run), but got warmup={warmup!r}"
        )
    check_choice("warmup_mode", mode, WARMUP_MODES)
    if start_factor is not None and start_lr is not None:
        raise ValueError(
            "give `warmup_start_factor` or `warmup_start_lr`, not both, but got "
            f"warmup_start_factor={start_factor!r} and warmup_start_lr={start_lr!r}"
        )
    if start_factor is not None:
        check_number("warmup_start_factor", start_factor, low=0, high=1)
    if start_lr is not None:
        check_number("warmup_start_lr", start_lr, low=0)
    if not warmup and (start_factor is not None or start_lr is not None):
        name, value = (
            ("warmup_start_factor", start_factor)
            if start_factor is not None
            else ("warmup_start_lr", start_lr)
        )
        raise ValueError(
            f"`{name}={value!r}` is where a warmup starts, but warmup=0 (no warmup): pass "
            f"`warmup` > 0 or drop `{name}`"
        )
    start = start_lr if start_lr is not None else (start_factor or 0.0)
    if mode == "exponential" and warmup and not start > 0:
        raise ValueError(
            "warmup_mode='exponential' multiplies up from a positive start: pass "
            "`warmup_start_factor` > 0 (e.g. 0.01) or `warmup_start_lr` > 0, but got "
            f"warmup_start_factor={start_factor!r}, warmup_start_lr={start_lr!r}"
        )
    if unit is not None:
        check_choice("warmup_unit", unit, INTERVALS)
    check_choice("interval", interval, INTERVALS)
    if interval == "epoch" and unit == "step":
        raise ValueError(
            "warmup_unit='step' needs interval='step' (an epoch-wise schedule changes the LR "
            f"once per epoch), but got interval={interval!r}"
        )


def check_lrs(name: str, value: Any) -> float | tuple[float, ...] | None:
    """None, an LR > 0, or a non-empty list of them (one per param group, as a tuple)."""
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            fail(name, "a float or a non-empty list of floats (one per param group)", value)
        return tuple(
            check_number(f"{name}[{i}]", v, low=0, low_open=True) for i, v in enumerate(value)
        )
    if not is_number(value):
        fail(name, "a number, a list of numbers (one per param group) or None", value, TypeError)
    return check_number(name, value, low=0, low_open=True)


def pick(values: float | tuple[float, ...], name: str, index: int) -> float:
    """The value for param group ``index`` of a shared or per-group setting."""
    if not isinstance(values, tuple):
        return values
    if index >= len(values):
        raise ValueError(
            f"`{name}` has {len(values)} entries (one per param group), but param group {index} "
            "needs one (LayerFreezing adds groups during training: give one shared float then)"
        )
    return values[index]


def check_momentum(
    schedule: Schedule, cycle: Any, base: float | None, top: float | None
) -> tuple[float, float]:
    """``(base_momentum, max_momentum)`` with the schedule's defaults filled in."""
    check_bool("cycle_momentum", cycle)
    if cycle and not schedule.cycles_momentum:
        raise ValueError(
            "cycle_momentum=True needs a schedule that cycles the momentum ('cyclic' or "
            f"'one_cycle'), but got schedule={type(schedule).__name__}"
        )
    default_base, default_max = schedule.default_momentum
    base = check_number(
        "base_momentum", default_base if base is None else base, low=0, high=1, high_open=True
    )
    top = check_number(
        "max_momentum", default_max if top is None else top, low=0, high=1, high_open=True
    )
    if base > top:
        raise ValueError(
            f"`base_momentum` must be <= `max_momentum`, but got base_momentum={base} and "
            f"max_momentum={top}"
        )
    return base, top


def check_optimizers(optimizers: Any) -> tuple[int, ...] | None:
    """None (all optimizers) or a non-empty tuple of optimizer indices."""
    if optimizers is None:
        return None
    chosen = tuple(optimizers)
    if not chosen or not all(is_number(i) and isinstance(i, int) and i >= 0 for i in chosen):
        raise ValueError(
            "`optimizers` must be None (all) or a non-empty list of optimizer indices "
            f"(ints >= 0), but got optimizers={chosen!r}"
        )
    return chosen


def check_total_steps(total_steps: Any) -> int | None:
    """None or a run length > 0."""
    if total_steps is None:
        return None
    return check_int("total_steps", total_steps, minimum=1)


def start_factor(start_lr: float | None, peak: float) -> float | None:
    """The warmup's start as a fraction of ``peak`` for an absolute ``warmup_start_lr``.

    Example:
        >>> start_factor(0.5, 2.0), start_factor(None, 2.0)
        (0.25, None)
    """
    if start_lr is None:
        return None
    return start_lr / peak if peak else 0.0


def check_start_lr(start_lr: float, peak: float, index: int) -> None:
    """A warmup must rise: ``warmup_start_lr`` above a group's peak is refused.

    Example:
        >>> check_start_lr(0.2, 0.1, 0)
        Traceback (most recent call last):
        ...
        ValueError: `warmup_start_lr=0.2` is above the peak LR of param group 0 (0.1), so the warmup would decay: lower `warmup_start_lr` (or use `warmup_start_factor`, a fraction of each group's peak)
    """
    if start_lr > peak:
        raise ValueError(
            f"`warmup_start_lr={start_lr!r}` is above the peak LR of param group {index} "
            f"({peak!r}), so the warmup would decay: lower `warmup_start_lr` (or use "
            "`warmup_start_factor`, a fraction of each group's peak)"
        )


def group_momentum(group: dict[str, Any]) -> float:
    """A param group's momentum: Adam's ``betas[0]`` or SGD's ``momentum``.

    Example:
        >>> group_momentum({"betas": (0.9, 0.999)}), group_momentum({"momentum": 0.8})
        (0.9, 0.8)
    """
    return group["betas"][0] if "betas" in group else group["momentum"]


def set_momentum(group: dict[str, Any], momentum: float) -> None:
    """Set a param group's momentum (Adam's ``betas[0]`` or SGD's ``momentum``).

    Example:
        >>> group = {"betas": (0.9, 0.999)}
        >>> set_momentum(group, 0.85)
        >>> group["betas"]
        (0.85, 0.999)
    """
    if "betas" in group:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum
