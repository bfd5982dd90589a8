"""Training diagnostics: the practitioner's debugging checklist as findings, plots and a doctor.

* :class:`~lightning_tune.callbacks.TrainingDiagnostics`: the callback;
* :class:`Finding`, :data:`CODES`, :data:`CHECKS`, :func:`format_findings`: what it reports.
"""

from __future__ import annotations

from lightning_tune.diagnostics.checks import THRESHOLDS
from lightning_tune.diagnostics.findings import (
    CHECKS,
    CODES,
    DiagnosticError,
    Finding,
    format_findings,
)

__all__ = [
    "CHECKS",
    "CODES",
    "THRESHOLDS",
    "DiagnosticError",
    "Finding",
    "format_findings",
]
