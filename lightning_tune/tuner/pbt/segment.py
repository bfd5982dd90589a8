"""Train one member segment: a fresh Trainer that continues a checkpoint for a few epochs.

The Trainer always gets the full run's ``max_epochs`` (so LR schedules, label-smoothing
annealing and ``estimated_stepping_batches`` see the whole run, not the segment) and stops at
the segment's last epoch. The state is written to ``<segment dir>/last.ckpt`` after every epoch
(atomically: a temporary file, then a rename), so a segment whose worker was killed continues
from its last finished epoch; at the end it becomes ``end.ckpt``, the checkpoint the member's
next segment (or a member exploiting it) starts from. Checkpoints are loaded with
``weights_only=True``.
"""

from __future__ import annotations

import math
import os
import pathlib
import time
from typing import TYPE_CHECKING, Any

import optuna
import torch
from typing_extensions import override

from lightning_tune._lightning import NAMESPACES, Callback, Checkpoint
from lightning_tune.tuner.pbt.apply import HyperparameterUpdate
from lightning_tune.tuner.pbt.reach import PBTPlan
from lightning_tune.tuner.pruning import MetricNotFoundError

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["EpochCheckpoint", "SegmentReport", "run_segment", "segment_dir"]

# Trainer settings of every tuner trial (as in Tuner), which trainer_kwargs may override.
_TRAINER_DEFAULTS: dict[str, Any] = {"enable_progress_bar": False, "enable_model_summary": False}


class SegmentReport(Callback):
    """Report ``monitor`` to the segment's trial after each validation; stop at ``end_epoch``.

    The step is the member's validation index over its whole lineage (kept in the checkpoint),
    so a member's intermediate values line up across segments. A NaN/inf metric stops the
    segment; its value is then the worst possible one, and exploit replaces the member.

    Example:
        >>> SegmentReport(optuna.create_study().ask(), "val_loss", end_epoch=2).state_key
        "SegmentReport{'monitor': 'val_loss'}"
    """

    def __init__(self, trial: optuna.Trial, monitor: str, end_epoch: int) -> None:
        super().__init__()
        self.trial, self.monitor, self.end_epoch = trial, monitor, end_epoch
        self.validations = 0
        self.values: list[float] = []
        self._state_key = self._generate_state_key(monitor=monitor)

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise MetricNotFoundError(
                f"PBT: the monitored metric {self.monitor!r} was not logged; logged metrics: "
                f"{sorted(metrics)}. Set `monitor` to one of them."
            )
        value = float(metrics[self.monitor])
        self.values.append(value)
        if math.isfinite(value):
            self.trial.report(value, self.validations)
        else:
            trainer.should_stop = True
        self.validations += 1

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.end_epoch:
            trainer.should_stop = True

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))


class EpochCheckpoint(Checkpoint):
    """Write the full training state to ``path`` after every training epoch, atomically.

    A ``Checkpoint`` subclass, so Lightning runs it after the other callbacks' epoch-end hooks.

    Example:
        >>> EpochCheckpoint("runs/last.ckpt").path.name
        'last.ckpt'
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = pathlib.Path(path)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.path)


def segment_dir(tuner: Any, member: int, round: int) -> pathlib.Path:
    """Where segment (member, round) keeps its checkpoints."""
    return (tuner.study_dir / "pbt" / f"member_{member:02d}" / f"round_{round:03d}").resolve()


def _resume_point(directory: pathlib.Path, end_epoch: int, start: str | None) -> str | None:
    """The segment's own last epoch checkpoint if it is readable and inside the segment (a
    worker was killed mid-segment), else the checkpoint the segment starts from."""
    last = directory / "last.ckpt"
    if not last.exists():
        return start
    try:
        epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    except Exception:  # half-written by a killed worker: start the segment again
        return start
    return str(last) if int(epoch) + 1 < end_epoch else start


def run_segment(tuner: Any, trial: optuna.Trial, plan: PBTPlan) -> float:
    """Train the segment ``trial`` describes (its ``pbt`` user attribute); return its value."""
    info = trial.user_attrs["pbt"]
    member, round = int(info["member"]), int(info["round"])
    _, end_epoch = plan.epochs(round, tuner.max_epochs)
    params = tuner.search_space.suggest(trial)
    directory = segment_dir(tuner, member, round)
    last = directory / "last.ckpt"
    start = _resume_point(directory, end_epoch, info.get("start"))
    trial.set_user_attr("resumed_from", start)
    NAMESPACES[0].seed_everything(tuner.seed + 7919 * round + member, workers=True, verbose=False)
    datamodule = tuner.build_datamodule(params)
    module = tuner.build_module(params, datamodule)
    report = SegmentReport(trial, tuner.monitor, end_epoch)
    update = HyperparameterUpdate(params, plan.optimizer_keys, resumed=start is not None)
    user_callbacks = tuner.build_callbacks(params)
    ns = tuner.trial_namespace(module, datamodule, user_callbacks)
    callbacks = [*user_callbacks, update, report, EpochCheckpoint(last)]
    loggers = tuner._trial_loggers(trial.number, ns, params)
    trial.set_user_attr("lightning", ns.__name__)
    trainer = ns.Trainer(
        **{
            **_TRAINER_DEFAULTS,
            **tuner.trainer_kwargs,
            "max_epochs": tuner.max_epochs,
            "callbacks": callbacks,
            "logger": loggers or False,
            "enable_checkpointing": True,  # EpochCheckpoint is the only checkpoint callback
            "default_root_dir": str(directory),
        }
    )
    fit_start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=start, weights_only=True)
    trial.set_user_attr("fit_seconds", time.perf_counter() - fit_start)
    if not report.values:
        raise ValueError(
            f"segment {member}/{round} ran no validation, so {tuner.monitor!r} was never "
            "reported: check `limit_val_batches` and `check_val_every_n_epoch`"
        )
    end = directory / "end.ckpt"
    os.replace(last, end)
    trial.set_user_attr("checkpoint", str(end))
    trial.set_user_attr("epochs", int(trainer.current_epoch))
    value = report.values[-1]
    if not math.isfinite(value):
        trial.set_user_attr("nonfinite", f"{tuner.monitor}={value}")
        value = math.inf if tuner.direction == "minimize" else -math.inf
    return value
