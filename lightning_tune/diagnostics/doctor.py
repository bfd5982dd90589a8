"""``lightning-tune doctor``: a pre-flight check of a module and its data before a long run.

One forward/backward with every check, an initial-loss check, overfitting one small batch, a
short LR range test, then the findings table and plots. Exit code 0 when healthy, 1 when an
error-level finding was raised (2 for bad input, as every command).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lightning_tune._compat import run_namespace
from lightning_tune._validation import check_int, check_number, parse_assignments
from lightning_tune.diagnostics.findings import Finding, format_findings
from lightning_tune.range_test import RangeTestResult, lr_range_test

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["DoctorReport", "add_subcommand", "build_from_config", "doctor"]

_QUIET = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


@dataclass
class DoctorReport:
    """What :func:`doctor` found.

    Attributes:
        findings: the findings of the overfit run (and ``overfit_failed``).
        overfit_losses: the training loss of each overfit step on the one batch.
        lr_range: the LR range test (None if skipped or the run crashed).
        plots: the PNGs written.
        crash: the error that ended the overfit run, if any.
    """

    findings: list[Finding] = field(default_factory=list)
    overfit_losses: list[float] = field(default_factory=list)
    lr_range: RangeTestResult | None = None
    plots: list[pathlib.Path] = field(default_factory=list)
    crash: str | None = None

    @property
    def healthy(self) -> bool:
        """No error-level finding and no crash."""
        return self.crash is None and not any(f.severity == "error" for f in self.findings)

    @property
    def exit_code(self) -> int:
        """0 when healthy, 1 otherwise."""
        return 0 if self.healthy else 1

    def text(self) -> str:
        """The report as text: overfit summary, LR suggestion, findings table, plots."""
        lines = []
        losses = [v for v in self.overfit_losses if math.isfinite(v)]
        if losses:
            lines.append(
                f"overfit one batch: loss {losses[0]:.4g} -> {min(losses[-3:]):.4g} in "
                f"{len(self.overfit_losses)} steps ({losses[0] / max(min(losses[-3:]), 1e-12):.3g}x)"
            )
        if self.crash:
            lines.append(f"the run crashed: {self.crash}")
        if self.lr_range is not None:
            lr = self.lr_range.suggestion
            lines.append(
                "LR range test: "
                + (f"suggested lr={lr:.3g}" if lr else "the loss never fell: no suggestion")
            )
        lines.append(format_findings(self.findings))
        lines += [f"plot: {p}" for p in self.plots]
        lines.append("healthy" if self.healthy else "NOT healthy: see the error findings above")
        return "\n".join(lines)


class _OneBatch:
    """A loader that yields the same batch ``n`` times (overfitting one batch)."""

    def __init__(self, batch: Any, n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        return iter([self.batch] * self.n)


def _first_batch(module: pl.LightningModule, datamodule: pl.LightningDataModule | None) -> Any:
    source: Any = datamodule if datamodule is not None else module
    if datamodule is not None:
        datamodule.setup("fit")
    try:
        loader = source.train_dataloader()
    except Exception as err:
        raise ValueError(
            f"doctor needs a training batch, but {type(source).__name__}.train_dataloader() "
            f"failed: {type(err).__name__}: {err}"
        ) from None
    return next(iter(loader))


def _overfit(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule | None,
    steps: int,
    factor: float,
    trainer_kwargs: Mapping[str, Any],
) -> tuple[Any, list[float], str | None, Finding | None]:
    from lightning_tune.callbacks.diagnostics import TrainingDiagnostics

    diag = TrainingDiagnostics(every_n_steps=1, on_error={"error": "ignore"}, verbose=False)
    trainer = run_namespace(module, datamodule).Trainer(
        **{**_QUIET, "accelerator": "auto", "devices": 1, **trainer_kwargs},
        max_steps=steps,
        max_epochs=1,
        limit_val_batches=0,
        callbacks=[diag],
    )
    crash = None
    try:
        trainer.fit(module, train_dataloaders=_OneBatch(_first_batch(module, datamodule), steps))
    except Exception as err:  # the doctor reports a crashing module instead of dying with it
        crash = f"{type(err).__name__}: {' '.join(str(err).split())}"
    losses = [e["loss"] for e in diag.history if e.get("loss") is not None]
    finite = [v for v in losses if math.isfinite(v)]
    failed = None
    if crash is None and len(finite) >= 2 and min(finite[-3:]) > finite[0] / factor:
        failed = Finding(
            "overfit_failed",
            "error",
            len(losses),
            "loss",
            min(finite[-3:]),
            f"<= {finite[0] / factor:.4g} ({factor:g}x below {finite[0]:.4g})",
            f"the loss fell only {finite[0] / min(finite[-3:]):.3g}x in {len(losses)} steps",
        )
    return diag, losses, crash, failed


def doctor(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule | None = None,
    *,
    overfit_steps: int = 50,
    overfit_factor: float = 2.0,
    lr_range_steps: int = 60,
    out_dir: str | os.PathLike | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> DoctorReport:
    """Pre-flight check of ``module`` on ``datamodule``: findings, overfit, LR range, plots.

    Overfits a copy of the module on the first training batch for ``overfit_steps`` steps with
    :class:`~lightning_tune.callbacks.TrainingDiagnostics` on every step (the first step is the
    single forward/backward check with the initial loss); the loss must fall by
    ``overfit_factor``. Then :func:`lr_range_test` on a fresh copy (``lr_range_steps=0`` skips
    it). With ``out_dir``, the diagnostics plots and ``lr_range.png`` are written there.

    Example (trains for a few seconds, so not run as a doctest)::

        report = doctor(TimmClassifier("test_resnet"), DigitsDataModule(image_size=16))
        print(report.text()); raise SystemExit(report.exit_code)
    """
    import copy

    check_int("overfit_steps", overfit_steps, minimum=2)
    check_number("overfit_factor", overfit_factor, low=1, low_open=True)
    check_int("lr_range_steps", lr_range_steps, minimum=0)
    if lr_range_steps:
        check_int("lr_range_steps", lr_range_steps, minimum=10)
    kwargs = dict(trainer_kwargs or {})
    diag, losses, crash, failed = _overfit(
        copy.deepcopy(module), datamodule, overfit_steps, overfit_factor, kwargs
    )
    report = DoctorReport(overfit_losses=losses, crash=crash)
    report.findings = [f for f in diag.findings if f.code != "repeated_batch"]  # by design here
    if failed is not None:
        report.findings.append(failed)
    if crash is None and lr_range_steps:
        report.lr_range = lr_range_test(module, datamodule, num_steps=lr_range_steps, **kwargs)
    if out_dir is not None:
        from lightning_tune.diagnostics.plots import plot_diagnostics

        report.plots = plot_diagnostics(diag, out_dir)
        if report.lr_range is not None and report.lr_range.lrs:
            report.plots.append(report.lr_range.plot(pathlib.Path(out_dir) / "lr_range.png"))
    return report


# ------------------------------------------------------------------------------------ building
def _midpoints(distributions: Mapping[str, Any]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    values: dict[str, Any] = {}
    for name, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            values[name] = dist.choices[0]
        elif dist is not None:
            low, high = dist.low, dist.high
            mid = math.sqrt(low * high) if dist.log else (low + high) / 2
            values[name] = mid if isinstance(dist, FloatDistribution) else round(mid)
    return values


def _no_params(trial: Any) -> dict[str, Any]:
    return {}


def build_from_config(
    config: str | os.PathLike | None = None,
    module: str | None = None,
    data: str | None = None,
    module_kwargs: Mapping[str, Any] | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> tuple[pl.LightningModule, pl.LightningDataModule | None, dict[str, Any], dict[str, Any]]:
    """(module, datamodule, hyperparameters, Trainer arguments) from a sweep YAML or classes.

    As ``tune`` builds a trial: with a config, every search-space parameter takes its value in
    ``params`` or else the middle of its range (geometric for log ranges, the first choice of a
    categorical). Nothing is trained or written.

    Example:
        >>> module, dm, params, _ = build_from_config(module="TimmClassifier",
        ...     data="DigitsDataModule", module_kwargs={"model_name": "test_resnet"})
        >>> type(module).__name__, module.hparams.num_classes
        ('TimmClassifier', 10)
    """
    import optuna

    from lightning_tune.tuner import Tuner
    from lightning_tune.tuner.config import load_config, resolve_class, tuner_from_config

    if (config is None) == (module is None):
        raise ValueError("doctor needs either `config` (a sweep YAML) or `module` (a class path)")
    if config is not None:
        if data is not None or module_kwargs or data_kwargs:
            raise ValueError(
                "`data`, `module_kwargs` and `data_kwargs` go with `module`, not `config`"
            )
        tuner = tuner_from_config(load_config(config), storage="memory", quiet=True)
    else:
        tuner = Tuner(
            resolve_class(module, "module"),
            _no_params,
            datamodule=resolve_class(data, "data") if data else None,
            module_kwargs=module_kwargs,
            datamodule_kwargs=data_kwargs,
            quiet=True,
        )
    unknown = sorted(set(params or {}) - set(tuner.search_space.distributions()))
    if unknown:
        known = sorted(tuner.search_space.distributions())
        raise ValueError(f"`--set` names {unknown} are not in the search space {known}")
    values = {**_midpoints(tuner.search_space.distributions()), **(params or {})}
    chosen = tuner.search_space.suggest(optuna.trial.FixedTrial(values))
    datamodule = tuner.build_datamodule(chosen)
    module_obj = tuner.build_module(chosen, datamodule)
    return module_obj, datamodule, chosen, dict(tuner.trainer_kwargs)


# ------------------------------------------------------------------------------------ CLI
def _json_arg(text: str | None, name: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"`{name}` must be a JSON object, but got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be a JSON object, but got {text!r}")
    return value


def _cmd_doctor(args: argparse.Namespace) -> int:
    module, datamodule, params, trainer_kwargs = build_from_config(
        args.config,
        args.module,
        args.data,
        _json_arg(args.module_kwargs, "--module-kwargs"),
        _json_arg(args.data_kwargs, "--data-kwargs"),
        parse_assignments(args.set or [], "--set", "lr=0.01"),
    )
    if params:
        print("hyperparameters: " + " ".join(f"{k}={v}" for k, v in params.items()))
    report = doctor(
        module,
        datamodule,
        overfit_steps=args.overfit_steps,
        lr_range_steps=args.lr_range_steps,
        out_dir=args.out,
        trainer_kwargs=trainer_kwargs,
    )
    print(report.text())
    return report.exit_code


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lightning-tune doctor``."""
    parser = subparsers.add_parser(
        "doctor",
        help="pre-flight check of a module and its data: findings, overfit one batch, LR range",
        description="One forward/backward with every diagnostic check, overfitting one small "
        "batch (the loss must fall), a short LR range test, then the findings table and plots. "
        "Exit code 0 when healthy, 1 when an error-level finding was raised, 2 for bad input.",
    )
    parser.add_argument("--config", default=None, help="a sweep YAML (as for `tune`)")
    parser.add_argument("--module", default=None, help="LightningModule class (pkg.mod.Class)")
    parser.add_argument("--data", default=None, help="LightningDataModule class (pkg.mod.Class)")
    parser.add_argument("--module-kwargs", default=None, help="JSON object of module arguments")
    parser.add_argument("--data-kwargs", default=None, help="JSON object of data arguments")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a search-space value (default: the middle of its range); repeatable",
    )
    parser.add_argument("--out", default="doctor", help="folder for the PNGs (default: doctor)")
    parser.add_argument("--overfit-steps", type=int, default=50)
    parser.add_argument(
        "--lr-range-steps", type=int, default=60, help="steps of the LR range test (0: skip)"
    )
    parser.set_defaults(func=_cmd_doctor)
