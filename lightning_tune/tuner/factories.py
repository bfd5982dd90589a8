"""Pruners and samplers by name, with the checks Optuna leaves out.

Default pairings (from Optuna's own benchmarks, Ozaki et al., "Hyperparameter Search Space
Pruning ..." / the Optuna paper): **TPE + Hyperband** is the best general pairing, because
Hyperband's brackets give TPE completed trials at several budgets to model from early on;
**random + median** is the robust pairing for small budgets or for comparisons, because random
sampling gives the median pruner an unbiased population to compare against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    SuccessiveHalvingPruner,
)
from optuna.samplers import BaseSampler, GPSampler, QMCSampler, RandomSampler, TPESampler

__all__ = ["PRUNERS", "SAMPLERS", "make_pruner", "make_sampler"]


def _int_at_least(pruner: str, key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"pruner {pruner!r}: `{key}` must be an int >= {minimum}, but got {key}={value!r}"
        )


def _median(max_resource: int | None, **kwargs: Any) -> BasePruner:
    return MedianPruner(**kwargs)


def _hyperband(max_resource: int | None, **kwargs: Any) -> BasePruner:
    kwargs.setdefault("min_resource", 1)
    kwargs.setdefault("max_resource", max_resource if max_resource is not None else "auto")
    kwargs.setdefault("reduction_factor", 3)
    _int_at_least("hyperband", "min_resource", kwargs["min_resource"], 1)
    _int_at_least("hyperband", "reduction_factor", kwargs["reduction_factor"], 2)
    if kwargs["max_resource"] != "auto":
        _int_at_least("hyperband", "max_resource", kwargs["max_resource"], 1)
        if kwargs["max_resource"] <= kwargs["min_resource"]:
            raise ValueError(
                "pruner 'hyperband': `max_resource` must be > `min_resource`, but got "
                f"max_resource={kwargs['max_resource']}, min_resource={kwargs['min_resource']} "
                "(raise max_epochs, lower min_resource or use pruner='none')"
            )
    return HyperbandPruner(**kwargs)


def _successive_halving(max_resource: int | None, **kwargs: Any) -> BasePruner:
    kwargs.setdefault("min_resource", 1)
    kwargs.setdefault("reduction_factor", 3)
    if kwargs["min_resource"] != "auto":
        _int_at_least("successive_halving", "min_resource", kwargs["min_resource"], 1)
    _int_at_least("successive_halving", "reduction_factor", kwargs["reduction_factor"], 2)
    return SuccessiveHalvingPruner(**kwargs)


def _none(max_resource: int | None, **kwargs: Any) -> BasePruner:
    return NopPruner(**kwargs)


PRUNERS: dict[str, Callable[..., BasePruner]] = {
    "median": _median,
    "hyperband": _hyperband,
    "successive_halving": _successive_halving,
    "none": _none,
}

SAMPLERS: dict[str, type[BaseSampler]] = {
    "tpe": TPESampler,
    "random": RandomSampler,
    "qmc": QMCSampler,
    "gp": GPSampler,
}


def make_pruner(
    pruner: str | BasePruner | None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    max_resource: int | None = None,
) -> BasePruner:
    """A pruner from its name (``"median"``, ``"hyperband"``, ``"successive_halving"``,
    ``"none"``) and keyword arguments, or an Optuna ``BasePruner`` as is.

    ``max_resource`` (validations per trial, i.e. ``max_epochs`` when validating every epoch) is
    Hyperband's ``max_resource`` unless ``kwargs`` gives one.

    Example:
        >>> make_pruner("hyperband", max_resource=9)  # doctest: +ELLIPSIS
        <optuna.pruners._hyperband.HyperbandPruner object at ...>
        >>> make_pruner("patience")
        Traceback (most recent call last):
        ...
        ValueError: `pruner` must be one of ['hyperband', 'median', 'none', 'successive_halving'] or an optuna BasePruner, but got pruner='patience'
    """
    if isinstance(pruner, BasePruner):
        if kwargs:
            raise ValueError("`pruner_kwargs` can only be used with a pruner name")
        return pruner
    if pruner is None:
        pruner = "none"
    if not isinstance(pruner, str) or pruner not in PRUNERS:
        raise ValueError(
            f"`pruner` must be one of {sorted(PRUNERS)} or an optuna BasePruner, but got "
            f"pruner={pruner!r}"
        )
    try:
        return PRUNERS[pruner](max_resource, **dict(kwargs or {}))
    except TypeError as err:
        raise TypeError(
            f"pruner {pruner!r}: bad `pruner_kwargs` {dict(kwargs or {})}: {err}"
        ) from None


def make_sampler(
    sampler: str | BaseSampler | None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
) -> BaseSampler:
    """A sampler from its name (``"tpe"``, ``"random"``, ``"qmc"``, ``"gp"``), seeded with
    ``seed``, or an Optuna ``BaseSampler`` as is.

    Example:
        >>> type(make_sampler("random", seed=0)).__name__
        'RandomSampler'
        >>> make_sampler("grid")
        Traceback (most recent call last):
        ...
        ValueError: `sampler` must be one of ['gp', 'qmc', 'random', 'tpe'] or an optuna BaseSampler, but got sampler='grid'
    """
    if isinstance(sampler, BaseSampler):
        if kwargs:
            raise ValueError("`sampler_kwargs` can only be used with a sampler name")
        return sampler
    if sampler is None:
        sampler = "tpe"
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(
            f"`sampler` must be one of {sorted(SAMPLERS)} or an optuna BaseSampler, but got "
            f"sampler={sampler!r}"
        )
    options = dict(kwargs or {})
    options.setdefault("seed", seed)
    try:
        return SAMPLERS[sampler](**options)
    except TypeError as err:
        raise TypeError(
            f"sampler {sampler!r}: bad `sampler_kwargs` {dict(kwargs or {})}: {err}"
        ) from None
