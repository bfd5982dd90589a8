"""Study identity: what a study's trial values mean, stored in the study and checked on rerun.

Running a sweep again continues its study. That is only right when the rerun measures the same
thing: the same search space, ``max_epochs``, ``monitor``, ``objective``, ``direction``, module,
datamodule and Trainer settings. These are stored in the study (user attribute
``lightning_tune:identity``) when it is created; a rerun whose settings differ is refused with a
diff of what changed, before anything is written. Two ways out: a new study name
(``--new-study NAME``), or ``resume="force"`` (``--force-resume``) to continue the old study with
the new settings on purpose (the stored identity is then replaced).

Settings that say where a trial runs, not what it measures (``accelerator``, ``devices``,
``strategy``, ...), are not part of the identity: a sweep may move to another machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["IDENTITY_ATTR", "StudyIdentityError", "identity_diff", "study_identity"]

#: Study user attribute that holds the identity.
IDENTITY_ATTR = "lightning_tune:identity"
# Trainer arguments that choose the hardware or the output, not the meaning of a trial's value.
_WHERE_KEYS = frozenset(
    {
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
        "enable_progress_bar",
        "enable_model_summary",
        "log_every_n_steps",
        "benchmark",
        "profiler",
        "plugins",
        "sync_batchnorm",
    }
)


class StudyIdentityError(ValueError):
    """A rerun's settings differ from those the study was created with.

    Example:
        >>> issubclass(StudyIdentityError, ValueError)
        True
    """


def _canonical(value: Any) -> Any:
    """A JSON-able, order-independent view of ``value`` (classes and functions by name)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **_canonical(dataclasses.asdict(value))}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', value)}"
    return repr(value)


def study_identity(tuner: Any) -> dict[str, Any]:
    """The identity of ``tuner``'s sweep: a JSON-able dict with a ``config_hash``.

    Example:
        >>> from lightning_tune import TimmClassifier
        >>> from lightning_tune.tuner import Tuner
        >>> tuner = Tuner(TimmClassifier, {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
        ...               storage="memory", max_epochs=3)
        >>> identity = study_identity(tuner)
        >>> identity["max_epochs"], identity["search_space"]["lr"]["type"], len(identity["config_hash"])
        (3, 'Float', 16)
    """
    space = tuner.search_space
    identity = {
        "search_space": _canonical(space.specs if space.specs is not None else space.suggest_fn),
        "max_epochs": tuner.max_epochs,
        # One metric: a string (as studies stored it before several were possible); several: lists.
        "monitor": tuner.monitor if len(tuner.monitors) == 1 else list(tuner.monitors),
        "objective": tuner.objective_mode,
        "direction": (
            tuner.direction if len(tuner.monitors) == 1 else list(tuner.objectives.directions)
        ),
        "module": _canonical(tuner.module),
        "module_kwargs": _canonical(tuner.module_kwargs),
        "datamodule": _canonical(tuner.datamodule),
        "datamodule_kwargs": _canonical(tuner.datamodule_kwargs),
        "trainer": _canonical(
            {k: v for k, v in tuner.trainer_kwargs.items() if k not in _WHERE_KEYS}
        ),
    }
    text = json.dumps(identity, sort_keys=True)
    identity["config_hash"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return identity


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def identity_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What changed between two identities, one ``"name: stored -> now"`` line per setting.

    Example:
        >>> identity_diff({"max_epochs": 2, "monitor": "val_loss"},
        ...               {"max_epochs": 3, "monitor": "val_loss"})
        ['max_epochs: 2 -> 3']
    """
    old = _flatten({k: v for k, v in stored.items() if k != "config_hash"})
    new = _flatten({k: v for k, v in current.items() if k != "config_hash"})
    missing = "(not set)"
    return [
        f"{key}: {json.dumps(old.get(key, missing))} -> {json.dumps(new.get(key, missing))}"
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing)
    ]
