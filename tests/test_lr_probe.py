"""The LR probe: short runs at candidate LRs, the best one by a validation metric."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_tune.callbacks import LRSchedule
from lightning_tune.lr_probe import ProbeResult, candidate_lrs, lr_probe

TRUE_W = torch.tensor([1.0, -2.0, 0.5, 3.0])


def _loaders() -> dict:
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(x, x @ TRUE_W)
    return {
        "train_dataloaders": DataLoader(data, batch_size=32, shuffle=True),
        "val_dataloaders": DataLoader(data, batch_size=256),
    }


def _module_class(ns):
    class Quadratic(ns.LightningModule):
        """Least squares with SGD: too low an LR barely moves in 10 steps, too high diverges."""

        def __init__(self, lr: float | None = 0.01, log: str = "val_loss") -> None:
            super().__init__()
            self.save_hyperparameters()
            self.w = torch.nn.Parameter(torch.zeros(4))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return ((x @ self.w - y) ** 2).mean()

        def validation_step(self, batch, batch_idx):
            x, y = batch
            loss = ((x @ self.w - y) ** 2).mean()
            self.log(self.hparams.log, loss)
            self.log("val_score", -loss)
            self.log("val_flat", 0.5)  # the same for every LR: a tie everywhere

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr or 0.1)

    return Quadratic


def _best_constant_lr(candidates, steps: int) -> float:
    """The candidate whose plain SGD run (same data, same order) ends lowest."""
    results = []
    for lr in candidates:
        torch.manual_seed(0)
        loaders = _loaders()
        w = torch.zeros(4, requires_grad=True)
        opt = torch.optim.SGD([w], lr=lr)
        done = 0
        while done < steps:
            for x, y in loaders["train_dataloaders"]:
                loss = ((x @ w - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
                if done == steps:
                    break
        x, y = loaders["val_dataloaders"].dataset.tensors
        with torch.no_grad():
            final = float(((x @ w - y) ** 2).mean())
        results.append(final if math.isfinite(final) else math.inf)
    return candidates[results.index(min(results))]


def test_candidates_around_a_centre():
    assert candidate_lrs(1e-3) == pytest.approx((1e-4, 10**-3.5, 1e-3, 10**-2.5, 1e-2))
    assert candidate_lrs(0.1, decades=0.5, per_decade=4) == pytest.approx(
        tuple(0.1 * 10 ** (k / 4) for k in range(-2, 3))
    )
    assert candidate_lrs(1.0, decades=0) == (1.0,)
    with pytest.raises(ValueError, match="center"):
        candidate_lrs(0.0)


def test_the_probe_picks_the_best_candidate_and_leaves_the_module_alone(
    lightning_ns, trainer_kwargs
):
    """Around the module's LR (0.01): 0.001 is too slow in 10 steps, 0.1 is best, 1.0 diverges."""
    module = _module_class(lightning_ns)(lr=0.01)
    candidates = candidate_lrs(0.01, decades=2, per_decade=1)  # 1e-4 ... 1.0
    best = _best_constant_lr(list(candidates), steps=10)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    result = lr_probe(module, **_loaders(), num_steps=10, **trainer_kwargs)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream goes on as before
    assert isinstance(result, ProbeResult)
    assert result.lrs == pytest.approx(candidate_lrs(0.01))  # default: a decade either way
    assert result.num_steps == 10 and result.monitor == "val_loss" and result.mode == "min"
    assert len(result.values) == 5 and result.values == tuple(sorted(result.values, reverse=True))
    assert result.suggestion == result.lrs[-1] == pytest.approx(0.1) == pytest.approx(best)
    assert torch.equal(module.w, torch.zeros(4))

    wide = lr_probe(module, **_loaders(), lrs=[*candidates, 1e3], num_steps=10, **trainer_kwargs)
    assert wide.values[-2] > 100 * wide.values[2]  # lr=1.0 blew up ...
    assert math.isnan(wide.values[-1])  # ... and lr=1e3 overflowed (NaN): never the suggestion
    assert wide.suggestion == pytest.approx(best) == pytest.approx(0.1)
    by_score = lr_probe(
        module, **_loaders(), lrs=[*candidates, 1e3], num_steps=10, monitor="val_score", mode="max",
        **trainer_kwargs,
    )  # fmt: skip
    assert by_score.suggestion == wide.suggestion and by_score.mode == "max"
    common = {"lrs": [1e-3, 1e-2, 0.1], "num_steps": 10, "monitor": "val_flat", "mode": "max"}
    untied = lr_probe(module, **_loaders(), **common, tie_break="val_loss", **trainer_kwargs)
    assert untied.values == (0.5, 0.5, 0.5) and untied.tie_break == "val_loss"
    assert untied.suggestion == 0.1 and untied.tie_values[2] == min(untied.tie_values)
    lowest = lr_probe(module, **_loaders(), **common, **trainer_kwargs)
    assert lowest.suggestion == 1e-3 and lowest.tie_values == ()  # a tie: the lower LR


def test_each_candidate_runs_the_given_schedule(lightning_ns, trainer_kwargs):
    seen = []

    def schedule(lr: float) -> list:
        seen.append(lr)
        # the run's real shape: a decay to 0 over the whole probe makes 0.1 too timid in 4 steps
        return [LRSchedule("cosine", max_lr=lr)]

    module = _module_class(lightning_ns)(lr=0.01)
    lrs = [0.01, 0.1, 0.3]
    result = lr_probe(
        module, **_loaders(), lrs=lrs, num_steps=4, callbacks=schedule, **trainer_kwargs
    )
    assert seen == lrs
    counted = []

    class Count(lightning_ns.Callback):
        """Training steps of one candidate's fit, and validation batches anywhere."""

        def __init__(self):
            self.steps, self.val_batches = 0, 0
            counted.append(self)

        def on_train_batch_end(self, *args):
            self.steps += 1

        def on_validation_batch_end(self, *args):
            self.val_batches += 1

    lr_probe(module, **_loaders(), lrs=lrs, num_steps=7, callbacks=lambda lr: [Count()],
             **trainer_kwargs)  # fmt: skip
    # 7 steps of 8 batches per epoch; the fit validates nothing (one validation comes after it)
    assert [(c.steps, c.val_batches) for c in counted] == [(7, 0)] * 3
    constant = lr_probe(module, **_loaders(), lrs=lrs, num_steps=4, **trainer_kwargs)
    assert result.values != constant.values  # the schedule changed every candidate's run
    assert result.values[0] > constant.values[0]  # 0.01 decayed to 0 gets less far


def test_bad_arguments(trainer_kwargs):
    module_cls = _module_class(__import__("pytorch_lightning"))
    with pytest.raises(ValueError, match=r"hparams.lr.*pass `lrs`"):
        lr_probe(module_cls(lr=None), **_loaders())
    with pytest.raises(ValueError, match=r"`lrs` must be a non-empty list.*\[0\.1, -1\]"):
        lr_probe(module_cls(), **_loaders(), lrs=[0.1, -1])
    with pytest.raises(ValueError, match="`lrs`"):
        lr_probe(module_cls(), **_loaders(), lrs=[])
    with pytest.raises(ValueError, match="num_steps"):
        lr_probe(module_cls(), **_loaders(), num_steps=0)
    with pytest.raises(ValueError, match="mode"):
        lr_probe(module_cls(), **_loaders(), mode="best")
    with pytest.raises(ValueError, match="training and validation batches"):
        lr_probe(module_cls(), train_dataloaders=_loaders()["train_dataloaders"])
    logged = r"logged: \['val_flat', 'val_loss', 'val_score'\]"
    with pytest.raises(ValueError, match=r"monitor='val_acc'.*" + logged):
        lr_probe(module_cls(), **_loaders(), monitor="val_acc", num_steps=2, **trainer_kwargs)
    with pytest.raises(ValueError, match=r"tie_break='val_nll'.*" + logged):
        lr_probe(module_cls(), **_loaders(), tie_break="val_nll", num_steps=2, **trainer_kwargs)
    with pytest.raises(ValueError, match=r"sets the Trainer's \['max_epochs', 'max_steps'\]"):
        lr_probe(module_cls(), **_loaders(), max_steps=3, max_epochs=1)
    with pytest.raises(RuntimeError, match=r"every candidate LR.*diverged"):
        lr_probe(module_cls(), **_loaders(), lrs=[1e3, 1e4], num_steps=10, **trainer_kwargs)


def test_one_line_per_candidate_and_no_trainer_banners(lightning_ns, trainer_kwargs, caplog):
    import logging

    module = _module_class(lightning_ns)(lr=0.01)
    package = lightning_ns.__name__
    before = logging.getLogger(package).level
    with caplog.at_level(logging.INFO):
        lr_probe(module, **_loaders(), lrs=[0.01, 0.1], num_steps=3, **trainer_kwargs)
    lines = [r.getMessage() for r in caplog.records]
    assert [m for m in lines if m.startswith("LR probe:")] == [
        m for m in lines if "lr=0.01," in m or "lr=0.1," in m
    ] and len([m for m in lines if m.startswith("LR probe:")]) == 2
    assert not [m for m in lines if "max_steps=3" in m]  # Lightning's banner, once per Trainer
    assert logging.getLogger(package).level == before


def test_a_small_validation_set_is_named_in_a_warning(lightning_ns, trainer_kwargs, recwarn):
    module = _module_class(lightning_ns)(lr=0.01)
    loaders = _loaders()
    result = lr_probe(module, **loaders, lrs=[0.01, 0.1], num_steps=2, **trainer_kwargs)
    assert result.val_examples == 256
    assert not [w for w in recwarn if "validation examples" in str(w.message)]
    x, y = loaders["val_dataloaders"].dataset.tensors
    small = DataLoader(TensorDataset(x[:40], y[:40]), batch_size=16)
    with pytest.warns(UserWarning, match=r"judged 2 LRs on 40 validation examples.*2\.5 points"):
        result = lr_probe(
            module,
            train_dataloaders=loaders["train_dataloaders"],
            val_dataloaders=small,
            lrs=[0.01, 0.1],
            num_steps=2,
            **trainer_kwargs,
        )
    assert result.val_examples == 40
