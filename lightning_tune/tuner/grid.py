"""Grid search built from the search space's specs (``sampler="grid"``).

Each spec gives its list of values:

* ``Categorical``: the choices as listed; ``PowerOfTwo``: its powers; ``Fixed``: not searched.
* ``Int``: every value of the range by ``step``, or ``grid_points`` evenly spaced values of it
  (log-spaced with ``log=True``, rounded to the step, duplicates dropped) when the range has
  more; a range of more than :data:`MAX_INT_VALUES` values needs ``grid_points`` or a larger
  ``step``.
* ``Float``: ``grid_points`` values from ``low`` to ``high`` (both included), evenly spaced,
  or log-spaced with ``log=True`` (``1e-4, 1e-3, 1e-2, 1e-1`` for 4 points); without
  ``grid_points`` the values of its ``step``. ``grid_points`` comes from the spec, else from
  ``sampler_kwargs={"grid_points": n}``; a float with neither ``grid_points`` nor ``step`` is an
  error.

``jitter`` (``0 <= jitter <= 1``, default 0) moves each float grid point without a ``step`` by a
uniform random offset of at most ``jitter / 2`` of the spacing between points either way (in the
log domain for log specs), clipped to ``[low, high]``: with ``jitter=1`` each point can land
anywhere in its own cell, so repeated sweeps do not all probe the same round numbers. The
offsets are drawn once per parameter from ``seed`` (the tuner's seed) and the parameter's name,
so every worker process builds the same grid.

The grid runs on Optuna's ``GridSampler``: trial ``k`` takes configuration ``k`` of the grid
shuffled with ``seed``, so workers sharing a study never run a configuration twice, and a grid
larger than the trial budget is sampled in a spread-out order.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.samplers import GridSampler
from optuna.trial import FrozenTrial, TrialState

from lightning_tune._validation import check_int, check_number, check_optional
from lightning_tune.tuner.space import Categorical, Fixed, Float, Int, PowerOfTwo, SearchSpace

__all__ = [
    "MAX_INT_VALUES",
    "SpaceGridSampler",
    "announce_grid",
    "grid_sampler",
    "grid_search_space",
    "grid_slots_left",
    "grid_values",
]

#: The most values an ``Int`` spec without ``grid_points`` contributes to a grid.
MAX_INT_VALUES = 64


def _tidy(value: float) -> float:
    return float(f"{value:.12g}")


def _spaced(low: float, high: float, n: int, log: bool) -> np.ndarray:
    if log:
        return np.exp(np.linspace(math.log(low), math.log(high), n))
    return np.linspace(low, high, n)


def _float_values(
    name: str, spec: Float, grid_points: int | None, jitter: float, rng: np.random.Generator
) -> list[float]:
    n = spec.grid_points or (None if spec.step is not None else grid_points)
    if n is None and spec.step is None:
        raise ValueError(
            f"search space `{name}`: a float under sampler='grid' needs `grid_points` (in its "
            f"spec or in sampler_kwargs) or `step`, but got {spec!r}"
        )
    if n is None:  # the step's lattice, as Optuna's FloatDistribution(step=...) has it
        count = math.floor((spec.high - spec.low) / spec.step + 1e-9) + 1
        return [_tidy(spec.low + k * spec.step) for k in range(count)]
    points = _spaced(spec.low, spec.high, n, spec.log)
    if spec.step is not None:
        lattice = spec.low + np.round((points - spec.low) / spec.step) * spec.step
        return sorted({_tidy(min(v, spec.high)) for v in lattice})
    if jitter > 0:
        lo, hi = (math.log(spec.low), math.log(spec.high)) if spec.log else (spec.low, spec.high)
        spacing = (hi - lo) / (n - 1)
        moved = np.linspace(lo, hi, n) + rng.uniform(-jitter / 2, jitter / 2, n) * spacing
        moved = np.clip(moved, lo, hi)
        points = np.clip(np.exp(moved) if spec.log else moved, spec.low, spec.high)
    values = [_tidy(v) for v in points]
    if jitter == 0:  # the ends exactly as written
        values[0], values[-1] = float(spec.low), float(spec.high)
    return values


def _int_values(name: str, spec: Int, grid_points: int | None) -> list[int]:
    values = list(range(spec.low, spec.high + 1, spec.step))
    n = spec.grid_points or grid_points
    if n is None:
        if len(values) > MAX_INT_VALUES:
            raise ValueError(
                f"search space `{name}`: {len(values)} int values is too many for a grid "
                f"(more than {MAX_INT_VALUES}): give it `grid_points` or a larger `step`"
            )
        return values
    if len(values) <= n:
        return values
    points = _spaced(spec.low, spec.high, n, spec.log)
    snapped = spec.low + np.round((points - spec.low) / spec.step).astype(int) * spec.step
    return sorted({int(min(v, spec.high)) for v in snapped})


def grid_values(
    name: str,
    spec: Any,
    *,
    grid_points: int | None = None,
    jitter: float = 0.0,
    seed: int = 0,
) -> list[Any] | None:
    """The grid values of one parameter spec (None for a ``Fixed`` value, which is not searched).

    Example:
        >>> grid_values("lr", Float(1e-4, 1e-1, log=True, grid_points=4))
        [0.0001, 0.001, 0.01, 0.1]
        >>> grid_values("warmup", Int(0, 10, step=5)), grid_values("opt", Categorical(["a", "b"]))
        ([0, 5, 10], ['a', 'b'])
        >>> grid_values("dropout", Float(0.0, 0.5))
        Traceback (most recent call last):
        ...
        ValueError: search space `dropout`: a float under sampler='grid' needs `grid_points` (in its spec or in sampler_kwargs) or `step`, but got Float(low=0.0, high=0.5, log=False, step=None, grid_points=None)
    """
    if isinstance(spec, Fixed):
        return None
    if isinstance(spec, Categorical):
        return list(spec.choices)
    if isinstance(spec, PowerOfTwo):
        return list(spec.values)
    if isinstance(spec, Int):
        return _int_values(name, spec, grid_points)
    if isinstance(spec, Float):
        rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])
        return _float_values(name, spec, grid_points, jitter, rng)
    raise TypeError(f"search space `{name}`: no grid for spec {spec!r}")


def _check_options(grid_points: Any, jitter: Any) -> None:
    check_optional(check_int, "grid_points", grid_points, minimum=2)
    check_number("jitter", jitter, low=0, high=1)


def grid_search_space(
    space: SearchSpace | Mapping[str, Any] | None,
    *,
    grid_points: int | None = None,
    jitter: float = 0.0,
    seed: int = 0,
    values: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, list[Any]]:
    """The grid of a search space: ``{name: values}`` for every searched parameter.

    ``values`` (``GridSampler``'s own ``search_space`` argument) gives explicit value lists that
    replace those of the specs of the same names; with a ``suggest(trial)`` function as the
    search space it must list every parameter the function suggests.

    Example:
        >>> grid = grid_search_space({"lr": Float(1e-3, 1e-1, log=True), "opt": ["adamw", "sgd"],
        ...                           "model": "test_resnet"}, grid_points=3)
        >>> grid
        {'lr': [0.001, 0.01, 0.1], 'opt': ['adamw', 'sgd']}
    """
    _check_options(grid_points, jitter)
    explicit = {k: list(v) for k, v in (values or {}).items()}
    specs = None if space is None else SearchSpace.coerce(space).specs
    if specs is None:
        if not explicit:
            raise ValueError(
                "sampler 'grid' needs a search space of specs, or the values of every "
                "parameter in sampler_kwargs={'search_space': {name: [values]}}; a "
                "suggest(trial) function has no grid of its own"
            )
        return explicit
    unknown = sorted(set(explicit) - set(specs))
    if unknown:
        raise ValueError(
            f"sampler_kwargs `search_space` names {unknown}, which are not in the search "
            f"space {sorted(specs)}"
        )
    fixed = sorted(k for k in explicit if isinstance(specs[k], Fixed))
    if fixed:
        raise ValueError(
            f"sampler_kwargs `search_space` gives values for {fixed}, which are fixed in the "
            "search space (not searched): make them Categorical specs instead"
        )
    grid: dict[str, list[Any]] = {}
    for name, spec in specs.items():
        found = explicit.get(name) or grid_values(
            name, spec, grid_points=grid_points, jitter=jitter, seed=seed
        )
        if found is not None:
            grid[name] = found
    if not grid:
        raise ValueError(
            "sampler 'grid': the search space has only fixed values, nothing to search"
        )
    return grid


class SpaceGridSampler(GridSampler):
    """Optuna's ``GridSampler`` that also tells its grid, its size and what is left of it.

    Example:
        >>> sampler = SpaceGridSampler({"x": [1, 2], "y": ["a", "b", "c"]})
        >>> sampler.size, sampler.describe()
        (6, 'grid of 6 configurations (x: 2 values, y: 3 values)')
    """

    def __init__(self, search_space: Mapping[str, Sequence[Any]], seed: int | None = None) -> None:
        super().__init__(search_space, seed=seed)
        self.grid = {k: list(v) for k, v in search_space.items()}
        self.size = math.prod(len(v) for v in self.grid.values())

    def describe(self) -> str:
        """One line: the number of configurations and of values per parameter."""
        parts = ", ".join(f"{k}: {len(v)} values" for k, v in self.grid.items())
        return f"grid of {self.size} configurations ({parts})"

    def slots_left(self, trials: Sequence[FrozenTrial]) -> int:
        """Configurations no finished or running trial has taken (a running trial that has not
        suggested its parameters yet counts as taking one)."""
        names = sorted(self.grid)
        taken: set[tuple[Any, ...]] = set()
        unknown = 0
        for trial in trials:
            if trial.state == TrialState.WAITING:
                continue
            if all(n in trial.params for n in names):
                taken.add(tuple(trial.params[n] for n in names))
            elif trial.state == TrialState.RUNNING:
                unknown += 1
        return max(0, self.size - len(taken) - unknown)

    def check_budget(self, n_trials: int | None) -> str:
        """The line to print before the sweep; warns when ``n_trials`` cuts the grid."""
        if n_trials is not None and n_trials < self.size:
            warnings.warn(
                f"the grid has {self.size} configurations but n_trials={n_trials}: only "
                f"{n_trials} of them will run (a seeded shuffle of the grid); raise n_trials "
                "or lower grid_points to search it all",
                UserWarning,
                stacklevel=3,
            )
        return f"Grid search: {self.describe()}"


def grid_sampler(
    space: SearchSpace | Mapping[str, Any] | None,
    options: Mapping[str, Any],
    *,
    seed: int | None = None,
) -> SpaceGridSampler:
    """The :class:`SpaceGridSampler` for ``space`` and ``sampler_kwargs`` ``options``
    (``grid_points``, ``jitter``, ``search_space``, ``seed``).

    ``seed`` shuffles the grid and seeds the jitter; it must be the same in every process of a
    study (the tuner passes its own ``seed``, not the per-run sampler seed).

    Example:
        >>> grid_sampler({"n": Int(1, 3)}, {}, seed=0).grid
        {'n': [1, 2, 3]}
    """
    seed = options.get("seed", seed)
    grid = grid_search_space(
        space,
        grid_points=options.get("grid_points"),
        jitter=options.get("jitter", 0.0),
        seed=0 if seed is None else seed,
        values=options.get("search_space"),
    )
    return SpaceGridSampler(grid, seed=seed)


def grid_slots_left(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> int | None:
    """Configurations of ``study``'s grid that no trial has taken; None if it has no grid.

    Example:
        >>> grid_slots_left(optuna.create_study()) is None
        True
    """
    sampler = study.sampler
    if not isinstance(sampler, SpaceGridSampler):
        return None
    return sampler.slots_left(study.get_trials(deepcopy=False) if trials is None else trials)


def announce_grid(study: optuna.Study, n_trials: int | None, *, quiet: bool = False) -> None:
    """Before a sweep: print the size of ``study``'s grid (if it has one) and warn when
    ``n_trials`` will cut it.

    Example:
        >>> announce_grid(optuna.create_study(sampler=SpaceGridSampler({"x": [1, 2]})), 2)
        Grid search: grid of 2 configurations (x: 2 values)
    """
    if isinstance(study.sampler, SpaceGridSampler):
        line = study.sampler.check_budget(n_trials)
        if not quiet:
            print(line, flush=True)
