"""Findings: what a diagnostic check found, the table of checks, and the findings table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "CHECKS",
    "CODES",
    "SEVERITIES",
    "DiagnosticError",
    "Finding",
    "format_findings",
]

Severity = Literal["info", "warning", "error"]
#: Severities from least to most serious.
SEVERITIES: tuple[str, ...] = ("info", "warning", "error")

#: Every finding code: (check that produces it, what it means, the fix).
CODES: dict[str, tuple[str, str, str]] = {
    "initial_loss": (
        "initial_loss",
        "the first loss is far from ln(C) (cross-entropy) or ln 2 (binary)",
        "check the init (last layer too large?), the target format, label smoothing, a "
        "softmax applied twice",
    ),
    "softmax_before_loss": (
        "initial_loss",
        "the loss input rows are probabilities (>= 0, sum 1): softmax before cross_entropy",
        "pass raw logits to cross_entropy (it applies log_softmax itself)",
    ),
    "loss_unreachable": (
        "initial_loss",
        "no loss module found: the initial-loss and loss-input checks cannot run",
        "store the loss as a module attribute (self.criterion = nn.CrossEntropyLoss()) or "
        "pass TrainingDiagnostics(loss_attribute=...), as for LabelSmoothing",
    ),
    "labels_out_of_range": (
        "inputs",
        "integer targets outside [0, C)",
        "map the labels to 0..C-1 (off by one?) or raise num_classes",
    ),
    "class_imbalance": (
        "inputs",
        "the first batches hold a single class",
        "shuffle the training data (DataLoader(shuffle=True))",
    ),
    "inputs_unscaled": (
        "inputs",
        "inputs are far from zero mean / unit scale (e.g. 0-255 pixels)",
        "normalise the inputs (subtract the mean, divide by the std per channel)",
    ),
    "inputs_constant_channel": (
        "inputs",
        "an input channel is constant over the batch",
        "check the data pipeline (a channel lost in a conversion?)",
    ),
    "repeated_batch": (
        "inputs",
        "the training batch is identical to the previous one",
        "iterate the DataLoader instead of reusing one batch",
    ),
    "grad_vanishing": (
        "gradients",
        "the first layers' gradients are tiny compared to the last layers'",
        "use ReLU-family activations, residual connections, normalisation or a better init",
    ),
    "grad_exploding": (
        "gradients",
        "gradients are huge or grow from the last layer to the first",
        "lower the LR, clip gradients, use normalisation or a smaller init",
    ),
    "nonfinite_grad": (
        "nonfinite",
        "a gradient is NaN or infinite",
        "lower the LR, clip gradients, look for log(0) / division by zero",
    ),
    "nonfinite_loss": (
        "nonfinite",
        "the loss is NaN or infinite",
        "use log_softmax / clamp before log, lower the LR, check the inputs for NaN",
    ),
    "nonfinite_activation": (
        "nonfinite",
        "a module produced NaN or infinite outputs from finite inputs",
        "look at that module: log/sqrt/div of non-positive values, overflow, a too high LR",
    ),
    "weights_zero": (
        "weights",
        "a layer's weights are all zero",
        "initialise the weights randomly (zero weights give zero gradients upstream)",
    ),
    "weights_symmetric": (
        "weights",
        "all rows of a weight matrix are identical (symmetric init): its units learn the same",
        "initialise randomly to break the symmetry",
    ),
    "weights_huge": (
        "weights",
        "weights with a very large magnitude",
        "lower the LR, add weight decay, check the init",
    ),
    "update_ratio_high": (
        "update_ratio",
        "the update-to-weight ratio |dw|/|w| is far above ~1e-3",
        "lower the LR by 10x",
    ),
    "update_ratio_low": (
        "update_ratio",
        "the update-to-weight ratio |dw|/|w| is far below ~1e-3",
        "raise the LR by 10x",
    ),
    "dead_units": (
        "activations",
        "units whose activation is <= 0 for the whole batch (dead ReLUs)",
        "lower the LR, use a smaller negative bias / LeakyReLU, check the init",
    ),
    "saturated_units": (
        "activations",
        "sigmoid/tanh outputs stuck at their limits",
        "normalise the pre-activations, use ReLU-family activations, lower the init scale",
    ),
    "frozen_param_changed": (
        "frozen",
        "a parameter with requires_grad=False changed",
        "freeze with requires_grad_(False) before building the optimizer and keep it off",
    ),
    "frozen_bn_drift": (
        "frozen",
        "BatchNorm running statistics of a frozen layer changed (BN in train mode)",
        "put frozen BatchNorm layers in eval() (e.g. LayerFreezing(train_bn=False))",
    ),
    "dropout_in_eval": (
        "eval_mode",
        "dropout (or BatchNorm) in training mode during evaluation",
        "do not call .train() in validation_step; use F.dropout(x, training=self.training)",
    ),
    "loss_diverging": (
        "loss_curve",
        "the loss grows far above its initial value",
        "lower the LR by 10x, clip gradients",
    ),
    "loss_flat": (
        "loss_curve",
        "the loss stays at its initial value",
        "raise the LR by 10x; check that the gradients reach the parameters",
    ),
    "loss_oscillating": (
        "loss_curve",
        "the loss swings up and down without a downward trend",
        "lower the LR, raise the batch size",
    ),
    "overfit_failed": (
        "doctor",
        "the doctor could not overfit one small batch: the loss did not fall by the factor",
        "raise the LR (see the LR range test), check the loss/targets and that the "
        "gradients reach the parameters",
    ),
}

#: Check names (what ``TrainingDiagnostics(checks=...)`` accepts) and their codes.
CHECKS: dict[str, tuple[str, ...]] = {}
for _code, (_check, _, _) in CODES.items():
    if _check == "doctor":  # run by `lightning-tune doctor`, not by the callback
        continue
    CHECKS.setdefault(_check, ())
    CHECKS[_check] += (_code,)


class DiagnosticError(RuntimeError):
    """An error-level finding with ``on_error="raise"``; the finding is in ``.finding``.

    Example:
        >>> err = DiagnosticError(Finding("loss_flat", "error", 120, value=2.3))
        >>> err.finding.code
        'loss_flat'
    """

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.summary())
        self.finding = finding


@dataclass
class Finding:
    """One problem found by a diagnostic check.

    Args:
        code: what was found (a key of :data:`CODES`).
        severity: ``"info"``, ``"warning"`` or ``"error"``.
        step: the optimizer step (``trainer.global_step``) where it was found first.
        layer: the module / parameter / param-group name it concerns ("" for the whole model).
        value: the measured value.
        expected: the expected range, in words.
        message: what was measured, one line.
        fix: the suggested fix (default: from :data:`CODES`).
        count: how many sampled steps found it.

    Example:
        >>> f = Finding("dead_units", "error", 3, layer="net.1", value=1.0, expected="< 0.5")
        >>> f.summary()
        'error dead_units at step 3 in net.1: value=1 (expected < 0.5) -> lower the LR, use a smaller negative bias / LeakyReLU, check the init'
    """

    code: str
    severity: Severity
    step: int
    layer: str = ""
    value: float = math.nan
    expected: str = ""
    message: str = ""
    fix: str = ""
    count: int = field(default=1)

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"`code` must be one of {sorted(CODES)}, but got code={self.code!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"`severity` must be one of {list(SEVERITIES)}, but got {self.severity=!r}"
            )
        if not self.fix:
            self.fix = CODES[self.code][2]

    @property
    def key(self) -> tuple[str, str]:
        """(code, layer): one finding per key is kept, with a count."""
        return self.code, self.layer

    def summary(self) -> str:
        """One line: severity, code, step, layer, value, expected range and fix."""
        where = f" in {self.layer}" if self.layer else ""
        expected = f" (expected {self.expected})" if self.expected else ""
        message = f" {self.message};" if self.message else ""
        return (
            f"{self.severity} {self.code} at step {self.step}{where}:{message} "
            f"value={_fmt(self.value)}{expected} -> {self.fix}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what the checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """The inverse of :meth:`to_dict` (unknown keys ignored)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return f"{value:.3g}"
    return str(value)


def format_findings(findings: Iterable[Finding], min_severity: str = "info") -> str:
    """A compact text table of findings, most serious first.

    Example:
        >>> print(format_findings([Finding("loss_flat", "error", 120, value=2.3, expected="falls")]))
        severity  code       step  layer  value  expected  fix
        error     loss_flat  120   -      2.3    falls     raise the LR by 10x; check that the gradients reach the parameters
    """
    rank = SEVERITIES.index(min_severity)
    rows = [f for f in findings if SEVERITIES.index(f.severity) >= rank]
    if not rows:
        return "no findings: training looks healthy"
    rows.sort(key=lambda f: (-SEVERITIES.index(f.severity), f.step, f.code))
    table = [["severity", "code", "step", "layer", "value", "expected", "fix"]]
    table += [
        [f.severity, f.code, str(f.step), f.layer or "-", _fmt(f.value), f.expected or "-", f.fix]
        for f in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]).rstrip() for r in table
    )
