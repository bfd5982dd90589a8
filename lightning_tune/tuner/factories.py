"""Every Optuna sampler and pruner by name, with Optuna's own argument names.

``make_sampler("cmaes", {"sigma0": 0.5})`` is ``optuna.samplers.CmaEsSampler(sigma0=0.5,
seed=...)``: the keyword arguments are those of the Optuna class, so its documentation applies
as is, in Python and in a YAML config (``sampler: {name: cmaes, kwargs: {sigma0: 0.5}}``). An
unknown name lists the known ones; an argument the class does not take lists the ones it does
(read from the class signature, so the list never drifts from the installed Optuna). Two
arguments that take an object also take a name: ``independent_sampler`` (a sampler name, or
``{name, kwargs}``) and ``wrapped_pruner`` of ``"patient"`` (a pruner name, or ``{name, kwargs}``).

``"grid"`` builds Optuna's ``GridSampler`` from the search space's specs (see
:mod:`lightning_tune.tuner.grid`): it takes ``grid_points`` and ``jitter`` besides
``GridSampler``'s own ``search_space`` (explicit value lists that replace those of the specs)
and ``seed``.

Default pairings (from Optuna's own benchmarks, Ozaki et al., "Hyperparameter Search Space
Pruning ..." / the Optuna paper): **TPE + Hyperband** is the best general pairing, because
Hyperband's brackets give TPE completed trials at several budgets to model from early on;
**random + median** is the robust pairing for small budgets or for comparisons, because random
sampling gives the median pruner an unbiased population to compare against.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping
from typing import Any

from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    PatientPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
    ThresholdPruner,
    WilcoxonPruner,
)
from optuna.samplers import (
    BaseSampler,
    BruteForceSampler,
    CmaEsSampler,
    GPSampler,
    GridSampler,
    NSGAIIISampler,
    NSGAIISampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)

from lightning_tune._validation import check_int, prefixed

__all__ = [
    "MULTI_OBJECTIVE_SAMPLERS",
    "PRUNERS",
    "SAMPLERS",
    "accepted_kwargs",
    "make_pruner",
    "make_sampler",
]

#: Pruner names and the Optuna class each one builds.
PRUNERS: dict[str, type[BasePruner]] = {
    "hyperband": HyperbandPruner,
    "median": MedianPruner,
    "none": NopPruner,
    "patient": PatientPruner,
    "percentile": PercentilePruner,
    "successive_halving": SuccessiveHalvingPruner,
    "threshold": ThresholdPruner,
    "wilcoxon": WilcoxonPruner,
}

#: Sampler names and the Optuna class each one builds.
SAMPLERS: dict[str, type[BaseSampler]] = {
    "bruteforce": BruteForceSampler,
    "cmaes": CmaEsSampler,
    "gp": GPSampler,
    "grid": GridSampler,
    "nsga2": NSGAIISampler,
    "nsga3": NSGAIIISampler,
    "qmc": QMCSampler,
    "random": RandomSampler,
    "tpe": TPESampler,
}

#: Samplers that optimize several objectives at once (CMA-ES models a single objective).
MULTI_OBJECTIVE_SAMPLERS = tuple(sorted(set(SAMPLERS) - {"cmaes"}))

# Keyword arguments the grid adds to GridSampler's own (see lightning_tune.tuner.grid).
_GRID_OPTIONS = ("grid_points", "jitter")
# Packages a sampler imports only when it samples: checked when it is made, not mid-sweep.
_SAMPLER_PACKAGES = {"cmaes": ("cmaes", "cmaes"), "gp": ("scipy", "scipy")}


def accepted_kwargs(cls: type) -> list[str]:
    """The keyword arguments of ``cls.__init__`` (read from its signature), sorted.

    Example:
        >>> accepted_kwargs(PatientPruner)
        ['min_delta', 'patience', 'wrapped_pruner']
    """
    params = inspect.signature(cls.__init__).parameters
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return sorted(n for n, p in params.items() if n != "self" and p.kind in kinds)


def _required_kwargs(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return sorted(
        n
        for n, p in params.items()
        if n != "self"
        and p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )


def _check_kwargs(
    kind: str, name: str, cls: type, kwargs: Mapping[str, Any], extra: tuple[str, ...] = ()
) -> None:
    accepted = sorted({*accepted_kwargs(cls), *extra})
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"{kind} {name!r}: bad `{kind}_kwargs` {unknown}: {cls.__name__} accepts "
            f"{accepted or 'no arguments'}"
        )
    missing = [k for k in _required_kwargs(cls) if k not in kwargs and k not in extra]
    if missing:
        raise TypeError(
            f"{kind} {name!r}: `{kind}_kwargs` must give {missing} ({cls.__name__} has no "
            f"default for them); accepted: {accepted}"
        )


def _int_at_least(pruner: str, key: str, value: Any, minimum: int) -> None:
    with prefixed(f"pruner {pruner!r}"):
        check_int(key, value, minimum=minimum, type_error=ValueError)


def _hyperband_defaults(kwargs: dict[str, Any], max_resource: int | None) -> None:
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


def _successive_halving_defaults(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("min_resource", 1)
    kwargs.setdefault("reduction_factor", 3)
    if kwargs["min_resource"] != "auto":
        _int_at_least("successive_halving", "min_resource", kwargs["min_resource"], 1)
    _int_at_least("successive_halving", "reduction_factor", kwargs["reduction_factor"], 2)


def _named(value: Any) -> tuple[Any, dict[str, Any]]:
    """``"median"`` or ``{"name": "median", "kwargs": {...}}`` as (name, kwargs)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"name", "kwargs"})
        if unknown or "name" not in value:
            raise ValueError(
                f"a nested sampler/pruner must be a name or {{name, kwargs}}, but got {value!r}"
            )
        return value["name"], dict(value.get("kwargs") or {})
    return value, {}


def _check_name(kind: str, value: Any, table: Mapping[str, type], base: type) -> str:
    if not isinstance(value, str) or value not in table:
        raise ValueError(
            f"`{kind}` must be one of {sorted(table)} or an optuna {base.__name__}, but got "
            f"{kind}={value!r}"
        )
    return value


def _build(kind: str, name: str, cls: type, kwargs: dict[str, Any]) -> Any:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{kind} {name!r}: bad `{kind}_kwargs` {kwargs}: {err}") from None


def make_pruner(
    pruner: str | BasePruner | None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    max_resource: int | None = None,
) -> BasePruner:
    """A pruner from its name (see :data:`PRUNERS`) and the Optuna class's keyword arguments,
    or an Optuna ``BasePruner`` as is. None is ``"none"``.

    ``max_resource`` (validations per trial, i.e. ``max_epochs`` when validating every epoch) is
    Hyperband's ``max_resource`` unless ``kwargs`` gives one. ``"patient"`` wraps the pruner
    its ``wrapped_pruner`` names (``"median"``, ``{name: median, kwargs: {...}}``, or None).

    Example:
        >>> make_pruner("hyperband", max_resource=9)  # doctest: +ELLIPSIS
        <optuna.pruners._hyperband.HyperbandPruner object at ...>
        >>> p = make_pruner("patient", {"wrapped_pruner": "median", "patience": 2})
        >>> type(p).__name__
        'PatientPruner'
        >>> make_pruner("patience")
        Traceback (most recent call last):
        ...
        ValueError: `pruner` must be one of ['hyperband', 'median', 'none', 'patient', 'percentile', 'successive_halving', 'threshold', 'wilcoxon'] or an optuna BasePruner, but got pruner='patience'
    """
    if isinstance(pruner, BasePruner):
        if kwargs:
            raise ValueError("`pruner_kwargs` can only be used with a pruner name")
        return pruner
    name = _check_name("pruner", "none" if pruner is None else pruner, PRUNERS, BasePruner)
    options = dict(kwargs or {})
    cls = PRUNERS[name]
    _check_kwargs("pruner", name, cls, options)
    if name == "hyperband":
        _hyperband_defaults(options, max_resource)
    elif name == "successive_halving":
        _successive_halving_defaults(options)
    elif name == "patient" and not isinstance(options["wrapped_pruner"], (BasePruner, type(None))):
        inner, inner_kwargs = _named(options["wrapped_pruner"])
        options["wrapped_pruner"] = make_pruner(inner, inner_kwargs, max_resource=max_resource)
    return _build("pruner", name, cls, options)


def _check_package(name: str) -> None:
    package, install = _SAMPLER_PACKAGES.get(name, (None, None))
    if package is not None and importlib.util.find_spec(package) is None:
        raise ImportError(
            f"sampler {name!r} needs the `{package}` package: pip install {install} "
            f"(or pip install 'lightning-tune[samplers]')"
        )


def _check_finite_space(search_space: Any) -> None:
    from lightning_tune.tuner.space import Float, SearchSpace

    specs = SearchSpace.coerce(search_space).specs if search_space is not None else None
    for key, spec in (specs or {}).items():
        if isinstance(spec, Float) and spec.step is None:
            raise ValueError(
                f"sampler 'bruteforce' tries every value: search space `{key}` is a float "
                f"without `step`, but got {spec!r} (give it a `step`, or use sampler='grid')"
            )


def make_sampler(
    sampler: str | BaseSampler | None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    search_space: Any = None,
) -> BaseSampler:
    """A sampler from its name (see :data:`SAMPLERS`) and the Optuna class's keyword
    arguments, seeded with ``seed`` unless they give one, or an Optuna ``BaseSampler`` as is.
    None is ``"tpe"``.

    ``"grid"`` needs ``search_space`` (a :class:`~lightning_tune.tuner.space.SearchSpace` or a
    mapping of specs) and accepts ``grid_points`` and ``jitter`` (see
    :func:`~lightning_tune.tuner.grid.grid_values`).

    Example:
        >>> type(make_sampler("random", seed=0)).__name__
        'RandomSampler'
        >>> make_sampler("cmaes", {"sigma": 0.5})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: sampler 'cmaes': bad `sampler_kwargs` ['sigma']: CmaEsSampler accepts [..., 'sigma0', ...]
        >>> make_sampler("anneal")
        Traceback (most recent call last):
        ...
        ValueError: `sampler` must be one of ['bruteforce', 'cmaes', 'gp', 'grid', 'nsga2', 'nsga3', 'qmc', 'random', 'tpe'] or an optuna BaseSampler, but got sampler='anneal'
    """
    if isinstance(sampler, BaseSampler):
        if kwargs:
            raise ValueError("`sampler_kwargs` can only be used with a sampler name")
        return sampler
    name = _check_name("sampler", "tpe" if sampler is None else sampler, SAMPLERS, BaseSampler)
    cls = SAMPLERS[name]
    options = dict(kwargs or {})
    if name == "grid":
        _check_kwargs("sampler", name, cls, options, extra=(*_GRID_OPTIONS, "search_space"))
        from lightning_tune.tuner.grid import grid_sampler

        return grid_sampler(search_space, options, seed=seed)
    _check_kwargs("sampler", name, cls, options)
    _check_package(name)
    if name == "bruteforce":
        _check_finite_space(search_space)
    options.setdefault("seed", seed)
    inner = options.get("independent_sampler")
    if inner is not None and not isinstance(inner, BaseSampler):
        inner_name, inner_kwargs = _named(inner)
        if inner_name == "grid":
            raise ValueError("`independent_sampler` cannot be 'grid'")
        options["independent_sampler"] = make_sampler(inner_name, inner_kwargs, seed=seed)
    return _build("sampler", name, cls, options)
