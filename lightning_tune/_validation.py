"""Argument checks shared by every module: one wording, one place.

Each ``check_*`` function returns the (normalised) value or raises ``TypeError`` for a value of
the wrong type and ``ValueError`` for a value out of range (``type_error=ValueError`` keeps the
few arguments that have always reported a wrong type as a bad value). Messages name the
argument, the rule and the value received: "`name` must be ..., but got name=value";
:func:`prefixed` puts where the argument belongs in front of them.

Example:
    >>> check_int("patience", 3, minimum=0)
    3
    >>> check_number("lr", 1e-3, low=0, low_open=True)
    0.001
    >>> check_choice("mode", "min", ("min", "max"))
    'min'
    >>> check_int("patience", 2.5)
    Traceback (most recent call last):
    ...
    TypeError: `patience` must be an int, but got patience=2.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_names",
    "check_number",
    "check_optional",
    "describe_range",
    "fail",
    "parse_assignments",
    "prefixed",
]

T = TypeVar("T")


def fail(name: str, rule: str, value: Any, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` with the house wording: "`name` must be rule, but got name=value".

    Example:
        >>> fail("k", "a positive int", -1)
        Traceback (most recent call last):
        ...
        ValueError: `k` must be a positive int, but got k=-1
    """
    raise error(f"`{name}` must be {rule}, but got {name}={value!r}")


def describe_range(
    low: float | None, high: float | None, *, low_open: bool = False, high_open: bool = False
) -> str:
    """Words for an interval, e.g. ``"> 0"``, ``">= 0 and <= 1"``.

    Example:
        >>> describe_range(0, 1, high_open=True)
        '>= 0 and < 1'
    """
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def _in_range(
    value: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    # Written so that NaN, for which every comparison is false, is outside any bound.
    if low is not None and not (value > low if low_open else value >= low):
        return False
    return high is None or (value < high if high_open else value <= high)


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    what: str = "an int",
    type_error: type[Exception] = TypeError,
) -> int:
    """An ``int`` (not a ``bool``) within ``[minimum, maximum]``.

    ``what`` names the kind of value in the message; ``type_error`` is raised for a value of the
    wrong type.

    Example:
        >>> check_int("every_n_steps", 0, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: `every_n_steps` must be an int >= 1, but got every_n_steps=0
        >>> check_int("batch_size", "8", minimum=1, type_error=ValueError)
        Traceback (most recent call last):
        ...
        ValueError: `batch_size` must be an int, but got batch_size='8'
    """
    if isinstance(value, bool) or not isinstance(value, int):
        fail(name, what, value, type_error)
    if not _in_range(value, minimum, maximum, False, False):
        fail(name, f"{what} {describe_range(minimum, maximum)}", value)
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    what: str = "a number",
    type_error: type[Exception] = TypeError,
) -> float:
    """A real number (``int`` or ``float``, not ``bool``), finite by default, within a range.

    ``finite=False`` lets ``inf`` and ``-inf`` through (and NaN when no bound is given: NaN is
    outside every bound). ``what`` names the kind of value in the message; ``type_error`` is
    raised for a value of the wrong type.

    Example:
        >>> check_number("momentum", 1.5, low=0, high=1)
        Traceback (most recent call last):
        ...
        ValueError: `momentum` must be a number >= 0 and <= 1, but got momentum=1.5
        >>> check_number("lr", "0.1")
        Traceback (most recent call last):
        ...
        TypeError: `lr` must be a number, but got lr='0.1'
        >>> check_number("max_norm", float("inf"), low=0, low_open=True, finite=False)
        inf
        >>> check_number("max_norm", float("nan"), low=0, low_open=True, finite=False)
        Traceback (most recent call last):
        ...
        ValueError: `max_norm` must be a number > 0, but got max_norm=nan
        >>> check_number("timeout", -1, low=0, low_open=True, what="a number of seconds")
        Traceback (most recent call last):
        ...
        ValueError: `timeout` must be a number of seconds > 0, but got timeout=-1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(name, what, value, type_error)
    if finite and not math.isfinite(value):
        fail(name, "finite", value)
    if not _in_range(value, low, high, low_open, high_open):
        bounds = describe_range(low, high, low_open=low_open, high_open=high_open)
        fail(name, f"{what} {bounds}", value)
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (YAML's ``'false'`` string is refused, not taken as true).

    Example:
        >>> check_bool("log", "false")
        Traceback (most recent call last):
        ...
        TypeError: `log` must be true or false, but got log='false'
    """
    if not isinstance(value, bool):
        fail(name, "true or false", value, TypeError)
    return value


def check_choice(name: str, value: Any, accepted: Iterable[T]) -> T:
    """One of ``accepted`` (listed in the message).

    Example:
        >>> check_choice("mode", "mid", ("min", "max"))
        Traceback (most recent call last):
        ...
        ValueError: `mode` must be one of ['min', 'max'], but got mode='mid'
    """
    accepted = list(accepted)
    if value not in accepted:
        fail(name, f"one of {accepted}", value)
    return value


def check_optional(check: Any, name: str, value: Any, **kwargs: Any) -> Any:
    """``None``, or a value that passes ``check``.

    Example:
        >>> check_optional(check_int, "seed", None) is None
        True
    """
    return None if value is None else check(name, value, **kwargs)


@contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Put ``prefix`` (where the argument belongs) in front of a check's message.

    A ``TypeError`` or ``ValueError`` raised inside is raised again, of the same type, as
    "prefix: message".

    Example:
        >>> with prefixed("search space `lr`"):
        ...     check_number("low", "a")
        Traceback (most recent call last):
        ...
        TypeError: search space `lr`: `low` must be a number, but got low='a'
    """
    try:
        yield
    except (TypeError, ValueError) as err:
        raise type(err)(f"{prefix}: {err}") from None


def check_names(name: str, values: Any, accepted: Iterable[str]) -> list[str]:
    """A name or list of names, each one of ``accepted``; the message lists the accepted ones.

    Example:
        >>> check_names("checks", ["inputs"], ["inputs", "weights"])
        ['inputs']
        >>> check_names("checks", ["input"], ["inputs", "weights"])
        Traceback (most recent call last):
        ...
        ValueError: `checks` may contain ['inputs', 'weights'], but got unknown ['input'] in checks=['input']
    """
    values = [values] if isinstance(values, str) else list(values)
    unknown = [v for v in values if v not in accepted]
    if unknown:
        raise ValueError(
            f"`{name}` may contain {sorted(accepted)}, but got unknown {unknown} in "
            f"{name}={values!r}"
        )
    return values


def parse_assignments(items: Iterable[str], option: str, example: str) -> dict[str, Any]:
    """``NAME=VALUE`` command-line pairs as a dict, each value read as Python or else YAML.

    Example:
        >>> parse_assignments(["lr=1e-3", "milestones=[30, 60]", "ok=true"], "--set", "lr=0.1")
        {'lr': 0.001, 'milestones': [30, 60], 'ok': True}
        >>> parse_assignments(["lr"], "--set", "lr=0.1")
        Traceback (most recent call last):
        ...
        ValueError: --set takes KEY=VALUE (e.g. lr=0.1), but got 'lr'
    """
    import ast

    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} takes KEY=VALUE (e.g. {example}), but got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = yaml.safe_load(text)
    return out
