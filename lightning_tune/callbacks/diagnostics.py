"""The practitioner's debugging checklist as a callback: findings that name the bug, layer, fix."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_tune._compat import check_trainer
from lightning_tune._lightning import Callback
from lightning_tune._validation import check_choice, check_int, check_names
from lightning_tune.diagnostics import checks as C
from lightning_tune.diagnostics.findings import (
    CHECKS,
    SEVERITIES,
    DiagnosticError,
    Finding,
    format_findings,
)
from lightning_tune.diagnostics.probes import (
    ActivationProbe,
    grad_norms,
    layer_map,
    weight_stats,
)

if TYPE_CHECKING:
    import pytorch_lightning as pl


__all__ = ["TrainingDiagnostics"]

_ACTIONS = ("ignore", "warn", "raise", "stop")
#: Loss modules whose input and target the loss checks read, and whether they are binary.
_LOSSES: dict[type[nn.Module], bool] = {
    nn.CrossEntropyLoss: False,
    nn.NLLLoss: False,
    nn.BCEWithLogitsLoss: True,
    nn.BCELoss: True,
}
_EVAL_SENSITIVE = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_WINDOW = 5  # sampled steps in the update-ratio median


def _actions(on_error: Any) -> dict[str, str]:
    if isinstance(on_error, str):
        check_choice("on_error", on_error, _ACTIONS[1:])
        return {"info": "ignore", "warning": "ignore", "error": on_error}
    if not isinstance(on_error, Mapping):
        raise TypeError(
            f"`on_error` must be 'warn', 'raise', 'stop' or a mapping severity -> action, but "
            f"got on_error={on_error!r}"
        )
    check_names("on_error", list(on_error), SEVERITIES)
    for severity, action in on_error.items():
        check_choice(f"on_error[{severity!r}]", action, _ACTIONS)
    return {"info": "ignore", "warning": "ignore", "error": "warn", **on_error}


class TrainingDiagnostics(Callback):
    """Catch the classic training bugs while they happen; every finding names the layer and fix.

    On sampled steps (the first ``first_steps`` training batches, then every ``every_n_steps``)
    the callback measures and checks (``checks=`` selects by name, see :data:`CHECKS`):

    * ``initial_loss``: the first loss against ln(C) / ln 2, softmax outputs fed to the loss;
    * ``inputs``: per-channel scale of the first batches, constant channels, labels outside
      ``[0, C)``, a single class in the first batches, the same batch fed again;
    * ``gradients``: per-layer gradient norms (timm layer groups, or modules), vanishing and
      exploding; ``weights``: all-zero, identical rows (symmetric init), huge;
    * ``update_ratio``: ``|dw|/|w|`` per optimizer param group (median over the window)
      against the ~1e-3 band; ``activations``: dead ReLU-family units, saturated sigmoid/tanh
      (forward hooks, on sampled steps only);
    * ``nonfinite``: NaN/inf loss, gradients and module outputs, naming the first module;
    * ``frozen``: ``requires_grad=False`` parameters that changed, BatchNorm statistics of
      frozen layers that drifted; ``eval_mode``: dropout active during validation;
    * ``loss_curve``: diverging, flat at the initial value after ``grace_steps``, oscillating.

    Unsampled steps cost a counter check. Findings are kept in :attr:`findings` (one per code
    and layer, with a count), logged as ``diagnostics/...`` scalars, printed as a table at fit
    end, saved in checkpoints; error-level findings are acted on at once per ``on_error``.

    The loss checks read the input and target of the module's loss module
    (``nn.CrossEntropyLoss``, ``nn.NLLLoss``, ``nn.BCEWithLogitsLoss``, ``nn.BCELoss``; the one
    found, or ``loss_attribute``), as :class:`LabelSmoothing` does.

    Args:
        checks: ``"all"`` or a list of check names.
        every_n_steps: sample every this many training batches (>= 1).
        first_steps: also sample each of the first this many batches (>= 0).
        on_error: what an error-level finding does: ``"warn"`` (print it at once),
            ``"raise"`` (:class:`DiagnosticError`) or ``"stop"`` (``trainer.should_stop``); or a
            mapping severity -> ``"ignore" | "warn" | "raise" | "stop"``.
        thresholds: overrides of :data:`~lightning_tune.diagnostics.checks.THRESHOLDS`.
        loss_attribute: name of the loss module (dotted for submodules); None: find it.
        num_classes: classes for the label check when no loss module tells (None: from
            ``hparams.num_classes``).
        input_batches: how many first batches the input checks look at.
        verbose: print the findings table at fit end.

    Attributes:
        findings: the findings so far, in the order found.
        history: per sampled step: ``step``, ``loss``, ``grad_norm``, ``update_ratio``,
            ``dead`` (for :func:`~lightning_tune.diagnostics.plot_diagnostics`).

    Example:
        >>> diagnostics = TrainingDiagnostics(every_n_steps=10, on_error="stop")
        >>> sorted(diagnostics.checks)[:3]
        ['activations', 'eval_mode', 'frozen']
        >>> TrainingDiagnostics(checks=["gradient"])
        Traceback (most recent call last):
        ...
        ValueError: `checks` may contain ['activations', 'eval_mode', 'frozen', 'gradients', 'initial_loss', 'inputs', 'loss_curve', 'nonfinite', 'update_ratio', 'weights'], but got unknown ['gradient'] in checks=['gradient']
    """

    def __init__(
        self,
        checks: Literal["all"] | Sequence[str] = "all",
        every_n_steps: int = 20,
        first_steps: int = 5,
        on_error: Literal["warn", "raise", "stop"] | Mapping[str, str] = "warn",
        thresholds: Mapping[str, float] | None = None,
        loss_attribute: str | None = None,
        num_classes: int | None = None,
        input_batches: int = 3,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        self.explicit_checks = checks != "all"
        self.checks = set(CHECKS) if checks == "all" else set(check_names("checks", checks, CHECKS))
        self.every_n_steps = check_int("every_n_steps", every_n_steps, minimum=1)
        self.first_steps = check_int("first_steps", first_steps, minimum=0)
        self.input_batches = check_int("input_batches", input_batches, minimum=0)
        if num_classes is not None:
            check_int("num_classes", num_classes, minimum=1)
        if loss_attribute is not None and (
            not isinstance(loss_attribute, str) or not loss_attribute
        ):
            raise TypeError(f"`loss_attribute` must be a name or None, but got {loss_attribute=!r}")
        self.on_error = on_error
        self.actions = _actions(on_error)
        self.thresholds = C.check_thresholds(thresholds)
        self.loss_attribute = loss_attribute
        self.num_classes = num_classes
        self.verbose = bool(verbose)
        self.findings: list[Finding] = []
        self.history: list[dict[str, Any]] = []
        self._index: dict[tuple[str, str], Finding] = {}
        self._batches = 0
        self._losses: list[tuple[int, float]] = []
        self._ratios: dict[str, deque[float]] = {}
        self._inputs_seen = 0
        self._labels_seen: set[int] = set()
        self._sampled = False
        self._step = 0
        self._reset_runtime()
        key = {"every_n_steps": every_n_steps, "checks": sorted(self.checks)}
        self._state_key = self._generate_state_key(**key)

    def _reset_runtime(self) -> None:
        self._probe: ActivationProbe | None = None
        self._handles: list[Any] = []
        self._loss_module: nn.Module | None = None
        self._binary = False
        self._loss_input: torch.Tensor | None = None
        self._loss_value: torch.Tensor | None = None
        self._before: list[tuple[str, list[torch.Tensor]]] = []
        self._after: list[list[torch.Tensor]] = []
        self._prev_x: torch.Tensor | None = None
        self._frozen: dict[str, torch.Tensor] = {}
        self._frozen_bn: dict[str, torch.Tensor] = {}
        self._layers: list[tuple[str, list[str]]] = []
        self._watched = None
        self._dropouts: list[tuple[str, nn.Module]] = []

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    @property
    def errors(self) -> list[Finding]:
        """The error-level findings."""
        return [f for f in self.findings if f.severity == "error"]

    def table(self, min_severity: str = "info") -> str:
        """The findings as a text table (see :func:`format_findings`)."""
        return format_findings(self.findings, min_severity)

    # ------------------------------------------------------------------------------- setup
    def find_loss(self, pl_module: nn.Module) -> tuple[str, nn.Module] | None:
        """The loss module the loss checks read (None if there is none and none was named)."""
        if self.loss_attribute is not None:
            try:
                found = pl_module.get_submodule(self.loss_attribute)
            except AttributeError:
                found = None
            if not isinstance(found, nn.Module) or found is pl_module:
                raise ValueError(
                    f"TrainingDiagnostics(loss_attribute={self.loss_attribute!r}): "
                    f"{type(pl_module).__name__} has no such loss module; its modules: "
                    f"{[n for n, _ in pl_module.named_children()]}"
                )
            return self.loss_attribute, found
        losses = [(n, m) for n, m in pl_module.named_modules() if type(m) in _LOSSES]
        return losses[0] if len(losses) == 1 else None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_trainer(trainer, self)
        if stage != "fit":
            return
        self._reset_runtime()
        self._layers = layer_map(pl_module)
        self._watched: list[tuple[str, nn.Module]] | None = None  # the probe's modules
        self._dropouts = [
            (n, m) for n, m in pl_module.named_modules() if isinstance(m, _EVAL_SENSITIVE)
        ]
        found = self.find_loss(pl_module) if "initial_loss" in self.checks else None
        if found is not None:
            self._loss_module = found[1]
            self._binary = _LOSSES.get(type(found[1]), False)
        elif "initial_loss" in self.checks and self.explicit_checks:
            raise ValueError(
                f"TrainingDiagnostics(checks=[..., 'initial_loss']) needs the loss of "
                f"{type(pl_module).__name__}, but it has no single nn.CrossEntropyLoss / "
                "NLLLoss / BCEWithLogitsLoss / BCELoss submodule. Store the loss as a module "
                "attribute (self.criterion = nn.CrossEntropyLoss()) and call it in "
                "training_step, or pass `loss_attribute=` naming it."
            )
        elif "initial_loss" in self.checks:
            self._emit(trainer, [Finding("loss_unreachable", "info", trainer.global_step)])

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "frozen" in self.checks:
            self._snapshot_frozen(pl_module, trainer.global_step)
        if "weights" in self.checks:
            params = dict(pl_module.named_parameters())
            stats = weight_stats(self._layers, params)
            self._emit(trainer, C.weight_findings(stats, trainer.global_step, self.thresholds))

    # ----------------------------------------------------------------------- sampled steps
    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        b = self._batches
        self._batches += 1
        self._sampled = b < self.first_steps or b % self.every_n_steps == 0
        if self._sampled:
            self._step = trainer.global_step
            self.history.append({"step": self._step})
            self._sample_start(trainer, pl_module, batch, b)

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._sampled:
            self._sample_gradients(trainer, pl_module, optimizer)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._sampled:
            self._sampled = False
            self._sample_end(trainer, pl_module, outputs)

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and "eval_mode" in self.checks and self._dropouts:
            training = [n for n, m in self._dropouts if m.training]
            if training:
                self._emit(
                    trainer,
                    [
                        Finding(
                            "dropout_in_eval",
                            "warning",
                            trainer.global_step,
                            training[0],
                            float(len(training)),
                            "eval mode",
                            f"{len(training)} dropout module(s) in train mode in validation",
                        )
                    ],
                )

    # ----------------------------------------------------------------------- measurement
    def _sample_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, b: int
    ) -> None:
        from lightning_tune.diagnostics.sampling import sample_start

        sample_start(self, trainer, pl_module, batch, b)

    def _sample_gradients(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = self._step
        params = dict(pl_module.named_parameters())
        entry = self.history[-1]
        if "gradients" in self.checks or "nonfinite" in self.checks:
            norms = grad_norms(self._layers, params)
            entry["grad_norm"] = dict(norms)
            found = C.gradient_findings(norms, step, self.thresholds)
            if "gradients" not in self.checks:
                found = [f for f in found if f.code == "nonfinite_grad"]
            self._emit(trainer, found)
        if "update_ratio" in self.checks:
            groups = optimizer.param_groups
            self._before = [
                (str(g.get("name", f"group_{i}")), [p.detach().clone() for p in g["params"]])
                for i, g in enumerate(groups)
            ]
            self._after = [g["params"] for g in groups]

    def _sample_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any) -> None:
        from lightning_tune.diagnostics.sampling import sample_end

        sample_end(self, trainer, pl_module, outputs)

    def _snapshot_frozen(self, pl_module: pl.LightningModule, step: int) -> list[Finding]:
        """Compare frozen params / BN statistics with the last snapshot, then take a new one."""
        from lightning_tune.diagnostics.sampling import frozen_findings

        found, self._frozen_bn = frozen_findings(self, pl_module, step)
        self._frozen = {
            n: p.detach().clone() for n, p in pl_module.named_parameters() if not p.requires_grad
        }
        return found

    # ----------------------------------------------------------------------------- output
    def _emit(self, trainer: pl.Trainer, found: Sequence[Finding]) -> None:
        for finding in found:
            known = self._index.get(finding.key)
            if known is not None:
                known.count += 1
                continue
            self._index[finding.key] = finding
            self.findings.append(finding)
            action = self.actions[finding.severity]
            if action in ("warn", "stop"):
                rank_zero_warn(f"TrainingDiagnostics: {finding.summary()}")
            if action == "stop":
                trainer.should_stop = True
            elif action == "raise":
                raise DiagnosticError(finding)

    def _log(self, trainer: pl.Trainer, entry: Mapping[str, Any]) -> None:
        metrics: dict[str, float] = {}
        if entry.get("loss") is not None:
            metrics["diagnostics/loss"] = entry["loss"]
        for key, name in (("grad_norm", "grad_norm"), ("update_ratio", "update_ratio")):
            for layer, value in entry.get(key, {}).items():
                metrics[f"diagnostics/{name}/{layer}"] = value
        for layer, value in entry.get("dead", {}).items():
            metrics[f"diagnostics/dead_fraction/{layer}"] = value
        for severity in ("warning", "error"):
            count = sum(1 for f in self.findings if f.severity == severity)
            metrics[f"diagnostics/{severity}s"] = float(count)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.verbose and trainer.is_global_zero:
            print(f"TrainingDiagnostics findings:\n{self.table()}")

    def _detach(self) -> None:
        if self._probe is not None:
            self._probe.detach()
            self._probe = None
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._detach()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._detach()

    # ------------------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.to_dict() for f in self.findings],
            "history": [dict(e) for e in self.history],
            "batches": self._batches,
            "losses": [list(x) for x in self._losses],
            "ratios": {k: list(v) for k, v in self._ratios.items()},
            "inputs_seen": self._inputs_seen,
            "labels_seen": sorted(self._labels_seen),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.findings = [Finding.from_dict(d) for d in state_dict.get("findings", [])]
        self._index = {f.key: f for f in self.findings}
        self.history = [dict(e) for e in state_dict.get("history", [])]
        self._batches = int(state_dict.get("batches", 0))
        self._losses = [(int(s), float(v)) for s, v in state_dict.get("losses", [])]
        self._ratios = {
            k: deque(v, maxlen=_WINDOW) for k, v in state_dict.get("ratios", {}).items()
        }
        self._inputs_seen = int(state_dict.get("inputs_seen", 0))
        self._labels_seen = set(state_dict.get("labels_seen", []))
