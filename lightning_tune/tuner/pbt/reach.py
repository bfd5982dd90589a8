"""Checks a PBT run makes before any training: options against the space, the pruner, and
whether every mutable hyperparameter reaches the running training."""

from __future__ import annotations

import inspect
from typing import Any

from optuna.pruners import NopPruner

from lightning_tune._validation import check_int, prefixed
from lightning_tune.tuner.pbt.apply import HOOK, OPTIMIZER_KEYS
from lightning_tune.tuner.pbt.options import PBTConfig
from lightning_tune.tuner.space import Fixed

__all__ = ["PBTPlan", "check_pbt"]


class PBTPlan:
    """What a checked PBT run needs: its options, the mutable names, the optimizer keys to set.

    Example:
        >>> plan = PBTPlan(PBTConfig(), ("lr",), ("lr",))
        >>> plan.mutable, plan.optimizer_keys
        (('lr',), ('lr',))
    """

    def __init__(
        self,
        config: PBTConfig,
        mutable: tuple[str, ...],
        optimizer_keys: tuple[str, ...],
        check_val_every_n_epoch: int = 1,
    ) -> None:
        self.config = config
        self.mutable = mutable
        self.optimizer_keys = optimizer_keys
        #: the Trainer's validation period, in epochs (``interval_unit="validation"`` counts it)
        self.check_val_every_n_epoch = check_val_every_n_epoch

    def rounds(self, max_epochs: int) -> int:
        """Segments per member."""
        return self.config.rounds(max_epochs, self.check_val_every_n_epoch)

    def epochs(self, round: int, max_epochs: int) -> tuple[int, int]:
        """The epochs ``[start, end)`` of segment ``round``."""
        return self.config.epochs(round, max_epochs, self.check_val_every_n_epoch)


def _accepted(cls: type) -> set[str] | None:
    """Keyword arguments of ``cls.__init__``; None if it takes ``**kwargs``."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n for n, p in params.items() if n != "self" and p.kind in kinds}


def _consumer(source: Any) -> tuple[type | None, set[str] | None]:
    """The class behind a module/datamodule source and the names it takes (None: any)."""
    if source is None or not callable(source):
        return None, set()
    if inspect.isclass(source):
        return source, _accepted(source)
    cls = getattr(source, "cls", None)  # a config factory: its class, plus "$name" templates
    if inspect.isclass(cls):
        accepted = _accepted(cls)
        templates = set(getattr(source, "param_names", ()))
        return cls, None if accepted is None else accepted | templates
    return None, None  # a plain function: it may read any name


def _callback_names(callbacks: Any) -> set[str] | None:
    """Names the callbacks take (None: unknown, a plain function may read any name)."""
    if callbacks is None:
        return set()
    if callable(callbacks):
        return None
    names: set[str] = set()
    for item in callbacks:
        if callable(item) and not hasattr(item, "state_dict"):
            declared = getattr(item, "param_names", None)
            if declared is None:
                return None
            names |= set(declared)
    return names


def _check_reach(tuner: Any, mutable: tuple[str, ...]) -> tuple[str, ...]:
    """Raise if a mutable name reaches nothing; return the optimizer keys to set."""
    module_cls, module_names = _consumer(tuner.module)
    _, data_names = _consumer(tuner.datamodule)
    callback_names = _callback_names(tuner.callbacks)
    keys = tuple(
        k for k in OPTIMIZER_KEYS if k in mutable and (module_names is None or k in module_names)
    )
    if module_names is None or data_names is None or callback_names is None:
        return keys  # a function may read any name: nothing to check
    if module_cls is not None and callable(getattr(module_cls, HOOK, None)):
        return keys
    lost = [n for n in mutable if n not in module_names | data_names | callback_names]
    if lost:
        name = module_cls.__name__ if module_cls is not None else "the module"
        raise ValueError(
            f"`hyperparam_mutations` {lost} cannot reach the running training: no argument "
            f"of the module, datamodule or callbacks takes them; add a method "
            f"`{HOOK}(self, params)` to {name} that applies them (it is called after each "
            "checkpoint is restored), or remove them from `hyperparam_mutations`"
        )
    return keys


def check_pbt(tuner: Any, pbt: Any) -> PBTPlan:
    """Check a Tuner's PBT options before anything runs; return the plan.

    Raises ``ValueError``/``TypeError`` for bad options, a space given as a function, a
    mutation the space lacks, a mutable parameter nothing applies, or a pruner other than none.
    """
    config = PBTConfig.coerce(pbt)
    specs = tuner.search_space.specs
    if specs is None:
        raise TypeError(
            "strategy='pbt' needs `search_space` as a mapping of parameter specs (explore "
            "perturbs and resamples from it), but got a suggest function"
        )
    if not isinstance(tuner.pruner, NopPruner):
        raise ValueError(
            f"strategy='pbt' cannot be combined with pruner={type(tuner.pruner).__name__}: PBT "
            "replaces weak members instead of stopping them; use pruner='none'"
        )
    sampled = tuple(n for n, s in specs.items() if not isinstance(s, Fixed))
    mutable = config.hyperparam_mutations or sampled
    missing = [n for n in mutable if n not in sampled]
    if missing:
        raise ValueError(
            f"`hyperparam_mutations` has {missing}, which the search space does not sample; "
            f"sampled parameters: {list(sampled)}"
        )
    every = _check_segments(config, tuner.trainer_kwargs, tuner.max_epochs)
    return PBTPlan(config, tuple(mutable), _check_reach(tuner, tuple(mutable)), every)


def _check_segments(config: PBTConfig, trainer_kwargs: Any, max_epochs: int) -> int:
    """Every segment must end with a validation (members are ranked on it); return the
    Trainer's ``check_val_every_n_epoch``."""
    every = trainer_kwargs.get("check_val_every_n_epoch", 1)
    within = trainer_kwargs.get("val_check_interval")
    if within is not None and not (isinstance(within, float) and within == 1.0):
        raise ValueError(
            f"strategy='pbt' ends segments at epoch ends, but val_check_interval={within!r} "
            "validates within epochs; remove it (use check_val_every_n_epoch and "
            "pbt.interval_unit='validation' to count validations)"
        )
    with prefixed("strategy='pbt' ranks members on a validation at each segment's end"):
        check_int("check_val_every_n_epoch", every, minimum=1, type_error=ValueError)
    step = config.epoch_interval(every)
    if step % every:
        raise ValueError(
            f"`pbt.interval`={config.interval} epochs ends segments where no validation runs "
            f"(check_val_every_n_epoch={every}): use a multiple of {every}, or "
            f"interval_unit='validation' (interval={config.interval} validations = "
            f"{config.interval * every} epochs)"
        )
    if max_epochs % every:
        raise ValueError(
            f"max_epochs={max_epochs} ends the last segment without a validation "
            f"(check_val_every_n_epoch={every}): use a multiple of {every}"
        )
    return every
