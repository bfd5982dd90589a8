"""Search spaces: a declarative mapping of parameter specs, or a ``suggest(trial)`` function.

A space maps each hyperparameter name to a spec: :class:`Float`, :class:`Int`,
:class:`Categorical`, :class:`PowerOfTwo` or :class:`Fixed`. The same specs can be written as
plain dicts (that is what a YAML config holds): ``{"type": "float", "low": 1e-4, "high": 1e-1,
"log": True}``; a bare list is a categorical choice and a bare scalar a fixed value. Every spec is
checked when the space is built, so an empty range or a log range that includes 0 fails before
any trial runs.

For conditional spaces pass a function ``suggest(trial) -> dict`` instead of a mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lightning_tune._validation import (
    check_bool,
    check_int,
    check_number,
    check_optional,
    prefixed,
)

__all__ = [
    "Categorical",
    "Fixed",
    "Float",
    "Int",
    "ParamSpec",
    "PowerOfTwo",
    "SearchSpace",
    "parse_spec",
]

_CHOICE_TYPES = (type(None), bool, int, float, str)


def _number(name: str, field: str, value: Any, *, integer: bool = False) -> Any:
    """``field`` of spec ``name``: an int, or a finite number (returned as given)."""
    with prefixed(f"search space `{name}`"):
        if integer:
            check_int(field, value)
        else:
            check_number(field, value)
    return value


def _flag(name: str, field: str, value: Any) -> None:
    # YAML reads `log: 'false'` as a non-empty (true) string: only real booleans count.
    with prefixed(f"search space `{name}`"):
        check_bool(field, value)


def _check_range(name: str, low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(
            f"search space `{name}`: the range must satisfy low < high, but got low={low!r}, "
            f"high={high!r} (use Fixed / {{'type': 'fixed'}} for a single value)"
        )
    if log and low <= 0:
        raise ValueError(
            f"search space `{name}`: a log range must have low > 0, but got low={low!r} "
            f"(log ranges cannot include 0)"
        )


def _check_grid_points(name: str, value: Any) -> None:
    with prefixed(f"search space `{name}`"):
        check_optional(check_int, "grid_points", value, minimum=2, type_error=ValueError)


@dataclass(frozen=True)
class Float:
    """A float in ``[low, high]``, uniform or log-uniform, optionally on a grid of ``step``.

    ``grid_points`` is used by ``sampler="grid"`` only: that many evenly spaced values (log-spaced
    with ``log=True``), ends included (see :func:`~lightning_tune.tuner.grid.grid_values`).

    Example:
        >>> Float(1e-4, 1e-1, log=True).distribution("lr")
        FloatDistribution(high=0.1, log=True, low=0.0001, step=None)
    """

    low: float
    high: float
    log: bool = False
    step: float | None = None
    grid_points: int | None = None

    def check(self, name: str) -> None:
        """Raise ``ValueError``/``TypeError`` if the spec is invalid."""
        _number(name, "low", self.low)
        _number(name, "high", self.high)
        _flag(name, "log", self.log)
        _check_range(name, self.low, self.high, self.log)
        _check_grid_points(name, self.grid_points)
        if self.step is not None:
            _number(name, "step", self.step)
            if self.log:
                raise ValueError(f"search space `{name}`: `step` cannot be used with log=True")
            if not self.step > 0:
                raise ValueError(
                    f"search space `{name}`: `step` must be > 0, but got {self.step!r}"
                )

    def distribution(self, name: str) -> BaseDistribution:
        """The Optuna distribution this spec samples from."""
        return FloatDistribution(
            float(self.low),
            float(self.high),
            log=self.log,
            step=None if self.step is None else float(self.step),
        )

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        """Ask ``trial`` for a value."""
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Int:
    """An int in ``[low, high]``, uniform or log-uniform, with ``step`` (1 for log ranges).

    ``grid_points`` is used by ``sampler="grid"`` only: at most that many values of the range
    (log-spaced with ``log=True``) instead of all of them.

    Example:
        >>> Int(0, 10, step=2).distribution("warmup")
        IntDistribution(high=10, log=False, low=0, step=2)
    """

    low: int
    high: int
    log: bool = False
    step: int = 1
    grid_points: int | None = None

    def check(self, name: str) -> None:
        """Raise ``ValueError``/``TypeError`` if the spec is invalid."""
        _number(name, "low", self.low, integer=True)
        _number(name, "high", self.high, integer=True)
        _number(name, "step", self.step, integer=True)
        _check_grid_points(name, self.grid_points)
        _flag(name, "log", self.log)
        _check_range(name, self.low, self.high, self.log)
        if self.step < 1:
            raise ValueError(f"search space `{name}`: `step` must be >= 1, but got {self.step!r}")
        if self.log and self.step != 1:
            raise ValueError(
                f"search space `{name}`: a log int range needs step=1, but got {self.step!r}"
            )

    def distribution(self, name: str) -> BaseDistribution:
        """The Optuna distribution this spec samples from."""
        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        """Ask ``trial`` for a value."""
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (None, bool, int, float or str, as Optuna stores them).

    Example:
        >>> Categorical(["adamw", "sgd"]).distribution("optimizer")
        CategoricalDistribution(choices=('adamw', 'sgd'))
    """

    choices: Sequence[Any]

    def check(self, name: str) -> None:
        """Raise ``ValueError``/``TypeError`` if the spec is invalid."""
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Sequence):
            raise TypeError(
                f"search space `{name}`: `choices` must be a list, but got {self.choices!r}"
            )
        if len(self.choices) == 0:
            raise ValueError(f"search space `{name}`: `choices` must not be empty")
        bad = [c for c in self.choices if not isinstance(c, _CHOICE_TYPES)]
        if bad:
            raise TypeError(
                f"search space `{name}`: choices must be None, bool, int, float or str, but got "
                f"{bad!r}"
            )
        if len({(type(c), c) for c in self.choices}) != len(self.choices):
            raise ValueError(
                f"search space `{name}`: `choices` has duplicates: {list(self.choices)!r}"
            )

    def distribution(self, name: str) -> BaseDistribution:
        """The Optuna distribution this spec samples from."""
        return CategoricalDistribution(tuple(self.choices))

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """Ask ``trial`` for a value."""
        return trial.suggest_categorical(name, list(self.choices))


def _is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


@dataclass(frozen=True)
class PowerOfTwo:
    """A power of two in ``[low, high]`` (batch sizes, widths), e.g. 16, 32, 64, 128.

    Stored in the study as a categorical over the powers, so the parameter keeps its real value
    (``batch_size=64``) in tables, plots and ``best_params``.

    Example:
        >>> PowerOfTwo(16, 128).values
        (16, 32, 64, 128)
    """

    low: int
    high: int

    def check(self, name: str) -> None:
        """Raise ``ValueError``/``TypeError`` if the spec is invalid."""
        for field in ("low", "high"):
            value = _number(name, field, getattr(self, field), integer=True)
            if not _is_power_of_two(value):
                raise ValueError(
                    f"search space `{name}`: `{field}` must be a power of two >= 1, but got "
                    f"{value!r}"
                )
        _check_range(name, self.low, self.high, log=False)

    @property
    def values(self) -> tuple[int, ...]:
        """The powers of two in the range, ascending."""
        out, value = [], self.low
        while value <= self.high:
            out.append(value)
            value *= 2
        return tuple(out)

    def distribution(self, name: str) -> BaseDistribution:
        """The Optuna distribution this spec samples from."""
        return CategoricalDistribution(self.values)

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        """Ask ``trial`` for a value."""
        return trial.suggest_categorical(name, list(self.values))


@dataclass(frozen=True)
class Fixed:
    """A constant handed to every trial (not sampled, but recorded with the trial's params).

    Example:
        >>> Fixed("test_resnet").distribution("model_name") is None
        True
    """

    value: Any

    def check(self, name: str) -> None:
        """Any value is valid."""

    def distribution(self, name: str) -> BaseDistribution | None:
        """Fixed values have no distribution."""
        return None

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """Return the value."""
        return self.value


ParamSpec = Float | Int | Categorical | PowerOfTwo | Fixed

_SPEC_TYPES: dict[str, type] = {
    "float": Float,
    "int": Int,
    "categorical": Categorical,
    "pow2": PowerOfTwo,
    "fixed": Fixed,
}
_SPEC_FIELDS: dict[str, tuple[str, ...]] = {
    "float": ("low", "high", "log", "step", "grid_points"),
    "int": ("low", "high", "log", "step", "grid_points"),
    "categorical": ("choices",),
    "pow2": ("low", "high"),
    "fixed": ("value",),
}


def parse_spec(name: str, spec: Any) -> ParamSpec:
    """Turn a spec object, a dict, a list (categorical) or a scalar (fixed) into a checked spec.

    Dict specs have a ``type`` (``float``, ``int``, ``categorical``, ``pow2``, ``fixed``) and the
    fields of that type.

    Example:
        >>> parse_spec("lr", {"type": "float", "low": 1e-4, "high": 1e-2, "log": True})
        Float(low=0.0001, high=0.01, log=True, step=None, grid_points=None)
        >>> parse_spec("batch_size", {"type": "pow2", "low": 16, "high": 64}).values
        (16, 32, 64)
        >>> parse_spec("optimizer", ["adamw", "sgd"])
        Categorical(choices=('adamw', 'sgd'))
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"search space names must be non-empty strings, but got {name!r}")
    if isinstance(spec, (Float, Int, Categorical, PowerOfTwo, Fixed)):
        parsed: ParamSpec = spec
    elif isinstance(spec, Mapping):
        kind = spec.get("type")
        if kind not in _SPEC_TYPES:
            raise ValueError(
                f"search space `{name}`: `type` must be one of {sorted(_SPEC_TYPES)}, but got "
                f"type={kind!r}"
            )
        unknown = sorted(set(spec) - {"type", *_SPEC_FIELDS[kind]})
        if unknown:
            raise ValueError(
                f"search space `{name}`: unknown keys {unknown} for type {kind!r}; accepted: "
                f"{list(_SPEC_FIELDS[kind])}"
            )
        fields = {k: v for k, v in spec.items() if k != "type"}
        if kind == "categorical":
            fields["choices"] = tuple(fields.get("choices", ()))
        try:
            parsed = _SPEC_TYPES[kind](**fields)
        except TypeError as err:
            raise TypeError(f"search space `{name}`: {err}") from None
    elif isinstance(spec, (list, tuple)):
        parsed = Categorical(tuple(spec))
    else:
        parsed = Fixed(spec)
    parsed.check(name)
    return parsed


class SearchSpace:
    """The hyperparameters of a sweep: a mapping of specs or a ``suggest(trial)`` function.

    Args:
        space: a mapping ``name -> spec`` (see :func:`parse_spec`), or a function that takes an
            ``optuna.Trial`` and returns the trial's hyperparameters as a dict (for conditional
            spaces). A ``SearchSpace`` is returned unchanged by :meth:`coerce`.

    Example:
        >>> space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True),
        ...                      "batch_size": PowerOfTwo(16, 64), "model_name": "test_resnet"})
        >>> sorted(space.distributions())
        ['batch_size', 'lr']
        >>> trial = optuna.create_study().ask()
        >>> params = space.suggest(trial)
        >>> params["batch_size"] in (16, 32, 64), params["model_name"]
        (True, 'test_resnet')
    """

    def __init__(
        self,
        space: Mapping[str, Any] | Callable[[optuna.Trial], Mapping[str, Any]],
    ) -> None:
        self.specs: dict[str, ParamSpec] | None
        self.suggest_fn: Callable[[optuna.Trial], Mapping[str, Any]] | None
        if isinstance(space, Mapping):
            if not space:
                raise ValueError("`search_space` must not be empty")
            self.specs = {name: parse_spec(name, spec) for name, spec in space.items()}
            self.suggest_fn = None
        elif callable(space):
            self.specs = None
            self.suggest_fn = space
        else:
            raise TypeError(
                "`search_space` must be a mapping of parameter specs or a function "
                f"suggest(trial) -> dict, but got {type(space).__name__}"
            )

    @classmethod
    def coerce(cls, space: SearchSpace | Mapping[str, Any] | Callable[..., Any]) -> SearchSpace:
        """Return ``space`` as a :class:`SearchSpace`."""
        return space if isinstance(space, SearchSpace) else cls(space)

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions of the sampled parameters (empty for a ``suggest`` function)."""
        if self.specs is None:
            return {}
        out = {}
        for name, spec in self.specs.items():
            dist = spec.distribution(name)
            if dist is not None:
                out[name] = dist
        return out

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample the hyperparameters of ``trial`` (fixed values included)."""
        if self.specs is not None:
            return {name: spec.suggest(trial, name) for name, spec in self.specs.items()}
        assert self.suggest_fn is not None
        params = self.suggest_fn(trial)
        if not isinstance(params, Mapping):
            raise TypeError(
                f"`search_space` function must return a dict of hyperparameters, but returned "
                f"{type(params).__name__}"
            )
        return dict(params)

    def __repr__(self) -> str:
        if self.specs is None:
            return f"SearchSpace({getattr(self.suggest_fn, '__name__', self.suggest_fn)!r})"
        return f"SearchSpace({self.specs!r})"
