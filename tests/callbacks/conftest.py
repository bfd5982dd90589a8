"""Every callback test runs once per installed Lightning package."""

from __future__ import annotations

import pytest

from lightning_tune._lightning import NAMESPACES


@pytest.fixture(autouse=True, params=NAMESPACES, ids=lambda ns: ns.__name__)
def lightning_ns(request, monkeypatch):
    """The namespace under test, also as the test module's ``pl`` (its Trainer, callbacks,
    loggers and plugins); the test modules' own LightningModules and Callbacks derive from
    lightning_tune's classes, which work in either Trainer."""
    monkeypatch.setattr(request.module, "pl", request.param)
    return request.param
