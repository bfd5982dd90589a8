"""Diagnosis-driven pruning: a trial whose training shows a bug is pruned at once, by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

__all__ = ["diagnostics_callback", "diagnostics_kwargs", "prune_by_diagnosis"]


def diagnostics_kwargs(diagnostics: Any) -> dict[str, Any] | None:
    """The checked ``TrainingDiagnostics`` arguments of ``Tuner(diagnostics=...)`` (None: off).

    Example:
        >>> diagnostics_kwargs(True), diagnostics_kwargs(False)
        ({}, None)
        >>> diagnostics_kwargs({"on_error": "warn"})
        Traceback (most recent call last):
        ...
        ValueError: `diagnostics` must not set on_error: the tuner stops the trial on an error-level finding, but got diagnostics={'on_error': 'warn'}
    """
    if diagnostics is None or diagnostics is False:
        return None
    if diagnostics is True:
        return {}
    if not isinstance(diagnostics, Mapping):
        raise TypeError(
            "`diagnostics` must be true/false or a mapping of TrainingDiagnostics arguments, "
            f"but got diagnostics={diagnostics!r}"
        )
    if "on_error" in diagnostics:
        raise ValueError(
            "`diagnostics` must not set on_error: the tuner stops the trial on an error-level "
            f"finding, but got diagnostics={dict(diagnostics)!r}"
        )
    kwargs = dict(diagnostics)
    diagnostics_callback(kwargs)  # bad arguments fail now, not in the first trial
    return kwargs


def diagnostics_callback(kwargs: Mapping[str, Any]) -> Any:
    """A fresh ``TrainingDiagnostics`` for one trial: stops it on the first error-level finding."""
    from lightning_tune.callbacks.diagnostics import TrainingDiagnostics

    return TrainingDiagnostics(**{"verbose": False, **kwargs, "on_error": "stop"})


def prune_by_diagnosis(trial: optuna.Trial, diagnostics: Any) -> None:
    """Record the first error-level finding as the trial's prune reason and prune it."""
    finding = diagnostics.errors[0]
    reason = f"diagnostics: {finding.summary()}"
    trial.set_user_attr("diagnosis", finding.code)
    trial.set_user_attr("prune_reason", reason)
    trial.set_user_attr("findings", [f.to_dict() for f in diagnostics.findings][:20])
    raise optuna.TrialPruned(reason)
