"""Per-trial loggers: the built-in CSV / TensorBoard ones, or your own Lightning loggers.

``Tuner(loggers=[...])`` takes any mix of:

* ``"csv"`` / ``"tensorboard"``: written to ``<study_dir>/trials/trial_NNNN`` and
  ``<study_dir>/tensorboard/trial_NNNN``;
* a factory ``params -> Logger`` (or a list of loggers), called once per trial with the trial's
  hyperparameters; if it also takes a ``tags`` argument it gets the trial's tags
  (:func:`trial_tags`: study name, trial number and name, as strings), e.g.
  ``lambda params, tags: MLFlowLogger(experiment_name="digits", run_name=tags["trial_name"],
  tags=tags)``;
* a Lightning ``Logger`` object, deep-copied for each trial (so each trial gets its own run; a
  factory says more clearly what happens).

Every trial logger also receives the trial's hyperparameters plus ``study_name`` and ``trial``
through ``log_hyperparams``, so a plain ``params -> Logger`` factory (W&B, MLflow, ...) still
records which study and trial a run belongs to.
"""

from __future__ import annotations

import copy
import inspect
import pathlib
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from lightning_tune._lightning import NAMESPACES, classes

__all__ = ["LOGGER_NAMES", "build_trial_loggers", "check_loggers", "trial_tags"]

#: Loggers the tuner builds itself, by name.
LOGGER_NAMES = ("csv", "tensorboard")

#: ``Logger`` of every installed Lightning package (a trial's Trainer takes its own package's).
LOGGER_CLASSES: tuple[type, ...] = classes("loggers.Logger")

LoggerSource = str | Callable[..., Any] | Any


def check_loggers(loggers: Any) -> tuple[LoggerSource, ...]:
    """``loggers`` as a tuple, each a known name, a Lightning ``Logger`` or a function.

    Example:
        >>> check_loggers("csv")
        ('csv',)
        >>> check_loggers(["csv", "wandb"])
        Traceback (most recent call last):
        ...
        ValueError: `loggers` may contain ['csv', 'tensorboard'], Lightning Logger objects or functions params -> Logger, but got 'wandb' in loggers=['csv', 'wandb']
    """
    if loggers is None:
        return ()
    items = (
        (loggers,) if isinstance(loggers, (str, *LOGGER_CLASSES)) or callable(loggers) else loggers
    )
    if not isinstance(items, Sequence):
        raise TypeError(f"`loggers` must be a list, but got loggers={loggers!r}")
    for item in items:
        if (
            item in LOGGER_NAMES
            if isinstance(item, str)
            else callable(item) or isinstance(item, LOGGER_CLASSES)
        ):
            continue
        raise ValueError(
            f"`loggers` may contain {list(LOGGER_NAMES)}, Lightning Logger objects or "
            f"functions params -> Logger, but got {item!r} in loggers={list(items)!r}"
        )
    return tuple(items)


def trial_tags(study_name: str, number: int) -> dict[str, str]:
    """The tags of a trial's logger runs (strings, as MLflow and W&B tags are).

    Example:
        >>> trial_tags("digits", 7)
        {'study_name': 'digits', 'trial_number': '7', 'trial_name': 'digits/trial_0007'}
    """
    return {
        "study_name": study_name,
        "trial_number": str(number),
        "trial_name": f"{study_name}/trial_{number:04d}",
    }


def _takes_tags(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return "tags" in params or len(positional) >= 2


def _built(source: Any, result: Any, ns: ModuleType) -> list[Any]:
    items = list(result) if isinstance(result, (list, tuple)) else [result]
    for item in items:
        if not isinstance(item, ns.loggers.Logger):
            raise TypeError(
                f"logger factory {getattr(source, '__name__', source)!r} must return a "
                f"{ns.__name__} Logger (the package of the trial's Trainer; or a list of "
                f"them), but returned {type(item).__module__}.{type(item).__name__}"
            )
    return items


def _builtin(name: str, study_dir: pathlib.Path, number: int, ns: ModuleType) -> Any:
    version = f"trial_{number:04d}"
    if name == "csv":
        return ns.loggers.CSVLogger(study_dir / "trials", name="", version=version)
    return ns.loggers.TensorBoardLogger(
        study_dir / "tensorboard", name="", version=version, default_hp_metric=False
    )


def build_trial_loggers(
    loggers: Sequence[LoggerSource],
    *,
    params: Mapping[str, Any],
    study_name: str,
    number: int,
    study_dir: pathlib.Path,
    namespace: ModuleType | None = None,
) -> list[Any]:
    """The loggers of trial ``number``, with its hyperparameters and tags already logged.

    ``namespace``: the Lightning package of the trial's Trainer (default: the first installed);
    built-in loggers come from it and a factory must return its loggers.

    Example:
        >>> import tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> seen = []
        >>> def factory(params, tags):
        ...     seen.append(tags["trial_name"])
        ...     return NAMESPACES[0].loggers.CSVLogger(out, name="mine", version=tags["trial_number"])
        >>> [type(x).__name__ for x in build_trial_loggers(
        ...     ["csv", factory], params={"lr": 0.1}, study_name="s", number=3, study_dir=out)]
        ['CSVLogger', 'CSVLogger']
        >>> seen
        ['s/trial_0003']
    """
    ns = NAMESPACES[0] if namespace is None else namespace
    tags = trial_tags(study_name, number)
    built: list[Any] = []
    for source in loggers:
        if isinstance(source, str):
            built.append(_builtin(source, study_dir, number, ns))
        elif isinstance(source, LOGGER_CLASSES):
            built.extend(_built(source, copy.deepcopy(source), ns))
        elif _takes_tags(source):
            built.extend(_built(source, source(dict(params), dict(tags)), ns))
        else:
            built.extend(_built(source, source(dict(params)), ns))
    for logger in built:
        logger.log_hyperparams({**params, "study_name": study_name, "trial": number})
    return built
