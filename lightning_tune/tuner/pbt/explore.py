"""Exploit and explore as pure functions of the search space, the scores and a seeded RNG."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_tune.tuner.pbt.options import PBTConfig
from lightning_tune.tuner.space import Categorical, Fixed, Float, Int, ParamSpec, PowerOfTwo

__all__ = ["explore", "perturb", "ranked", "resample", "split_quantiles"]


def _on_grid(spec: Float, value: float) -> float:
    if spec.step is None:
        return value
    k = round((value - spec.low) / spec.step)
    return min(spec.high, spec.low + k * spec.step)


def resample(spec: ParamSpec, rng: random.Random) -> Any:
    """A fresh value from ``spec``, drawn with ``rng`` (uniform, or log-uniform for log ranges).

    Example:
        >>> round(resample(Float(1e-4, 1e-1, log=True), random.Random(0)), 4)
        0.0341
    """
    if isinstance(spec, Float):
        if spec.log:
            value = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
        else:
            value = rng.uniform(spec.low, spec.high)
        return float(min(spec.high, max(spec.low, _on_grid(spec, value))))
    if isinstance(spec, Int):
        if spec.log:
            value = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high + 1)))
            return int(min(spec.high, max(spec.low, math.floor(value))))
        return rng.randrange(spec.low, spec.high + 1, spec.step)
    if isinstance(spec, Categorical):
        return rng.choice(list(spec.choices))
    if isinstance(spec, PowerOfTwo):
        return rng.choice(spec.values)
    return spec.value


def _neighbour(values: Sequence[Any], value: Any, rng: random.Random) -> tuple[Any, str]:
    index = list(values).index(value)
    shift = rng.choice((-1, 1))
    new = min(len(values) - 1, max(0, index + shift))
    return values[new], f"neighbour {shift:+d}"


def perturb(
    spec: ParamSpec, value: Any, rng: random.Random, factors: tuple[float, float] = (0.8, 1.2)
) -> tuple[Any, str]:
    """``value`` perturbed inside ``spec``: floats times one of ``factors`` (clipped to the
    range), ints / powers of two / categoricals moved to a neighbouring value. Returns the new
    value and how it was made.

    Example:
        >>> perturb(Float(0.0, 1.0), 0.5, random.Random(1))
        (0.4, 'x0.8')
        >>> perturb(Categorical(["a", "b", "c"]), "a", random.Random(0))
        ('b', 'neighbour +1')
    """
    if isinstance(spec, Float):
        factor = rng.choice(factors)
        new = _on_grid(spec, min(spec.high, max(spec.low, float(value) * factor)))
        return float(new), f"x{factor:g}"
    if isinstance(spec, Int):
        values = list(range(spec.low, spec.high + 1, spec.step))
        if value not in values:
            return resample(spec, rng), "resample"
        return _neighbour(values, value, rng)
    if isinstance(spec, (Categorical, PowerOfTwo)):
        values = list(spec.choices if isinstance(spec, Categorical) else spec.values)
        if value not in values:
            return resample(spec, rng), "resample"
        return _neighbour(values, value, rng)
    return value, "fixed"


def explore(
    specs: Mapping[str, ParamSpec],
    params: Mapping[str, Any],
    mutable: Sequence[str],
    rng: random.Random,
    config: PBTConfig,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """New hyperparameters from ``params``: each ``mutable`` one resampled with probability
    ``config.resample_probability``, else perturbed. Returns the params and the changes
    (``name -> {"from", "to", "how"}``).

    Example:
        >>> specs = {"lr": Float(1e-3, 1.0, log=True), "depth": Int(1, 4)}
        >>> new, changes = explore(specs, {"lr": 0.1, "depth": 2}, ["lr"], random.Random(3),
        ...                        PBTConfig(resample_probability=0.0))
        >>> new["depth"], changes["lr"]["how"] in ("x0.8", "x1.2")
        (2, True)
    """
    new = dict(params)
    changes: dict[str, dict[str, Any]] = {}
    for name in mutable:
        spec = specs[name]
        if isinstance(spec, Fixed):
            continue
        if rng.random() < config.resample_probability:
            value, how = resample(spec, rng), "resample"
        else:
            value, how = perturb(spec, params[name], rng, config.perturbation_factors)
        new[name] = value
        changes[name] = {"from": params[name], "to": value, "how": how}
    return new, changes


def ranked(scores: Mapping[int, float], direction: str) -> list[int]:
    """Members best first (ties: the lower member number first); NaN ranks last.

    Example:
        >>> ranked({0: 0.5, 1: 0.2, 2: float("nan")}, "minimize")
        [1, 0, 2]
    """

    def key(member: int) -> tuple[bool, float, int]:
        value = scores[member]
        bad = not math.isfinite(value) and not (
            value == -math.inf if direction == "minimize" else value == math.inf
        )
        return bad, value if direction == "minimize" else -value, member

    return sorted(scores, key=key)


def split_quantiles(order: Sequence[int], config: PBTConfig) -> tuple[list[int], list[int]]:
    """The top and bottom groups of members ranked best first (``config.quantile_size``).

    Example:
        >>> split_quantiles([3, 1, 0, 2], PBTConfig(quantile=0.25))
        ([3], [2])
    """
    size = config.quantile_size(len(order))
    if size == 0:
        return [], []
    return list(order[:size]), list(order[-size:])
