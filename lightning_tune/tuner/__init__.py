"""Optuna-backed hyperparameter sweeps over LightningModules."""

from __future__ import annotations

__all__: list[str] = []
