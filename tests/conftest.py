"""Shared test setup: one torch thread per test process, quiet Lightning, small fixtures."""

from __future__ import annotations

import logging
import os
import warnings

import pytest
import torch

from lightning_tune._lightning import NAMESPACES

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(1)
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture
def trainer_kwargs(tmp_path):
    """Keyword arguments for a small, quiet CPU Trainer writing under tmp_path."""
    return {
        "accelerator": "cpu",
        "devices": 1,
        "default_root_dir": str(tmp_path),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
    }


@pytest.fixture(params=NAMESPACES, ids=lambda ns: ns.__name__)
def lightning_ns(request):
    """Each installed Lightning namespace in turn: ``pytorch_lightning``, ``lightning.pytorch``.

    Use it as the package a test's Trainer comes from: ``lightning_ns.Trainer(...)``.
    """
    return request.param


@pytest.fixture
def lightning_ns_as_pl(request, lightning_ns, monkeypatch):
    """``lightning_ns``, also set as the test module's global ``pl`` (its Trainer, callbacks,
    loggers, plugins). The callback test modules use it for every test
    (``pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")``); their own LightningModules
    and Callbacks derive from lightning_tune's classes, which work in either Trainer."""
    monkeypatch.setattr(request.module, "pl", lightning_ns)
    return lightning_ns
