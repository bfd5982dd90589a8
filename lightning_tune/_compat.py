"""Detect the classic mix-up of ``pytorch_lightning`` and the unified ``lightning`` package.

lightning_tune is built on ``pytorch_lightning``. Objects from ``lightning.pytorch`` are distinct
classes: passing a ``lightning.pytorch.LightningModule`` to a ``pytorch_lightning.Trainer`` (or
our callbacks to a ``lightning.pytorch.Trainer``) fails deep inside Lightning with a confusing
message. :func:`check_pytorch_lightning` says what happened and how to fix it.
"""

from __future__ import annotations

import pytorch_lightning as pl

__all__ = ["check_pytorch_lightning"]

_KINDS = {
    "module": pl.LightningModule,
    "datamodule": pl.LightningDataModule,
    "callback": pl.Callback,
    "trainer": pl.Trainer,
}


def _from_unified_package(obj: object) -> bool:
    return any(
        (cls.__module__ or "").startswith("lightning.") for cls in type(obj).__mro__
    )


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
