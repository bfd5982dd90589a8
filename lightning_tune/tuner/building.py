"""Building a trial's objects: module, datamodule, callbacks, loggers and Trainer, and the
checks of what a Tuner is given to build them from (the ``Tuner``'s first base class)."""

from __future__ import annotations

import copy
import inspect
import pathlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import optuna
import torch

from lightning_tune._compat import check_lightning, common_namespace
from lightning_tune._lightning import NAMESPACES, classes
from lightning_tune._validation import check_int
from lightning_tune.tuner.distributed import DistributedOptunaPruning
from lightning_tune.tuner.failfast import (
    accepted_kwargs,
    check_setup,
    fresh,
    mark_read,
)
from lightning_tune.tuner.trial_loggers import build_trial_loggers, check_loggers

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["TrialBuilding"]

Params = dict[str, Any]
_CALLBACKS = classes("Callback")
_DATAMODULES = classes("LightningDataModule")
# Trainer arguments the tuner sets itself for every trial.
_OWNED_TRAINER_KEYS = (
    "logger",
    "callbacks",
    "max_epochs",
    "default_root_dir",
    "enable_checkpointing",
)
_TRAINER_DEFAULTS: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def _check_kwargs(cls: type, kwargs: Mapping[str, Any], argument: str) -> None:
    accepted = accepted_kwargs(cls)
    if accepted is None:
        return
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"`{argument}` has arguments {unknown} that {cls.__name__} does not take; it "
            f"accepts {sorted(accepted)}"
        )


def _class_kwargs(source: Any, kwargs: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """The fixed arguments of a module/datamodule class, checked against its ``__init__``."""
    fixed = dict(kwargs or {})
    if inspect.isclass(source):
        _check_kwargs(source, fixed, f"{what}_kwargs")
    elif fixed:
        raise ValueError(f"`{what}_kwargs` can only be used with a {what} class")
    return fixed


def _lightning_parts(module: Any, datamodule: Any, callbacks: Any) -> dict[str, Any]:
    """The Lightning classes/objects among a run's sources, by argument name (factories and
    None skipped): what decides which package's Trainer runs the trials."""
    found: dict[str, Any] = {}
    if inspect.isclass(module):
        found["module"] = check_lightning(module, "module", "module")
    if datamodule is not None and (
        inspect.isclass(datamodule)
        or isinstance(datamodule, _DATAMODULES)
        or not callable(datamodule)
    ):
        found["datamodule"] = check_lightning(datamodule, "datamodule", "datamodule")
    if callbacks is not None and not callable(callbacks):
        for i, item in enumerate(callbacks):
            if isinstance(item, _CALLBACKS) or inspect.isclass(item) or not callable(item):
                found[f"callbacks[{i}]"] = check_lightning(item, f"callbacks[{i}]", "callback")
    return found


def _validations_per_trial(max_epochs: int, trainer_kwargs: Mapping[str, Any]) -> int | None:
    """How many validations a full trial runs, when the Trainer settings make it plain."""
    every = trainer_kwargs.get("check_val_every_n_epoch", 1)
    interval = trainer_kwargs.get("val_check_interval", 1.0)
    if not isinstance(every, int) or every < 1:
        return None
    if isinstance(interval, float) and 0 < interval <= 1:
        return max(1, max_epochs // every) * max(1, int(1 / interval + 1e-9))
    return None


def _json_safe(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, (type(None), bool, int, float, str)) else repr(v)
        for k, v in params.items()
    }


class TrialBuilding:
    """The part of :class:`~lightning_tune.tuner.Tuner` that builds a trial's objects.

    Example:
        >>> from lightning_tune.tuner import Tuner
        >>> issubclass(Tuner, TrialBuilding)
        True
    """

    def _set_sources(
        self,
        module: Any,
        module_kwargs: Mapping[str, Any] | None,
        datamodule: Any,
        datamodule_kwargs: Mapping[str, Any] | None,
        callbacks: Any,
    ) -> None:
        """What to build each trial from: checked now, so that a wrong argument fails before
        anything is written."""
        if isinstance(module, torch.nn.Module):
            raise TypeError(
                f"`module` must be a LightningModule class or a function params -> module, but "
                f"got an instance of {type(module).__name__}: pass the class (and its fixed "
                "arguments as `module_kwargs`), so that each trial builds a fresh module"
            )
        if not inspect.isclass(module) and not callable(module):
            raise TypeError(
                "`module` must be a LightningModule class or a function params -> module, but "
                f"got {type(module).__name__}"
            )
        self.module, self.module_kwargs = module, _class_kwargs(module, module_kwargs, "module")
        self.datamodule = datamodule
        self.datamodule_kwargs = _class_kwargs(datamodule, datamodule_kwargs, "datamodule")
        if (
            callbacks is not None
            and not callable(callbacks)
            and (isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence))
        ):
            raise TypeError(
                "`callbacks` must be a list of callbacks / functions params -> callback, or "
                f"a function params -> list, but got {type(callbacks).__name__}"
            )
        # Which Lightning package's Trainer runs the trials: mixing the two fails now.
        common_namespace(_lightning_parts(module, datamodule, callbacks))
        self.callbacks = callbacks

    def _set_training(
        self,
        max_epochs: int,
        trainer_kwargs: Mapping[str, Any] | None,
        keep_checkpoints: int,
        loggers: Any,
        seed: int,
    ) -> None:
        """How each trial trains: its length, Trainer settings, checkpoints, loggers, seed."""
        self.max_epochs = check_int("max_epochs", max_epochs, minimum=1)
        self.trainer_kwargs = dict(trainer_kwargs or {})
        _check_kwargs(NAMESPACES[0].Trainer, self.trainer_kwargs, "trainer_kwargs")
        owned = sorted(set(self.trainer_kwargs) & set(_OWNED_TRAINER_KEYS))
        if owned:
            raise ValueError(
                f"`trainer_kwargs` must not set {owned}: the tuner sets them for each trial "
                "(use `max_epochs`, `callbacks`, `loggers`, `keep_checkpoints`, `output_dir`)"
            )
        self.keep_checkpoints = check_int("keep_checkpoints", keep_checkpoints, minimum=0)
        self.loggers = check_loggers(loggers)
        self.seed = check_int("seed", seed)

    @property
    def max_resource(self) -> int | None:
        """Validations in a full trial (Hyperband's default ``max_resource``), if plain."""
        return _validations_per_trial(self.max_epochs, self.trainer_kwargs)

    def _check_params_consumed(self) -> None:
        """With classes only, a sampled name that no class takes is a typo: say so now."""
        specs = self.search_space.specs
        if specs is None or not inspect.isclass(self.module):
            return
        takers: list[set[str] | None] = [accepted_kwargs(self.module)]
        if inspect.isclass(self.datamodule):
            takers.append(accepted_kwargs(self.datamodule))
        elif callable(self.datamodule) and not isinstance(self.datamodule, _DATAMODULES):
            return
        if callable(self.callbacks) or any(
            not isinstance(c, _CALLBACKS) for c in (self.callbacks or ())
        ):
            return  # a callback factory may take any name
        if any(t is None for t in takers):
            return
        accepted = set().union(*takers)  # type: ignore[arg-type]
        unused = sorted(set(specs) - accepted)
        if unused:
            names = [self.module.__name__] + (
                [self.datamodule.__name__] if inspect.isclass(self.datamodule) else []
            )
            raise ValueError(
                f"search space parameters {unused} are not arguments of {' or '.join(names)}, "
                "and no callback function receives them; accepted names: "
                f"{sorted(accepted)}"
            )

    @staticmethod
    def _from_class(cls: type, fixed: Mapping[str, Any], params: Params) -> Any:
        accepted = accepted_kwargs(cls)
        names = [k for k in dict.keys(params) if accepted is None or k in accepted]
        mark_read(params, names)
        return cls(**{**fixed, **{k: dict.__getitem__(params, k) for k in names}})

    def build_datamodule(self, params: Params) -> pl.LightningDataModule | None:
        """The datamodule for a trial's hyperparameters."""
        source = self.datamodule
        if source is None or isinstance(source, _DATAMODULES):
            return source
        dm = (
            self._from_class(source, self.datamodule_kwargs, params)
            if inspect.isclass(source)
            else source(fresh(params))
        )
        check_lightning(dm, "datamodule(params)", "datamodule")
        return dm

    def build_module(self, params: Params, datamodule: Any = None) -> pl.LightningModule:
        """The LightningModule for a trial's hyperparameters."""
        if inspect.isclass(self.module):
            fixed = dict(self.module_kwargs)
            accepted = accepted_kwargs(self.module)
            if (
                "num_classes" not in fixed
                and "num_classes" not in params
                and (accepted is None or "num_classes" in accepted)
                and isinstance(getattr(datamodule, "num_classes", None), int)
            ):
                fixed["num_classes"] = datamodule.num_classes
            module = self._from_class(self.module, fixed, params)
        else:
            module = self.module(fresh(params))
        check_lightning(module, "module(params)", "module")
        return module

    def build_callbacks(self, params: Params) -> list[pl.Callback]:
        """The user's callbacks for a trial's hyperparameters (fresh objects every trial)."""
        if self.callbacks is None:
            return []
        if callable(self.callbacks):
            built = list(self.callbacks(fresh(params)))
        else:
            built = [
                copy.deepcopy(c) if isinstance(c, _CALLBACKS) else c(fresh(params))
                for c in self.callbacks
            ]
        for i, callback in enumerate(built):
            check_lightning(callback, f"callbacks(params)[{i}]", "callback")
        return built

    def pruning_callback(self, trial: optuna.Trial) -> DistributedOptunaPruning:
        """The callback that reports a trial's metric (DDP-aware: rank 0 decides, all ranks
        stop together, one report per step)."""
        return DistributedOptunaPruning(trial, monitor=self.monitor, on_nonfinite=self.on_nonfinite)

    def make_trainer(
        self,
        callbacks: Sequence[pl.Callback],
        *,
        root: str | pathlib.Path,
        namespace: Any = None,
        **overrides: Any,
    ) -> pl.Trainer:
        """A trial's Trainer with ``callbacks``, the tuner's Trainer settings and ``overrides``,
        from the Lightning package ``namespace`` (default: the first installed)."""
        return (namespace or NAMESPACES[0]).Trainer(
            **{
                **_TRAINER_DEFAULTS,
                "logger": False,
                "enable_checkpointing": False,
                **self.trainer_kwargs,
                "max_epochs": self.max_epochs,
                "default_root_dir": str(root),
                **overrides,
                "callbacks": list(callbacks),
            }
        )

    def check_setup(self, run_batches: bool | None = None) -> None:
        """Fail fast: build trial 0's module, datamodule, callbacks and Trainer (and, with
        ``run_batches`` (default: ``preflight``), fit one training and one validation batch)
        before any trial is written; check that every searched name is read by something.
        Runs once per Tuner; :meth:`run` and :meth:`optimize` call it.

        Raises:
            ConfigurationError: with the step that failed and the original error.
        """
        if self._checked:
            return
        check_setup(self, self.preflight if run_batches is None else run_batches)
        self._checked = True

    def trial_dir(self, number: int) -> pathlib.Path:
        """Logs and checkpoints of trial ``number``."""
        return self.study_dir / "trials" / f"trial_{number:04d}"

    @staticmethod
    def trial_namespace(module: Any, datamodule: Any, callbacks: Sequence[Any]) -> ModuleType:
        """The Lightning package (``pytorch_lightning`` or ``lightning.pytorch``) whose Trainer
        runs these objects: the one the user's classes come from, or, when all of them are
        lightning_tune's own (which work with both), the first installed of the two.
        ``TypeError`` if they mix the two packages."""
        found = {"module": check_lightning(module, "module", "module")}
        if datamodule is not None:
            found["datamodule"] = check_lightning(datamodule, "datamodule", "datamodule")
        for i, callback in enumerate(callbacks):
            found[f"callbacks[{i}]"] = check_lightning(callback, f"callbacks[{i}]", "callback")
        return common_namespace(found)

    def _trial_loggers(
        self, number: int, pl: ModuleType, params: Params | None = None
    ) -> list[Any]:
        return build_trial_loggers(
            self.loggers,
            params=params or {},
            study_name=self.study_name,
            number=number,
            study_dir=self.study_dir,
            namespace=pl,
        )
