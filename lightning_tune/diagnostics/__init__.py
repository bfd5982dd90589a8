"""Training diagnostics: the practitioner's debugging checklist as findings, plots and a doctor.

* :class:`~lightning_tune.callbacks.TrainingDiagnostics`: the callback;
* :class:`Finding`, :data:`CODES`, :data:`CHECKS`, :func:`format_findings`: what it reports;
* :func:`plot_diagnostics`: gradient flow, update ratios, dead units as PNGs;
* :func:`lr_range_test`: the LR range test (exponential LR sweep, suggested LR);
* :func:`doctor` (``lightning-tune doctor``): a pre-flight check of a module and its data.
"""

from __future__ import annotations

from lightning_tune.diagnostics.checks import THRESHOLDS
from lightning_tune.diagnostics.doctor import DoctorReport, build_from_config, doctor
from lightning_tune.diagnostics.findings import (
    CHECKS,
    CODES,
    DiagnosticError,
    Finding,
    format_findings,
)
from lightning_tune.diagnostics.plots import plot_diagnostics
from lightning_tune.range_test import RangeTestResult, lr_range_test, suggest_lr

__all__ = [
    "CHECKS",
    "CODES",
    "THRESHOLDS",
    "DiagnosticError",
    "DoctorReport",
    "Finding",
    "RangeTestResult",
    "build_from_config",
    "doctor",
    "format_findings",
    "lr_range_test",
    "plot_diagnostics",
    "suggest_lr",
]
