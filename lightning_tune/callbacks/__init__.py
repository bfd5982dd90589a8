"""Lightning callbacks: schedules, early stopping, clipping, label smoothing, freezing, diagnostics."""

from __future__ import annotations

from lightning_tune.callbacks.diagnostics import TrainingDiagnostics
from lightning_tune.callbacks.early_stopping import EarlyStopping
from lightning_tune.callbacks.freezing import LayerFreezing
from lightning_tune.callbacks.gradient_clipping import GradientClipping
from lightning_tune.callbacks.label_smoothing import LabelSmoothing
from lightning_tune.callbacks.lr_presets import CyclicLR, OneCycle, Warmup
from lightning_tune.callbacks.lr_schedule import LRSchedule

__all__: list[str] = [
    "CyclicLR",
    "EarlyStopping",
    "GradientClipping",
    "LRSchedule",
    "LabelSmoothing",
    "LayerFreezing",
    "OneCycle",
    "TrainingDiagnostics",
    "Warmup",
]
