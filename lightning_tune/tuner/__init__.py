"""Optuna-backed hyperparameter sweeps over LightningModules."""

from __future__ import annotations

from lightning_tune.tuner.config import load_config, tuner_from_config
from lightning_tune.tuner.distributed import DistributedOptunaPruning
from lightning_tune.tuner.factories import PRUNERS, SAMPLERS, make_pruner, make_sampler
from lightning_tune.tuner.model_cost import ModelCost
from lightning_tune.tuner.pbt import PBTConfig, run_pbt
from lightning_tune.tuner.pruning import MetricNotFoundError, NonFiniteMetricError, OptunaPruning
from lightning_tune.tuner.report import save_report, summary_table, trials_frame
from lightning_tune.tuner.space import (
    Categorical,
    Fixed,
    Float,
    Int,
    PowerOfTwo,
    SearchSpace,
    parse_spec,
)
from lightning_tune.tuner.tuner import Tuner, TuneResult
from lightning_tune.tuner.workers import run_worker, run_workers

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "Categorical",
    "DistributedOptunaPruning",
    "Fixed",
    "Float",
    "Int",
    "MetricNotFoundError",
    "ModelCost",
    "NonFiniteMetricError",
    "OptunaPruning",
    "PBTConfig",
    "PowerOfTwo",
    "SearchSpace",
    "TuneResult",
    "Tuner",
    "load_config",
    "make_pruner",
    "make_sampler",
    "parse_spec",
    "run_pbt",
    "run_worker",
    "run_workers",
    "save_report",
    "summary_table",
    "trials_frame",
    "tuner_from_config",
]
