"""The work of :class:`~lightning_tune.callbacks.TrainingDiagnostics` on a sampled step.

Kept apart from the callback so that its hooks stay thin: an unsampled step never gets here.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import torch

from lightning_tune.diagnostics import checks as C
from lightning_tune.diagnostics.findings import Finding
from lightning_tune.diagnostics.probes import ActivationProbe, norm_buffers, weight_stats

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from lightning_tune.callbacks.diagnostics import TrainingDiagnostics

__all__ = ["frozen_findings", "sample_end", "sample_start"]

_WINDOW = 5


def _num_classes(diag: TrainingDiagnostics, pl_module: pl.LightningModule) -> int | None:
    if diag.num_classes is not None:
        return diag.num_classes
    value = getattr(pl_module, "hparams", {}).get("num_classes")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def sample_start(
    diag: TrainingDiagnostics, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, b: int
) -> None:
    """Input checks, the same-batch check, frozen parameters, then the hooks for this batch."""
    step = diag._step
    x, y = C.first_batch_tensors(batch)
    found: list[Finding] = []
    if "inputs" in diag.checks:
        found += _input_checks(diag, module, x, y, step)
    if "frozen" in diag.checks:
        found += diag._snapshot_frozen(module, step)
    diag._emit(trainer, found)
    nxt = b + 1
    if "inputs" in diag.checks and (nxt < diag.first_steps or nxt % diag.every_n_steps == 0):
        diag._prev_x = x.detach().clone() if isinstance(x, torch.Tensor) else None
    else:
        diag._prev_x = None
    units = "activations" in diag.checks
    if units or "nonfinite" in diag.checks:
        diag._probe = ActivationProbe(
            module, units=units, nonfinite="nonfinite" in diag.checks, watched=diag._watched
        )
        diag._watched = diag._probe.watched()
        diag._probe.attach()
    if diag._loss_module is not None and not diag._losses:
        _watch_loss(diag, trainer, step)


def _input_checks(
    diag: TrainingDiagnostics,
    module: pl.LightningModule,
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    step: int,
) -> list[Finding]:
    found: list[Finding] = []
    prev = diag._prev_x
    same = prev is not None and isinstance(x, torch.Tensor) and prev.shape == x.shape
    if same and torch.equal(prev, x.detach()):
        found.append(
            Finding("repeated_batch", "warning", step, "inputs", 1.0, "a new batch each step")
        )
    if diag._inputs_seen >= diag.input_batches:
        return found
    diag._inputs_seen += 1
    found += C.input_findings(x, y, _num_classes(diag, module), step, diag.thresholds)
    if isinstance(y, torch.Tensor) and not y.is_floating_point() and y.ndim == 1:
        diag._labels_seen.update(int(v) for v in y.unique().tolist())
        if diag._inputs_seen == diag.input_batches and len(diag._labels_seen) == 1:
            label = float(next(iter(diag._labels_seen)))
            expected = f"several classes in {diag.input_batches} batches"
            found.append(Finding("class_imbalance", "warning", step, "targets", label, expected))
    return found


def _watch_loss(diag: TrainingDiagnostics, trainer: pl.Trainer, step: int) -> None:
    """Hooks on the loss module for the first sampled batch: its input, target and value."""

    def pre_hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if len(args) < 2 or not isinstance(args[0], torch.Tensor):
            return
        diag._loss_input = args[0].detach()
        target = args[1]
        if (
            not diag._binary
            and isinstance(target, torch.Tensor)
            and not target.is_floating_point()
            and args[0].ndim >= 2
        ):  # before the loss runs: an out-of-range label would crash it
            found = C.input_findings(None, target, args[0].shape[1], step, diag.thresholds)
            diag._emit(trainer, found)

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.numel() == 1:
            diag._loss_value = output.detach()

    assert diag._loss_module is not None
    diag._handles.append(diag._loss_module.register_forward_pre_hook(pre_hook))
    diag._handles.append(diag._loss_module.register_forward_hook(hook))


def _loss_of(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


def sample_end(
    diag: TrainingDiagnostics, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any
) -> None:
    """Read the hooks and the loss, compare weights with before the step, record and emit."""
    step = diag._step
    entry = diag.history[-1]
    probe = diag._probe.results() if diag._probe is not None else {}
    diag._detach()
    found: list[Finding] = []
    loss = _loss_of(outputs)
    value = float(loss.detach()) if loss is not None else None
    entry["loss"] = value
    if "activations" in diag.checks:
        entry["dead"] = probe.get("dead", {})
        found += C.activation_findings(
            probe.get("dead", {}), probe.get("saturated", {}), step, diag.thresholds
        )
    found += _loss_findings(diag, probe.get("first_nonfinite"), value, step)
    if diag._before:
        entry["update_ratio"] = _update_ratios(diag)
        found += C.update_ratio_findings(diag._ratios, step, diag.thresholds)
    if "weights" in diag.checks:
        stats = weight_stats(diag._layers, dict(module.named_parameters()), max_only=True)
        found += [
            f for f in C.weight_findings(stats, step, diag.thresholds) if f.code == "weights_huge"
        ]
    diag._emit(trainer, found)
    diag._log(trainer, entry)


def _loss_findings(
    diag: TrainingDiagnostics, first_nonfinite: str | None, value: float | None, step: int
) -> list[Finding]:
    found: list[Finding] = []
    seen = any(f.code == "nonfinite_activation" for f in diag.findings)
    if first_nonfinite is not None and not seen:  # later ones only show where NaN spread to
        found.append(
            Finding(
                "nonfinite_activation",
                "error",
                step,
                first_nonfinite,
                math.nan,
                "finite outputs",
                "the first module (in execution order) whose output is NaN/inf",
            )
        )
    if value is None:
        return found
    if not math.isfinite(value) and "nonfinite" in diag.checks:
        message = (
            f"first non-finite output: {first_nonfinite}"
            if first_nonfinite
            else "every module output was finite: the loss computation itself (log(0)? x/0?)"
        )
        found.append(Finding("nonfinite_loss", "error", step, "loss", value, "finite", message))
        return found
    if not diag._losses and "initial_loss" in diag.checks:
        first = float(diag._loss_value) if diag._loss_value is not None else value
        found += C.initial_loss_findings(
            first, diag._loss_input, diag._binary, step, diag.thresholds
        )
        diag._loss_input = diag._loss_value = None
    diag._losses.append((step, value))
    if "loss_curve" in diag.checks:
        found += C.loss_curve_findings(diag._losses, step, diag.thresholds)
    return found


def _update_ratios(diag: TrainingDiagnostics) -> dict[str, float]:
    ratios: dict[str, float] = {}
    for (name, before), params in zip(diag._before, diag._after):
        if not before:
            continue
        norm = torch.linalg.vector_norm
        dw = norm(
            torch.stack([norm(p.detach() - b, dtype=torch.float32) for p, b in zip(params, before)])
        )
        w = norm(torch.stack([norm(b, dtype=torch.float32) for b in before]))
        ratios[name] = float(dw / w) if float(w) > 0 else math.nan
        diag._ratios.setdefault(name, deque(maxlen=_WINDOW)).append(ratios[name])
    diag._before, diag._after = [], []
    return ratios


def frozen_findings(
    diag: TrainingDiagnostics, module: pl.LightningModule, step: int
) -> tuple[list[Finding], dict[str, torch.Tensor]]:
    """Frozen parameters that changed and frozen BatchNorm statistics that drifted.

    Also returns copies of the frozen BatchNorm statistics now (the next snapshot).
    """
    found: list[Finding] = []
    params = dict(module.named_parameters())
    for name, old in diag._frozen.items():
        p = params.get(name)
        if p is None or p.requires_grad or p.shape != old.shape:
            continue
        change = float((p.detach() - old).abs().max())
        if change > 0:
            found.append(Finding("frozen_param_changed", "error", step, name, change, "unchanged"))
            break
    current = norm_buffers(module)
    for name, old in diag._frozen_bn.items():
        new = current.get(name)
        if new is not None and new.shape == old.shape and not torch.equal(new, old):
            drift = float((new - old).abs().max())
            found.append(Finding("frozen_bn_drift", "warning", step, name, drift, "unchanged"))
            break
    return found, current
