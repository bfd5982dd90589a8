from __future__ import annotations

import pytest
import pytorch_lightning as pl

from lightning_tune._compat import check_pytorch_lightning


def test_objects_from_the_unified_package_are_named_as_such():
    lightning = pytest.importorskip("lightning", reason="the unified `lightning` package is not installed")
    with pytest.raises(TypeError, match=r"`callbacks\[0\]` is a lightning\.pytorch.*cannot be mixed"):
        check_pytorch_lightning(lightning.pytorch.Callback(), "callbacks[0]", "callback")


def test_other_types_are_refused_plainly():
    with pytest.raises(TypeError, match=r"`module` must be a pytorch_lightning.LightningModule, but got int"):
        check_pytorch_lightning(3, "module", "module")
    check_pytorch_lightning(pl.Callback(), "callbacks[0]", "callback")
