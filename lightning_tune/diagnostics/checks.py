"""The checks as plain functions: measured values in, findings out (no Lightning here)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lightning_tune._validation import check_names, check_number
from lightning_tune.diagnostics.findings import Finding

__all__ = [
    "THRESHOLDS",
    "activation_findings",
    "check_thresholds",
    "first_batch_tensors",
    "gradient_findings",
    "initial_loss_findings",
    "input_findings",
    "loss_curve_findings",
    "update_ratio_findings",
    "weight_findings",
]

#: Default thresholds: (value, low, high) with the accepted open interval (low, high].
THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "initial_loss_factor": (2.0, 1.0, math.inf),  # first loss within ln(C) * [1/f, f]
    "input_max_abs": (20.0, 0.0, math.inf),  # |x| above: unscaled inputs
    "grad_vanishing_ratio": (1e-3, 0.0, 1.0),  # |g_first| / |g_last| below: vanishing
    "grad_exploding_ratio": (1e3, 1.0, math.inf),  # |g_first| / |g_last| above: exploding
    "grad_exploding_norm": (1e3, 0.0, math.inf),  # any layer's |g| above: exploding
    "weights_huge": (1e3, 0.0, math.inf),  # max |w| above: huge weights
    "update_ratio_low": (3e-5, 0.0, 1.0),  # median |dw|/|w| below: raise the LR
    "update_ratio_high": (5e-2, 0.0, math.inf),  # median |dw|/|w| above: lower the LR
    "dead_warning": (0.5, 0.0, 1.0),  # dead fraction of a layer's units: warning
    "dead_error": (0.99, 0.0, 1.0),  # ... and error (a dead layer)
    "saturated_fraction": (0.5, 0.0, 1.0),  # saturated sigmoid/tanh outputs
    "diverging_factor": (2.0, 1.0, math.inf),  # loss above factor x initial: diverging
    "flat_tolerance": (0.02, 0.0, 1.0),  # never below (1 - tol) x initial: flat
    "grace_steps": (100, 0.0, math.inf),  # steps before the loss may be called flat
}


def check_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    """Defaults of :data:`THRESHOLDS` updated with ``thresholds`` (names and ranges checked).

    Example:
        >>> check_thresholds({"dead_warning": 0.6})["dead_warning"]
        0.6
        >>> check_thresholds({"dead_warning": 1.5})
        Traceback (most recent call last):
        ...
        ValueError: `thresholds['dead_warning']` must be a number > 0 and <= 1, but got thresholds['dead_warning']=1.5
    """
    out = {name: value for name, (value, _, _) in THRESHOLDS.items()}
    if thresholds is None:
        return out
    if not isinstance(thresholds, Mapping):
        raise TypeError(f"`thresholds` must be a mapping name -> value, but got {thresholds!r}")
    check_names("thresholds", list(thresholds), THRESHOLDS)
    for name, value in thresholds.items():
        _, low, high = THRESHOLDS[name]
        out[name] = check_number(
            f"thresholds[{name!r}]",
            value,
            low=low,
            high=None if math.isinf(high) else high,
            low_open=True,
        )
    if out["dead_warning"] > out["dead_error"]:
        raise ValueError(
            "`thresholds['dead_warning']` must be <= thresholds['dead_error'], but got "
            f"{out['dead_warning']} > {out['dead_error']}"
        )
    return out


def _channels(x: torch.Tensor) -> torch.Tensor:
    """(channels, values): dim 1 of images / sequences, the features of (N, F) tables."""
    dim = 1 if x.ndim >= 2 else 0
    return x.detach().transpose(0, dim).reshape(x.shape[dim], -1).float()


def input_findings(
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    num_classes: int | None,
    step: int,
    th: Mapping[str, float],
) -> list[Finding]:
    """Scale and constant channels of the inputs ``x``; integer targets ``y`` in ``[0, C)``.

    Example:
        >>> x = torch.randint(0, 256, (8, 3, 4, 4)).float()  # raw 0-255 pixels
        >>> [f.code for f in input_findings(x, torch.arange(8), 10, 0, check_thresholds(None))]
        ['inputs_unscaled']
    """
    found: list[Finding] = []
    if x is not None and x.is_floating_point() and x.numel() and x.shape[0] > 1:
        values = _channels(x)
        max_abs = float(values.abs().max())
        mean_abs = float(values.mean(dim=1).abs().max())
        if max_abs > th["input_max_abs"] or mean_abs > th["input_max_abs"] / 4:
            found.append(
                Finding(
                    "inputs_unscaled",
                    "warning",
                    step,
                    "inputs",
                    max_abs,
                    f"|x| <= {th['input_max_abs']:g}, mean ~0",
                    f"max |x|={max_abs:.3g}, max |channel mean|={mean_abs:.3g}",
                )
            )
        if x.ndim >= 3:  # images / sequences: a constant channel is a pipeline bug
            constant = (values.std(dim=1) == 0).nonzero().flatten().tolist()
            if constant:
                found.append(
                    Finding(
                        "inputs_constant_channel",
                        "warning",
                        step,
                        f"channel {constant[0]}",
                        float(len(constant)),
                        "std > 0",
                        f"{len(constant)} constant channel(s): {constant[:8]}",
                    )
                )
    if y is not None and not y.is_floating_point() and y.numel():
        low, high = int(y.min()), int(y.max())
        if low < 0 or (num_classes is not None and high >= num_classes):
            bad = low if low < 0 else high
            found.append(
                Finding(
                    "labels_out_of_range",
                    "error",
                    step,
                    "targets",
                    float(bad),
                    f"[0, {num_classes})" if num_classes else ">= 0",
                    f"targets span [{low}, {high}]",
                )
            )
    return found


def initial_loss_findings(
    loss: float, loss_input: torch.Tensor | None, binary: bool, step: int, th: Mapping[str, float]
) -> list[Finding]:
    """The first loss against ln(C) (C = ``loss_input.shape[1]``) or ln 2; softmax outputs.

    Example:
        >>> logits = torch.softmax(torch.randn(4, 10), dim=1)  # probabilities, not logits
        >>> [f.code for f in initial_loss_findings(2.3, logits, False, 0, check_thresholds(None))]
        ['softmax_before_loss']
    """
    found: list[Finding] = []
    classes = None
    if loss_input is not None and loss_input.ndim >= 2 and not binary:
        classes = loss_input.shape[1]
        rows = loss_input.detach().float().movedim(1, -1).reshape(-1, classes)
        if classes > 1 and bool((rows >= 0).all()) and float((rows.sum(1) - 1).abs().max()) < 1e-3:
            found.append(
                Finding(
                    "softmax_before_loss",
                    "error",
                    step,
                    "loss input",
                    float(rows.sum(1).mean()),
                    "raw logits",
                    "every row of the loss input is >= 0 and sums to 1",
                )
            )
    expected = math.log(2) if binary else math.log(classes) if classes and classes > 1 else None
    factor = th["initial_loss_factor"]
    if (
        expected is not None
        and math.isfinite(loss)
        and (loss > expected * factor or loss < expected / factor)
    ):
        found.append(
            Finding(
                "initial_loss",
                "warning",
                step,
                "loss",
                loss,
                f"~{expected:.3g} ({'ln 2' if binary else f'ln {classes}'})",
            )
        )
    return found


def gradient_findings(
    norms: Sequence[tuple[str, float]], step: int, th: Mapping[str, float]
) -> list[Finding]:
    """Per-layer gradient norms, first layer to last: non-finite, exploding, vanishing.

    Example:
        >>> norms = [("net.0", 1e-7), ("net.2", 1e-4), ("net.4", 0.5)]
        >>> [(f.code, f.layer) for f in gradient_findings(norms, 0, check_thresholds(None))]
        [('grad_vanishing', 'net.0')]
    """
    bad = [name for name, n in norms if not math.isfinite(n)]
    if bad:  # backward runs last layer first: the last one listed went non-finite first
        return [Finding("nonfinite_grad", "error", step, bad[-1], math.nan, "finite")]
    found: list[Finding] = []
    biggest = max(norms, key=lambda kv: kv[1], default=None)
    if biggest is not None and biggest[1] > th["grad_exploding_norm"]:
        found.append(
            Finding(
                "grad_exploding",
                "error",
                step,
                biggest[0],
                biggest[1],
                f"|g| <= {th['grad_exploding_norm']:g}",
            )
        )
    if len(norms) >= 2 and norms[-1][1] > 0:
        first_name, first = norms[0]
        ratio = first / norms[-1][1]
        if ratio < th["grad_vanishing_ratio"]:
            found.append(
                Finding(
                    "grad_vanishing",
                    "warning",
                    step,
                    first_name,
                    ratio,
                    f"|g_first|/|g_last| >= {th['grad_vanishing_ratio']:g}",
                    f"first layer |g|={first:.3g}, last layer ({norms[-1][0]}) |g|="
                    f"{norms[-1][1]:.3g}",
                )
            )
        elif ratio > th["grad_exploding_ratio"] and not found:
            found.append(
                Finding(
                    "grad_exploding",
                    "warning",
                    step,
                    first_name,
                    ratio,
                    f"|g_first|/|g_last| <= {th['grad_exploding_ratio']:g}",
                )
            )
    return found


def weight_findings(
    stats: Sequence[tuple[str, bool, bool, float]], step: int, th: Mapping[str, float]
) -> list[Finding]:
    """Weight matrices ``(layer, all_zero, rows_identical, max_abs)``, first to last layer.

    All-zero weights are an error except in the last layer (a zero-initialised head still
    learns); identical rows are an error (the units stay identical); the largest weight above
    the threshold a warning.

    Example:
        >>> stats = [("net.0", True, True, 0.0), ("net.2", False, False, 0.3)]
        >>> [(f.code, f.layer) for f in weight_findings(stats, 0, check_thresholds(None))]
        [('weights_zero', 'net.0')]
    """
    found: list[Finding] = []
    biggest = max(stats, key=lambda s: s[3], default=None)
    if biggest is not None and biggest[3] > th["weights_huge"]:
        expected = f"<= {th['weights_huge']:g}"
        found.append(Finding("weights_huge", "warning", step, biggest[0], biggest[3], expected))
    for i, (layer, zero, identical, max_abs) in enumerate(stats):
        last = i == len(stats) - 1
        if zero:
            severity = "warning" if last else "error"
            found.append(Finding("weights_zero", severity, step, layer, 0.0, "random init"))
        elif identical:
            found.append(
                Finding("weights_symmetric", "error", step, layer, max_abs, "distinct rows")
            )
    return found


def update_ratio_findings(
    ratios: Mapping[str, Sequence[float]], step: int, th: Mapping[str, float]
) -> list[Finding]:
    """Median update-to-weight ratio per param group over the window, against the ~1e-3 band.

    Example:
        >>> [f.code for f in update_ratio_findings({"all": [1e-9] * 3}, 5, check_thresholds(None))]
        ['update_ratio_low']
    """
    found: list[Finding] = []
    band = f"[{th['update_ratio_low']:g}, {th['update_ratio_high']:g}] (~1e-3)"
    for group, values in ratios.items():
        finite = sorted(v for v in values if math.isfinite(v))
        if len(finite) < 3:
            continue
        median = finite[len(finite) // 2]
        if median > th["update_ratio_high"]:
            found.append(Finding("update_ratio_high", "warning", step, group, median, band))
        elif median < th["update_ratio_low"]:
            found.append(Finding("update_ratio_low", "warning", step, group, median, band))
    return found


def activation_findings(
    dead: Mapping[str, float], saturated: Mapping[str, float], step: int, th: Mapping[str, float]
) -> list[Finding]:
    """Dead-unit fraction per ReLU-family module; saturated fraction per sigmoid/tanh module.

    Example:
        >>> [(f.code, f.severity) for f in activation_findings({"act": 1.0}, {}, 0, check_thresholds(None))]
        [('dead_units', 'error')]
    """
    found: list[Finding] = []
    for layer, fraction in dead.items():
        if fraction >= th["dead_warning"]:
            severity = "error" if fraction >= th["dead_error"] else "warning"
            expected = f"< {th['dead_warning']:g} of units"
            found.append(Finding("dead_units", severity, step, layer, fraction, expected))
    for layer, fraction in saturated.items():
        if fraction >= th["saturated_fraction"]:
            expected = f"< {th['saturated_fraction']:g} of outputs"
            found.append(Finding("saturated_units", "warning", step, layer, fraction, expected))
    return found


def loss_curve_findings(
    losses: Sequence[tuple[int, float]], step: int, th: Mapping[str, float]
) -> list[Finding]:
    """The sampled loss curve ``[(step, loss), ...]``: diverging, flat, oscillating.

    Example:
        >>> curve = [(s, 2.30) for s in range(0, 201, 20)]
        >>> [f.code for f in loss_curve_findings(curve, 200, check_thresholds(None))]
        ['loss_flat']
    """
    if len(losses) < 2:
        return []
    initial = losses[0][1]
    values = [v for _, v in losses]
    last = values[-1]
    if not math.isfinite(initial) or initial <= 0 or not math.isfinite(last):
        return []
    recent = values[-3:]
    if min(recent) > th["diverging_factor"] * initial:
        return [
            Finding(
                "loss_diverging",
                "error",
                step,
                "loss",
                last,
                f"<= {th['diverging_factor']:g} x initial {initial:.3g}",
            )
        ]
    if step >= th["grace_steps"] and min(values[1:]) >= (1 - th["flat_tolerance"]) * initial:
        expected = f"below {(1 - th['flat_tolerance']) * initial:.3g} by step {step}"
        return [Finding("loss_flat", "error", step, "loss", min(values[1:]), expected)]
    return _oscillation(values[-9:], step)


def _oscillation(window: Sequence[float], step: int) -> list[Finding]:
    if len(window) < 9:
        return []
    diffs = [b - a for a, b in itertools.pairwise(window)]
    turns = sum(1 for a, b in itertools.pairwise(diffs) if a * b < 0)
    mean = sum(window) / len(window)
    swing = (max(window) - min(window)) / mean if mean > 0 else 0.0
    if turns >= 6 and swing > 0.5 and window[-1] >= 0.9 * window[0]:
        return [Finding("loss_oscillating", "warning", step, "loss", swing, "a downward trend")]
    return []


def first_batch_tensors(batch: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(inputs, targets) of a batch: ``(x, y, ...)`` sequences or dicts with usual keys.

    Example:
        >>> x, y = first_batch_tensors({"image": torch.zeros(2, 3), "label": torch.ones(2)})
        >>> x.shape, y.tolist()
        (torch.Size([2, 3]), [1.0, 1.0])
    """
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        x = next(
            (batch[k] for k in ("x", "image", "images", "input", "inputs") if k in batch), None
        )
        y = next(
            (batch[k] for k in ("y", "label", "labels", "target", "targets") if k in batch), None
        )
        return x, y
    if isinstance(batch, (list, tuple)) and batch:
        x = batch[0] if isinstance(batch[0], torch.Tensor) else None
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return x, y
    return None, None
