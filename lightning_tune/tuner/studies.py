"""The study of a Tuner: its storage, crash recovery and identity (the ``Tuner``'s second base
class)."""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from lightning_tune.tuner.factories import make_sampler
from lightning_tune.tuner.identity import (
    IDENTITY_ATTR,
    StudyIdentityError,
    identity_diff,
    study_identity,
)
from lightning_tune.tuner.recovery import Recovery
from lightning_tune.tuner.storage import (
    check_storage,
    describe_storage,
    heartbeat_settings,
    mask_url,
    resolve_storage,
)

if TYPE_CHECKING:
    from lightning_tune.tuner.tuner import Tuner

__all__ = ["StudyHandling"]


class StudyHandling:
    """The part of :class:`~lightning_tune.tuner.Tuner` that opens and checks its study.

    Example:
        >>> from lightning_tune.tuner import Tuner
        >>> issubclass(Tuner, StudyHandling)
        True
    """

    def _set_study(
        self,
        study_name: str,
        output_dir: str | pathlib.Path,
        storage: Any,
        heartbeat_interval: int | None,
        grace_period: int | None,
        max_retry: int | None,
    ) -> None:
        """Where the study lives and how dead workers' trials are recovered: checked now,
        nothing opened or created."""
        if not isinstance(study_name, str) or not study_name or "/" in study_name:
            raise ValueError(
                f"`study_name` must be a non-empty name without '/', but got {study_name!r}"
            )
        self.study_name = study_name
        self.output_dir = pathlib.Path(output_dir)
        self.study_dir = self.output_dir / study_name
        self._storage_source = storage
        check_storage(storage)  # a malformed URL fails now
        # Crash recovery for the default storage (the study's SQLite file): checked now.
        check_storage(
            None,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retry=max_retry,
        )
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self._storage: optuna.storages.BaseStorage | None = None
        self.study: optuna.Study | None = None

    @property
    def storage_source(self) -> str | optuna.storages.BaseStorage | None:
        """The ``storage`` argument as given (None: the study's SQLite file)."""
        return self._storage_source

    def with_storage(self, storage: optuna.storages.BaseStorage | None) -> Tuner:
        """A shallow copy of this tuner that uses ``storage`` and has no study loaded yet.

        With ``storage=None`` the copy keeps this tuner's storage source but holds no open
        storage, so it can be pickled and sent to another process, which opens its own.
        """
        clone = copy.copy(self)
        clone._storage = storage
        if storage is not None:
            clone._storage_source = storage
        clone.study = None
        return clone

    def open_storage(self) -> optuna.storages.BaseStorage:
        """The study's storage, opened once per Tuner (so an in-memory study survives several
        ``run`` calls). A SQLite file or database URL gets Optuna's heartbeat (see
        ``heartbeat_interval``); a journal file recovers through a lease instead.

        Raises:
            ConnectionError: the database cannot be opened (message without the password).
            ImportError: the database driver is not installed.
        """
        if self._storage is not None:
            return self._storage
        heartbeat = heartbeat_settings(
            self._storage_source, self.heartbeat_interval, self.grace_period, self.max_retry
        )
        storage = resolve_storage(self._storage_source, self.study_dir, **heartbeat)
        if isinstance(storage, optuna.storages.BaseStorage):
            self._storage = storage
            return storage
        try:
            self._storage = optuna.storages.get_storage(storage)
            return self._storage
        except Exception as err:  # sqlalchemy/driver errors: say which storage, hide passwords
            raise ValueError(
                f"cannot open storage {mask_url(storage)!r}: {type(err).__name__}: {err}"
            ) from err

    @property
    def recovery(self) -> Recovery | None:
        """How the trials of dead workers are found in this tuner's storage (None: they are
        not, because recovery is off or the storage is in memory)."""
        return Recovery.for_storage(
            self.open_storage(), self.heartbeat_interval, self.grace_period, self.max_retry
        )

    @property
    def storage_description(self) -> str:
        """Where the study lives, passwords hidden."""
        if self._storage is not None:
            return describe_storage(self._storage)
        source = self._storage_source
        if source is None:
            return f"sqlite:///{(self.study_dir / 'study.db').resolve()}"
        if isinstance(source, str):
            return "memory" if source in ("memory", ":memory:") else mask_url(source)
        return type(source).__name__

    @property
    def dashboard_command(self) -> str | None:
        """The ``lightning-tune dashboard`` command that opens this study (None in memory)."""
        if self._storage_source is None:
            return f"lightning-tune dashboard {self.study_dir}"
        where = self.storage_description
        return (
            None if where == "memory" or "://" not in where else f"lightning-tune dashboard {where}"
        )

    def create_study(self) -> optuna.Study:
        """Create the study, or load it if it exists (checking that it was created with the same
        settings: see ``resume`` and :mod:`~lightning_tune.tuner.identity`).

        Nothing is written to an existing study before the check passes. The sampler is seeded
        with ``seed + number of existing trials`` so that a continued study does not replay the
        configurations it already tried.
        """
        self.study_dir.mkdir(parents=True, exist_ok=True)
        storage = self.open_storage()
        n_existing = 0
        identity = study_identity(self)
        write_identity = True
        try:
            existing = optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            existing = None
        if existing is not None:
            directions = [d.name.lower() for d in existing.directions]
            if directions != list(self.objectives.directions):
                asked = list(self.objectives.directions)
                raise ValueError(
                    f"study {self.study_name!r} already exists with direction(s) {directions}, "
                    f"but direction={asked[0] if len(asked) == 1 else asked!r} was asked; use "
                    "another `study_name` or the same direction (the existing study was not "
                    "changed)"
                )
            existing_trials = existing.get_trials(deepcopy=False)
            write_identity = self._check_identity(existing, existing_trials, identity)
            n_existing = len(existing_trials)
        # A grid is shuffled by the seed: every process and run must use the same one.
        offset = 0 if self._sampler_source == "grid" else n_existing
        sampler = make_sampler(
            self._sampler_source,
            self.sampler_kwargs,
            seed=self.seed + offset,
            search_space=self.search_space,
        )
        self.study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            directions=list(self.objectives.directions),
            sampler=sampler,
            pruner=self.pruner,
            load_if_exists=True,
        )
        if write_identity:
            self.study.set_user_attr(IDENTITY_ATTR, identity)
            self.study.set_user_attr("monitor", self.monitor)
            self.study.set_user_attr("monitors", list(self.monitors))
        if self.strategy == "pbt":  # round 0 is enqueued once, before any worker starts
            from lightning_tune.tuner.pbt.worker import seed_population

            seed_population(self, self.study)
        return self.study

    def _check_identity(
        self, study: optuna.Study, trials: Sequence[FrozenTrial], identity: dict[str, Any]
    ) -> bool:
        """Refuse to continue ``study`` with other settings; return whether to (re)write the
        identity (a study from before identities were stored, or ``resume="force"``)."""
        if self.resume == "new":
            raise StudyIdentityError(
                f"study {self.study_name!r} already exists in {self.storage_description}; a new "
                "study needs a name that is not taken (nothing was written)"
            )
        stored = study.user_attrs.get(IDENTITY_ATTR)
        if self.resume == "force":
            self._check_space_matches(trials)  # what Optuna itself cannot continue
            return stored != identity
        if stored is None:  # created before identities were stored: what it has must match
            monitor = study.user_attrs.get("monitor")
            changes = (
                []
                if monitor in (None, self.monitor)
                else [f"monitor: {monitor!r} -> {self.monitor!r}"]
            )
            self._check_space_matches(trials)
        else:
            changes = identity_diff(stored, identity)
        if changes:
            raise StudyIdentityError(
                f"study {self.study_name!r} was created with other settings, so its trials "
                f"would not compare with new ones: {'; '.join(changes)}. Start a new study "
                "(`--new-study NAME`, or another `study_name`) or continue this one with the "
                "new settings on purpose (`--force-resume`, resume='force'); nothing was written"
            )
        return stored is None

    def _check_space_matches(self, trials: Sequence[FrozenTrial]) -> None:
        """Refuse a search space whose distributions clash with those the study already has
        (Optuna would only fail inside the next trial, leaving a FAIL trial behind)."""
        space = self.search_space.distributions()
        for trial in trials:
            for name, old in trial.distributions.items():
                if name not in space:
                    continue
                try:
                    optuna.distributions.check_distribution_compatibility(old, space[name])
                except ValueError as err:
                    raise ValueError(
                        f"search space `{name}` is {space[name]}, but study "
                        f"{self.study_name!r} already sampled it from {old} ({err}); use "
                        "another `study_name` for a different space (the existing study was "
                        "not changed)"
                    ) from None
            space = {k: v for k, v in space.items() if k not in trial.distributions}
            if not space:
                return
