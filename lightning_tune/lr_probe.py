"""The LR probe: short runs of the planned schedule at a few LRs, judged on held-out data.

A range test (:mod:`lightning_tune.range_test`) reads one ramp in which every LR inherits the
weights that all the lower LRs made, so the LR it reads off is the one that is best *a few
steps into a ramp*, not the one that is best for the run; on a small fine-tuning set its
suggestion moved 8x between seeds and picked LRs that wrecked the pretrained weights.
The probe asks the question the run asks: for each candidate LR, a copy of the module trains
``num_steps`` optimizer steps from the same weights, in the same batch order, with the schedule
the run will use, and is then validated once; the candidate with the best ``monitor`` value is
the suggestion. It costs ``len(lrs) * num_steps`` training steps and ``len(lrs)`` validations.

The user's module, its weights and the global RNG state are untouched.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pathlib
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lightning_tune._compat import run_namespace
from lightning_tune._lightning import logs_at
from lightning_tune._validation import check_choice, check_int, check_number
from lightning_tune.range_test import plot_lr_curve, quiet_trainer_options

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["ProbeResult", "candidate_lrs", "lr_probe"]

log = logging.getLogger(__name__)
#: Fewer validation examples than this get a warning: the probe's differences are mostly noise.
FEW_VAL_EXAMPLES = 100


@dataclass(frozen=True)
class ProbeResult:
    """What an LR probe measured.

    Attributes:
        lrs: the candidate base LRs, ascending.
        values: the ``monitor`` value after each candidate's probe (NaN: it diverged).
        suggestion: the candidate with the best finite value.
        num_steps: optimizer steps of each candidate's probe.
        monitor: the validation metric compared.
        mode: ``"min"``, or ``"max"`` when the best ``monitor`` value is the highest.
        tie_break: the metric that decided ties (None: the lower LR).
        tie_values: its value for each candidate (empty without ``tie_break``).
        val_examples: the validation examples each candidate was judged on (None: unknown).
    """

    lrs: tuple[float, ...]
    values: tuple[float, ...]
    suggestion: float
    num_steps: int
    monitor: str = "val_loss"
    mode: str = "min"
    tie_break: str | None = None
    tie_values: tuple[float, ...] = ()
    val_examples: int | None = None

    def plot(self, path: str | os.PathLike) -> pathlib.Path:
        """Save the value-vs-LR points with the suggestion marked as a PNG.

        Example:
            >>> import tempfile, pathlib
            >>> result = ProbeResult((1e-3, 1e-2), (0.4, 0.6), 1e-2, 10, "val_acc", "max")
            >>> result.plot(pathlib.Path(tempfile.mkdtemp()) / "probe.png").suffix
            '.png'
        """
        return plot_lr_curve(
            path, self.lrs, self.values, self.suggestion, ylabel=self.monitor,
            label=f"{self.monitor} after the probe", marker="o",
            title=f"LR probe: {self.num_steps} steps per candidate",
        )  # fmt: skip


def candidate_lrs(center: float, decades: float = 1.0, per_decade: int = 2) -> tuple[float, ...]:
    """Geometric candidates from ``center / 10**decades`` to ``center * 10**decades``.

    Example:
        >>> [f"{lr:.2g}" for lr in candidate_lrs(1e-3)]
        ['0.0001', '0.00032', '0.001', '0.0032', '0.01']
    """
    center = check_number("center", center, low=0, low_open=True)
    decades = check_number("decades", decades, low=0)
    per_decade = check_int("per_decade", per_decade, minimum=1)
    half = round(decades * per_decade)
    return tuple(center * 10 ** (k / per_decade) for k in range(-half, half + 1))


def _module_lr(module: Any) -> float:
    hparams = getattr(module, "hparams", {}) or {}
    lr = hparams.get("lr") if hasattr(hparams, "get") else None
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(
            "lr_probe centres its candidates on the module's `hparams.lr`, but "
            f"{type(module).__name__} has none (hparams.lr={lr!r}): pass `lrs`, the candidates"
        )
    return float(lr)


def _best(values: Sequence[float], mode: str, ties: Sequence[float] = ()) -> int | None:
    """The index of the best finite value; among equal ones, the lowest ``ties`` value (then
    the lowest LR).

    Example:
        >>> _best([0.5, 0.7, 0.7, float("nan")], "max", ties=[1.0, 0.9, 0.8, 0.1])
        2
        >>> _best([0.5, 0.7, 0.7], "max")
        1
    """
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return None
    sign = -1.0 if mode == "max" else 1.0
    top = min(sign * values[i] for i in finite)
    tied = [i for i in finite if math.isclose(sign * values[i], top, rel_tol=1e-9, abs_tol=1e-12)]
    if not ties:
        return tied[0]
    return min(tied, key=lambda i: ties[i] if math.isfinite(ties[i]) else math.inf)


def lr_probe(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule | None = None,
    *,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    lrs: Sequence[float] | None = None,
    num_steps: int = 50,
    callbacks: Callable[[float], list[Any]] | None = None,
    monitor: str = "val_loss",
    mode: str = "min",
    tie_break: str | None = None,
    seed: int = 0,
    **trainer_kwargs: Any,
) -> ProbeResult:
    """Train a copy of ``module`` for ``num_steps`` steps at each LR in ``lrs``; suggest the best.

    Args:
        module: the LightningModule; deep-copied for every candidate (the original keeps its
            weights).
        datamodule: gives the training and validation batches (or pass the dataloaders).
        train_dataloaders: training batches when there is no datamodule.
        val_dataloaders: validation batches when there is no datamodule.
        lrs: the candidate base LRs (default: :func:`candidate_lrs` around the module's
            ``hparams.lr``: a decade either way, two per decade).
        num_steps: optimizer steps per candidate (>= 1).
        callbacks: ``lr -> callbacks`` that set the LR of a candidate's run (default: a
            constant :class:`~lightning_tune.callbacks.LRSchedule` at ``lr``); the fine-tuning
            preset passes its own schedule, so each candidate runs the shape of the real run.
        monitor: the validation metric the module logs (``TimmClassifier`` logs ``val_loss``).
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        tie_break: a second validation metric, lower is better (e.g. ``"val_loss"``), that
            decides between candidates with the same ``monitor`` value: an accuracy on a small
            validation set ties often (45 images: steps of 2.2 %). None: the lower LR wins a tie.
        seed: every candidate starts from this seed (the same batches, the same dropout); the
            caller's RNG state is restored afterwards.
        **trainer_kwargs: extra ``Trainer`` arguments (``accelerator``, ``precision``, ...).

    Returns:
        each candidate's value and the suggestion.

    Example:
        >>> from lightning_tune import DigitsDataModule, TimmClassifier
        >>> result = lr_probe(
        ...     TimmClassifier("test_resnet"), DigitsDataModule(image_size=16),
        ...     lrs=[1e-4, 1e-2], num_steps=5,
        ... )
        >>> len(result.values), result.suggestion in (1e-4, 1e-2)
        (2, True)
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    mode = check_choice("mode", mode, ("min", "max"))
    chosen = candidate_lrs(_module_lr(module)) if lrs is None else _check_lrs(lrs)
    taken = sorted({"max_steps", "max_epochs"} & set(trainer_kwargs))
    if taken:
        raise ValueError(
            f"lr_probe sets the Trainer's {taken} itself (from `num_steps`): drop them from "
            "the Trainer arguments"
        )
    if datamodule is None and (train_dataloaders is None or val_dataloaders is None):
        raise ValueError(
            "lr_probe needs training and validation batches: pass `datamodule`, or both "
            f"`train_dataloaders` and `val_dataloaders`, but got {datamodule=!r}"
        )
    make = callbacks if callbacks is not None else _constant
    results = []
    state = random.getstate()
    # Lightning's per-Trainer banners off: ten of them for five candidates would bury the
    # user's own output (warnings still show).
    with logs_at(logging.WARNING), torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        for lr in chosen:
            torch.manual_seed(seed)
            random.seed(seed)
            results.append(
                _probe_one(module, datamodule, train_dataloaders, val_dataloaders, num_steps,
                           make(lr), (monitor, tie_break), trainer_kwargs)
            )  # fmt: skip
            log.info("LR probe: lr=%.3g, %d steps: %s=%.4g", lr, num_steps, monitor,
                     results[-1][0])  # fmt: skip
    random.setstate(state)
    values = tuple(v for v, _, _ in results)
    ties = tuple(t for _, t, _ in results) if tie_break is not None else ()
    examples = results[0][2]
    _warn_if_few(examples, len(chosen))
    best = _best(values, mode, ties)
    if best is None:
        raise RuntimeError(
            f"lr_probe: every candidate LR {[f'{lr:.3g}' for lr in chosen]} diverged (no finite "
            f"{monitor}); try lower `lrs`"
        )
    return ProbeResult(
        tuple(chosen), values, chosen[best], num_steps, monitor, mode, tie_break, ties, examples
    )


def _warn_if_few(examples: int | None, candidates: int) -> None:
    if examples is not None and examples < FEW_VAL_EXAMPLES:
        warnings.warn(
            f"lr_probe judged {candidates} LRs on {examples} validation examples: there an "
            f"accuracy moves in steps of {100 / examples:.1f} points, so close candidates differ "
            "by chance; give more validation data, or choose the LR yourself",
            UserWarning,
            stacklevel=3,
        )


def _check_lrs(lrs: Any) -> tuple[float, ...]:
    try:
        values = tuple(sorted(float(lr) for lr in lrs))
    except (TypeError, ValueError):
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"`lrs` must be a non-empty list of positive LRs, but got {lrs!r}")
    return values


def _constant(lr: float) -> list[Any]:
    from lightning_tune.callbacks.lr_schedule import LRSchedule

    return [LRSchedule("constant", max_lr=lr)]


def _probe_one(
    module: Any,
    datamodule: Any,
    train_dataloaders: Any,
    val_dataloaders: Any,
    num_steps: int,
    callbacks: list[Any],
    names: tuple[str, str | None],
    trainer_kwargs: dict[str, Any],
) -> tuple[float, float, int | None]:
    """One candidate's run: its ``monitor`` and ``tie_break`` values (NaN where not finite) and
    the number of validation examples (None when the loaders do not say)."""
    ns = run_namespace(module, datamodule)
    options = quiet_trainer_options(trainer_kwargs)
    trainer = ns.Trainer(
        max_steps=num_steps,
        max_epochs=-1,
        callbacks=callbacks,
        **{**options, "limit_val_batches": 0},  # one validation, after the steps
    )
    candidate = copy.deepcopy(module)
    trainer.fit(
        candidate,
        datamodule=datamodule,
        train_dataloaders=train_dataloaders,
        val_dataloaders=val_dataloaders,  # not run here: no "no val loop" warning
    )
    judge = ns.Trainer(**options)
    metrics = judge.validate(
        candidate, datamodule=datamodule, dataloaders=val_dataloaders, verbose=False
    )
    logged = metrics[0] if metrics else {}
    out = []
    for argument, name in zip(("monitor", "tie_break"), names):
        value = logged.get(name) if name is not None else math.nan
        if value is None:
            raise ValueError(
                f"lr_probe({argument}={name!r}): the module logged no such validation metric "
                f"(logged: {sorted(logged)}); pass the name it logs in `validation_step`"
            )
        value = float(value)
        out.append(value if math.isfinite(value) else math.nan)
    return out[0], out[1], _examples(judge.val_dataloaders)


def _examples(loaders: Any) -> int | None:
    """Examples in a validation DataLoader (or a list of them); None when one has no length."""
    total = 0
    for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        try:
            total += len(loader.dataset)
        except (AttributeError, TypeError):
            return None
    return total
