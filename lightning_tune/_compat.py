"""Detect the classic mix-up of ``pytorch_lightning`` and the unified ``lightning`` package.

lightning_tune is built on ``pytorch_lightning``. Objects from ``lightning.pytorch`` are distinct
classes: passing a ``lightning.pytorch.LightningModule`` to a ``pytorch_lightning.Trainer`` (or
our callbacks to a ``lightning.pytorch.Trainer``) fails deep inside Lightning with a confusing
message. :func:`check_pytorch_lightning` says what happened and how to fix it.
"""

from __future__ import annotations

import pytorch_lightning as pl

__all__ = ["check_pytorch_lightning", "check_trainer"]

_KINDS = {
    "module": pl.LightningModule,
    "datamodule": pl.LightningDataModule,
    "callback": pl.Callback,
    "trainer": pl.Trainer,
}


def _from_unified_package(obj: object) -> bool:
    return any((cls.__module__ or "").startswith("lightning.") for cls in type(obj).__mro__)


def check_pytorch_lightning(obj: object, argument: str, kind: str) -> None:
    """Raise ``TypeError`` if ``obj`` is not a ``pytorch_lightning`` object of ``kind``.

    Example:
        >>> import pytorch_lightning as pl
        >>> check_pytorch_lightning(pl.Callback(), "callbacks[0]", "callback")
    """
    expected = _KINDS[kind]
    if isinstance(obj, expected):
        return
    if _from_unified_package(obj):
        raise TypeError(
            f"`{argument}` is a {type(obj).__module__}.{type(obj).__qualname__} from the unified "
            f"`lightning` package, but lightning_tune uses `pytorch_lightning`. The two packages "
            f"define different classes and cannot be mixed: import it from `pytorch_lightning` "
            f"(e.g. `import pytorch_lightning as pl`) instead of `lightning.pytorch`."
        )
    raise TypeError(
        f"`{argument}` must be a pytorch_lightning.{expected.__name__}, but got "
        f"{type(obj).__qualname__}"
    )


def check_trainer(trainer: object, callback: object) -> None:
    """Fail clearly when a lightning_tune callback is driven by a ``lightning.pytorch.Trainer``.

    ``lightning.pytorch.Trainer`` accepts our (``pytorch_lightning``) callbacks and calls their
    hooks, but the module, optimizers and loops it hands over are ``lightning`` objects; call
    this from a callback's ``setup`` so the mix fails at once with the fix.

    Example:
        >>> check_trainer(pl.Trainer(logger=False, enable_progress_bar=False), pl.Callback())
        >>> check_trainer("not a trainer", pl.Callback())
        Traceback (most recent call last):
        ...
        TypeError: Callback needs a pytorch_lightning.Trainer, got 'not a trainer'
    """
    if isinstance(trainer, pl.Trainer):
        return
    if _from_unified_package(trainer):
        raise TypeError(
            f"{type(callback).__name__} is a `pytorch_lightning` callback but it was given to a "
            f"{type(trainer).__module__}.Trainer from the unified `lightning` package. The two "
            "packages cannot be mixed: build the Trainer with `import pytorch_lightning as pl; "
            "pl.Trainer(...)`."
        )
    raise TypeError(f"{type(callback).__name__} needs a pytorch_lightning.Trainer, got {trainer!r}")
