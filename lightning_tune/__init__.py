"""lightning_tune: Lightning callbacks, timm fine-tuning and Optuna sweeps with pruning."""

from __future__ import annotations

from lightning_tune import callbacks, recipes
from lightning_tune.callbacks import *  # noqa: F403
from lightning_tune.data import DigitsDataModule
from lightning_tune.models import TimmClassifier
from lightning_tune.timm_utils import create_model, layer_groups, load_weights_file
from lightning_tune.tuner import OptunaPruning, SearchSpace, Tuner, TuneResult

__version__ = "0.1.0"

__all__ = [
    "DigitsDataModule",
    "OptunaPruning",
    "SearchSpace",
    "TimmClassifier",
    "TuneResult",
    "Tuner",
    "__version__",
    "callbacks",
    "create_model",
    "layer_groups",
    "load_weights_file",
    "recipes",
    *callbacks.__all__,
]
