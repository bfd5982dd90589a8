"""Say clearly when objects of the two Lightning packages are mixed in one run.

``pytorch_lightning`` and ``lightning.pytorch`` define distinct classes. lightning_tune's own
classes belong to both (see :mod:`lightning_tune._lightning`), but a user's module, datamodule or
callback belongs to the package it was imported from, and one run (one Trainer) cannot mix the
two: Lightning would fail deep inside with a confusing message. These checks say what happened
and how to fix it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from lightning_tune._lightning import NAMESPACES, PACKAGES, namespaces_of

__all__ = ["check_lightning", "check_trainer", "common_namespace", "run_namespace"]

_KINDS = {
    "module": "LightningModule",
    "datamodule": "LightningDataModule",
    "callback": "Callback",
    "trainer": "Trainer",
}


def _package_of_class(cls: type) -> str | None:
    """Which Lightning package a class comes from, by module name (installed or not)."""
    for klass in cls.__mro__:
        module = klass.__module__ or ""
        for name in ("lightning.pytorch", "pytorch_lightning"):
            if module == name or module.startswith(name + "."):
                return name
    return None


def _names(namespaces: tuple[ModuleType, ...]) -> str:
    return " or ".join(ns.__name__ for ns in namespaces)


def check_lightning(obj: Any, argument: str, kind: str) -> tuple[ModuleType, ...]:
    """The installed namespaces in which ``obj`` (an instance or a class) is of ``kind``.

    ``kind`` is ``"module"``, ``"datamodule"``, ``"callback"`` or ``"trainer"``. Raises
    ``TypeError`` naming ``argument`` if it belongs to none of them.

    Example:
        >>> from lightning_tune import TimmClassifier
        >>> check_lightning(TimmClassifier, "module", "module") == NAMESPACES
        True
        >>> check_lightning(3, "module", "module")
        Traceback (most recent call last):
        ...
        TypeError: `module` must be a LightningModule (of pytorch_lightning or lightning.pytorch), but got int
    """
    base = _KINDS[kind]
    cls = obj if inspect.isclass(obj) else type(obj)
    found = tuple(ns for ns in NAMESPACES if issubclass(cls, getattr(ns, base)))
    if found:
        return found
    package = _package_of_class(cls)
    what = f"class {cls.__qualname__}" if inspect.isclass(obj) else cls.__qualname__
    if package is not None and package not in {ns.__name__ for ns in NAMESPACES}:
        raise TypeError(
            f"`{argument}` is {cls.__module__}.{cls.__qualname__} from `{package}`, which is "
            f"not installed here (installed: {_names(NAMESPACES)})"
        )
    raise TypeError(f"`{argument}` must be a {base} (of {' or '.join(PACKAGES)}), but got {what}")


def common_namespace(found: Mapping[str, tuple[ModuleType, ...]]) -> ModuleType:
    """The namespace that every object of a run belongs to (the default one if several).

    ``found`` maps argument names to the namespaces of their objects (from
    :func:`check_lightning`). Objects of both packages in one run raise ``TypeError``.

    Example:
        >>> common_namespace({"module": NAMESPACES, "callbacks[0]": NAMESPACES}) is NAMESPACES[0]
        True
    """
    common = [ns for ns in NAMESPACES if all(ns in spaces for spaces in found.values())]
    if common:
        return common[0]
    only = {arg: spaces for arg, spaces in found.items() if len(spaces) < len(NAMESPACES)}
    described = ", ".join(f"`{arg}` is from {_names(spaces)}" for arg, spaces in only.items())
    raise TypeError(
        f"one run cannot mix the two Lightning packages: {described}. Import your "
        "LightningModule, LightningDataModule and callbacks from the same package "
        "(`import lightning.pytorch as pl` or `import pytorch_lightning as pl`); "
        "lightning_tune's own classes work with either."
    )


def run_namespace(module: Any, datamodule: Any = None) -> ModuleType:
    """The Lightning package whose Trainer should run ``module`` (and ``datamodule``).

    Example:
        >>> import pytorch_lightning as pl
        >>> run_namespace(pl.LightningModule()) is pl
        True
    """
    found = {"module": check_lightning(module, "module", "module")}
    if datamodule is not None:
        found["datamodule"] = check_lightning(datamodule, "datamodule", "datamodule")
    return common_namespace(found)


def check_trainer(trainer: Any, callback: Any, pl_module: Any = None) -> ModuleType:
    """Fail clearly when a lightning_tune callback is driven by something that is no Trainer,
    or by a Trainer of one package with a LightningModule of the other. Returns the namespace.

    Example:
        >>> import lightning_tune._lightning as L
        >>> trainer = L.NAMESPACES[0].Trainer(logger=False, enable_progress_bar=False)
        >>> check_trainer(trainer, L.Callback()) is L.NAMESPACES[0]
        True
        >>> check_trainer("not a trainer", L.Callback())
        Traceback (most recent call last):
        ...
        TypeError: Callback needs a Lightning Trainer (pytorch_lightning or lightning.pytorch), got 'not a trainer'
    """
    spaces = namespaces_of(trainer)
    if not spaces or not isinstance(trainer, spaces[0].Trainer):
        raise TypeError(
            f"{type(callback).__name__} needs a Lightning Trainer ({' or '.join(PACKAGES)}), "
            f"got {trainer!r}"
        )
    ns = spaces[0]
    if pl_module is not None and not isinstance(pl_module, ns.LightningModule):
        raise TypeError(
            f"{type(callback).__name__}: the {ns.__name__}.Trainer was given "
            f"{type(pl_module).__module__}.{type(pl_module).__qualname__}, which is not a "
            f"{ns.__name__}.LightningModule. One run cannot mix the two Lightning packages: "
            f"build the Trainer from the package the module comes from."
        )
    return ns
