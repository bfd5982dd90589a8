"""Both Lightning packages, one implementation: ``pytorch_lightning`` and ``lightning.pytorch``.

The two packages define the same classes twice. lightning_tune's public classes derive from the
classes of every installed package, so ``isinstance(LRSchedule(...), lightning.pytorch.Callback)``
and ``isinstance(LRSchedule(...), pytorch_lightning.Callback)`` both hold and either Trainer (and
either ``LightningCLI``) accepts them.

A Trainer decides which hooks a module "overrides" by comparing the code of the module's method
with its own package's base class (``is_overridden``). The two packages' base methods differ in
their docstrings, so a class that merely inherits both would look as if it overrode them in one
of the Trainers. :data:`LightningModule` and :data:`LightningDataModule` therefore resolve every
attribute they inherit from Lightning per instance: the package of the Trainer the object is
attached to (through the public ``trainer`` attribute), or :data:`NAMESPACES` ``[0]`` before it is
attached. Lightning itself is not changed, and subclasses' own methods always win.

With only one package installed, the classes here *are* that package's classes.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = [
    "NAMESPACES",
    "PACKAGES",
    "Callback",
    "Checkpoint",
    "LightningDataModule",
    "LightningEarlyStopping",
    "LightningModule",
    "classes",
    "logs_at",
    "namespace",
    "namespaces_of",
    "trainer_namespace",
]

#: The importable names of the two packages, in order of preference (the first installed one is
#: the default: used by the tuner when every object works with both).
PACKAGES = ("pytorch_lightning", "lightning.pytorch")
#: The loggers of Lightning's packages (per-Trainer banners, "max_steps reached", ...).
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")
#: ``pip`` distribution and extra of each package, for messages.
DISTRIBUTIONS = {"pytorch_lightning": "pytorch-lightning", "lightning.pytorch": "lightning"}
INSTALL_HINT = (
    "lightning_tune needs Lightning: install either package, e.g. "
    "`pip install 'lightning-tune[lightning]'` (the unified `lightning` package, "
    "`import lightning.pytorch`) or `pip install 'lightning-tune[pl]'` (`pytorch-lightning`, "
    "`import pytorch_lightning`)"
)


def _import_namespaces() -> tuple[ModuleType, ...]:
    found = []
    for name in PACKAGES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
                raise  # the package is there but one of its own dependencies is missing
    if not found:
        raise ImportError(INSTALL_HINT)
    return tuple(found)


#: The installed Lightning namespaces (modules), in the order of :data:`PACKAGES`.
NAMESPACES: tuple[ModuleType, ...] = _import_namespaces()

if TYPE_CHECKING:
    import pytorch_lightning as _pl

    Trainer = _pl.Trainer


def namespace(name: str) -> ModuleType:
    """The installed namespace called ``name`` (``"pytorch_lightning"``/``"lightning.pytorch"``).

    Example:
        >>> namespace(NAMESPACES[0].__name__) is NAMESPACES[0]
        True
        >>> namespace("lightning")
        Traceback (most recent call last):
        ...
        ValueError: `lightning` must be one of ['pytorch_lightning', 'lightning.pytorch'], ...
    """
    for ns in NAMESPACES:
        if ns.__name__ == name:
            return ns
    if name in PACKAGES:
        raise ImportError(
            f"{name} is not installed: `pip install {DISTRIBUTIONS[name]}` "
            f"(installed: {[ns.__name__ for ns in NAMESPACES]})"
        )
    raise ValueError(f"`lightning` must be one of {list(PACKAGES)}, but got lightning={name!r}")


def classes(path: str) -> tuple[type, ...]:
    """The class at ``path`` (relative to the namespace) in every installed package.

    For ``isinstance`` checks on objects that the Trainer made (plugins, its own callbacks).

    Example:
        >>> len(classes("callbacks.ModelCheckpoint")) == len(NAMESPACES)
        True
    """
    found = []
    for ns in NAMESPACES:
        obj: Any = ns
        for part in path.split("."):
            obj = getattr(obj, part)
        found.append(obj)
    return tuple(found)


_KIND_NAMES = ("LightningModule", "LightningDataModule", "Callback", "Trainer")


def namespaces_of(obj: Any) -> tuple[ModuleType, ...]:
    """The installed namespaces whose Trainer can drive ``obj`` (an instance or a class).

    Our own classes belong to every installed namespace; a user's class to the one it was
    imported from; anything that is no Lightning object to none.

    Example:
        >>> from lightning_tune.callbacks import LRSchedule
        >>> namespaces_of(LRSchedule("cosine")) == NAMESPACES
        True
        >>> namespaces_of(3)
        ()
    """
    cls = obj if inspect.isclass(obj) else type(obj)
    return tuple(
        ns for ns in NAMESPACES if issubclass(cls, tuple(getattr(ns, k) for k in _KIND_NAMES))
    )


_TRAINER_INDEX: dict[type, int] = {}


def _index_of_trainer(trainer: Any) -> int:
    """Position in :data:`NAMESPACES` of the package of ``trainer`` (0 when unknown)."""
    cls = type(trainer)
    index = _TRAINER_INDEX.get(cls)
    if index is None:
        index = next((i for i, ns in enumerate(NAMESPACES) if isinstance(trainer, ns.Trainer)), 0)
        _TRAINER_INDEX[cls] = index
    return index


def trainer_namespace(trainer: Any) -> ModuleType | None:
    """The namespace of ``trainer``'s class, or None if it is no Lightning Trainer.

    Example:
        >>> trainer_namespace("not a trainer") is None
        True
    """
    return next((ns for ns in NAMESPACES if isinstance(trainer, ns.Trainer)), None)


# ---------------------------------------------------------------------------- per-instance
_MISSING = object()
# Set up by both packages' __init__ chains, or class bookkeeping: never dispatched.
_NOT_DISPATCHED = frozenset(
    {
        "__annotations__",
        "__dict__",
        "__doc__",
        "__init__",
        "__jit_unused_properties__",
        "__module__",
        "__qualname__",
        "__weakref__",
    }
)


class _PerTrainer:
    """A class attribute that is one package's attribute or the other's, per instance."""

    __slots__ = ("attrs", "name", "trainer_of")

    def __init__(self, name: str, attrs: tuple[Any, ...], trainer_of: Callable[[Any], Any]):
        self.name = name
        self.attrs = attrs
        self.trainer_of = trainer_of

    def _pick(self, instance: Any) -> Any:
        if instance is None:
            return self.attrs[0]
        trainer = self.trainer_of(instance)
        return self.attrs[0 if trainer is None else _index_of_trainer(trainer)]

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        attr = self._pick(instance)
        get = getattr(type(attr), "__get__", None)
        return attr if get is None else get(attr, instance, owner)


class _PerTrainerData(_PerTrainer):
    """:class:`_PerTrainer` for properties (data descriptors)."""

    __slots__ = ()

    def __set__(self, instance: Any, value: Any) -> None:
        attr = self._pick(instance)
        type(attr).__set__(attr, instance, value)

    def __delete__(self, instance: Any) -> None:
        attr = self._pick(instance)
        type(attr).__delete__(attr, instance)


def _is_data_descriptor(attr: Any) -> bool:
    return hasattr(type(attr), "__set__") or hasattr(type(attr), "__delete__")


def _dual(name: str, bases: tuple[type, ...], trainer_of: Callable[[Any], Any] | None) -> type:
    """A class deriving from ``bases`` (one per package), dispatching what they define apart."""
    if len(bases) == 1:
        return bases[0]
    body: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"``{name}`` of every installed Lightning package (see the module docstring).",
    }
    if trainer_of is not None:
        shared = set.intersection(*(set(base.__mro__) for base in bases))
        names = {n for b in bases for c in b.__mro__ if c not in shared for n in vars(c)}
        for attr_name in sorted(names - _NOT_DISPATCHED):
            found = [inspect.getattr_static(b, attr_name, _MISSING) for b in bases]
            present = next(a for a in found if a is not _MISSING)
            attrs = tuple(present if a is _MISSING else a for a in found)
            if all(a is attrs[0] for a in attrs):
                continue
            kind = _PerTrainerData if any(map(_is_data_descriptor, attrs)) else _PerTrainer
            body[attr_name] = kind(attr_name, attrs, trainer_of)
    return type(name, bases, body)


def _module_trainer(module: Any) -> Any:
    try:
        return _FIRST_TRAINER_PROPERTY.fget(module)  # the public `trainer` property
    except (RuntimeError, AttributeError):  # not attached yet, or still in __init__
        return None


def _datamodule_trainer(datamodule: Any) -> Any:
    return getattr(datamodule, "trainer", None)


_FIRST_TRAINER_PROPERTY = NAMESPACES[0].LightningModule.trainer

#: Base class of our LightningModules (``TimmClassifier``): one of every installed package.
LightningModule: Any = _dual(
    "LightningModule", tuple(ns.LightningModule for ns in NAMESPACES), _module_trainer
)
#: Base class of our LightningDataModules (``DigitsDataModule``).
LightningDataModule: Any = _dual(
    "LightningDataModule", tuple(ns.LightningDataModule for ns in NAMESPACES), _datamodule_trainer
)
#: Base class of our callbacks. Callback hooks are looked up on the callback without a Trainer
#: at hand, and Lightning only asks whether ``state_dict`` is overridden: no dispatch needed.
Callback: Any = _dual("Callback", tuple(ns.Callback for ns in NAMESPACES), None)
#: Lightning's ``Checkpoint`` base of every package (run after other callbacks' epoch ends).
Checkpoint: Any = _dual("Checkpoint", tuple(ns.callbacks.Checkpoint for ns in NAMESPACES), None)
#: Lightning's ``EarlyStopping`` of every package: the Trainer runs early-stopping callbacks'
#: ``on_train_epoch_end`` after the module's (and lists them in ``early_stopping_callback``).
LightningEarlyStopping: Any = _dual(
    "LightningEarlyStopping", tuple(ns.callbacks.EarlyStopping for ns in NAMESPACES), None
)


@contextlib.contextmanager
def logs_at(level: int, names: Iterable[str] = LIGHTNING_LOGGERS) -> Iterator[None]:
    """Set the loggers ``names`` (default: Lightning's) to ``level`` inside the block; restore
    their own levels afterwards.

    Example:
        >>> with logs_at(logging.ERROR, ["lightning_tune.demo_logger"]):
        ...     logging.getLogger("lightning_tune.demo_logger").level
        40
        >>> logging.getLogger("lightning_tune.demo_logger").level
        0
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, levels):
            logger.setLevel(old)
