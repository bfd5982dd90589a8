"""Both Lightning packages: our classes in each Trainer, per-instance hooks, mixing errors,
and an environment with only one of the two packages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as lt
from lightning_tune import DigitsDataModule, OptunaPruning, TimmClassifier
from lightning_tune._compat import check_lightning, check_trainer, common_namespace
from lightning_tune.callbacks import (
    EarlyStopping,
    GradientClipping,
    LabelSmoothing,
    LayerFreezing,
    LRSchedule,
)
from lightning_tune.tuner import Tuner

BOTH = pytest.mark.skipif(len(lt.NAMESPACES) < 2, reason="needs both Lightning packages")
ROOT = Path(__file__).resolve().parents[1]


def user_module_class(ns):
    """A user's module: derived from one package's LightningModule only."""

    class UserModule(ns.LightningModule):
        def __init__(self, lr: float = 0.2) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.body = nn.Linear(4, 8)
            self.head = nn.Linear(8, 3)
            self.criterion = nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = self.criterion(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", self.criterion(self(x), y))

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

        def train_dataloader(self):
            return loader(0)

        def val_dataloader(self):
            return loader(1)

    return UserModule


def loader(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 4, generator=generator)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long()), batch_size=8)


def test_our_classes_belong_to_every_installed_package():
    callbacks = [
        LRSchedule("cosine"),
        EarlyStopping("val_loss"),
        GradientClipping(1.0),
        LabelSmoothing(0.1),
        LayerFreezing(),
    ]
    for ns in lt.NAMESPACES:
        assert all(isinstance(cb, ns.Callback) for cb in callbacks)
        assert isinstance(callbacks[1], ns.callbacks.EarlyStopping)
        assert issubclass(OptunaPruning, ns.Callback)
        assert issubclass(TimmClassifier, ns.LightningModule)
        assert issubclass(DigitsDataModule, ns.LightningDataModule)
    assert lt.namespaces_of(TimmClassifier) == lt.NAMESPACES
    assert lt.namespaces_of(user_module_class(lt.NAMESPACES[-1])) == lt.NAMESPACES[-1:]


# Methods each package's base class defines with code of its own (docstrings differ).
NOT_OVERRIDDEN = (
    "configure_callbacks",
    "configure_model",
    "lr_scheduler_step",
    "on_train_epoch_end",
    "optimizer_step",
    "predict_dataloader",
    "on_validation_model_eval",
)


def test_a_trainer_sees_its_own_packages_defaults(lightning_ns, trainer_kwargs):
    is_overridden = lightning_ns.utilities.model_helpers.is_overridden
    module = TimmClassifier("test_resnet", num_classes=3)
    datamodule = DigitsDataModule(image_size=8, batch_size=16)
    trainer = lightning_ns.Trainer(**trainer_kwargs)
    module.trainer = trainer  # what the Trainer does when it starts fit/validate/test/predict
    datamodule.trainer = trainer
    assert [n for n in NOT_OVERRIDDEN if is_overridden(n, module)] == []
    assert is_overridden("training_step", module) and is_overridden("predict_step", module)
    assert not is_overridden("predict_dataloader", datamodule)
    assert is_overridden("train_dataloader", datamodule)
    assert module.trainer is trainer and datamodule.trainer is trainer


@BOTH
def test_without_the_per_instance_dispatch_the_unified_trainer_is_misled():
    """What the dispatch is for: a class that merely derives from both packages' modules looks
    as if it overrode hooks in one of the two Trainers."""
    pl, unified = lt.NAMESPACES
    plain = type("Plain", (pl.LightningModule, unified.LightningModule), {})()
    assert unified.utilities.model_helpers.is_overridden("on_train_epoch_end", plain)
    dual = type("Dual", (lt.LightningModule,), {})()
    dual.trainer = unified.Trainer(logger=False, enable_progress_bar=False)
    assert not unified.utilities.model_helpers.is_overridden("on_train_epoch_end", dual)


def all_callbacks() -> list:
    return [
        LRSchedule("cosine", warmup=0.2),
        GradientClipping(1.0),
        LabelSmoothing(0.1),
        EarlyStopping("val_loss", patience=5),
        LayerFreezing("gradual", unfreeze_at_epoch=1),
    ]


def _fit_digits(ns, trainer_kwargs, tmp_path, max_epochs, ckpt_path=None):
    ns.seed_everything(0, workers=True, verbose=False)
    module = TimmClassifier("test_resnet", num_classes=10, lr=0.01)
    datamodule = DigitsDataModule(image_size=8, batch_size=32)
    checkpoint = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = ns.Trainer(
        **{**trainer_kwargs, "enable_checkpointing": True},
        max_epochs=max_epochs,
        limit_train_batches=3,
        limit_val_batches=2,
        limit_test_batches=2,
        limit_predict_batches=2,
        callbacks=[*all_callbacks(), checkpoint],
        deterministic=True,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, module, datamodule, checkpoint


def test_timm_classifier_digits_and_all_callbacks_in_each_trainer(
    lightning_ns, trainer_kwargs, tmp_path
):
    # fit 2 epochs, then resume to 3: the callbacks continue as in the run that never stopped
    # (the weights differ: the shuffling RNG is not part of a checkpoint)
    _, _, _, checkpoint = _fit_digits(lightning_ns, trainer_kwargs, tmp_path / "a", 2)
    resumed, module, datamodule, _ = _fit_digits(
        lightning_ns, trainer_kwargs, tmp_path / "b", 3, ckpt_path=checkpoint.last_model_path
    )
    straight, reference, _, last = _fit_digits(lightning_ns, trainer_kwargs, tmp_path / "c", 3)
    assert resumed.global_step == straight.global_step == 9
    for run in (resumed, straight):
        assert run.callbacks[3].best_epoch is not None  # EarlyStopping checked every epoch
    groups = [
        [(g["name"], g["lr"]) for g in t.optimizers[0].param_groups] for t in (resumed, straight)
    ]
    assert groups[0] == groups[1] and len(groups[0]) > 2  # LayerFreezing added groups, LRSchedule
    frozen = [[p.requires_grad for p in m.parameters()] for m in (module, reference)]
    assert frozen[0] == frozen[1] and not all(frozen[0])

    assert resumed.validate(module, datamodule=datamodule, verbose=False)[0]["val_loss"] > 0
    assert "test_acc" in resumed.test(module, datamodule=datamodule, verbose=False)[0]
    predictions = resumed.predict(module, dataloaders=datamodule.test_dataloader())
    assert len(predictions) == 2 and predictions[0].shape[1] == 10

    loaded = TimmClassifier.load_from_checkpoint(last.last_model_path)
    for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_a_users_module_of_each_package_with_our_callbacks(lightning_ns, trainer_kwargs):
    module = user_module_class(lightning_ns)()
    callbacks = [
        LRSchedule("cosine", warmup=0.25),
        GradientClipping(0.5),
        LabelSmoothing(0.1),
        EarlyStopping("val_loss", patience=1, min_delta=10.0),
        LayerFreezing(groups=["body", "head"], unfreeze_at_epoch=1),
    ]
    trainer = lightning_ns.Trainer(**trainer_kwargs, max_epochs=4, callbacks=callbacks)
    trainer.fit(module)
    assert trainer.current_epoch == 2  # min_delta=10 never improves: stops after patience 1
    assert callbacks[3].stopping_reason.name == "PATIENCE_EXHAUSTED"
    assert module.criterion.label_smoothing == 0.0  # LabelSmoothing restores it after fit
    assert all(p.requires_grad for p in module.parameters())


@BOTH
def test_mixing_the_packages_in_one_run_fails_clearly(trainer_kwargs):
    pl, unified = lt.NAMESPACES
    module = user_module_class(unified)()
    trainer = pl.Trainer(**trainer_kwargs, max_epochs=1, callbacks=[LRSchedule("cosine")])
    # Lightning refuses it before any callback runs (with its own message)...
    with pytest.raises(TypeError, match=r"must be a `LightningModule`.*UserModule"):
        trainer.fit(module)
    # ... and our checks name the mix
    with pytest.raises(TypeError, match=r"LRSchedule: the pytorch_lightning.Trainer .*cannot mix"):
        check_trainer(trainer, LRSchedule("cosine"), module)
    with pytest.raises(TypeError, match=r"`module` is from lightning.pytorch, `callbacks\[0\]`"):
        Tuner(
            type(module),
            {"lr": [0.1, 0.2]},
            callbacks=[pl.callbacks.LearningRateMonitor()],
            storage="memory",
        )


def test_check_lightning_and_common_namespace():
    assert check_lightning(EarlyStopping("x"), "callbacks[0]", "callback") == lt.NAMESPACES
    with pytest.raises(TypeError, match=r"`module` must be a LightningModule .*got int"):
        check_lightning(3, "module", "module")
    with pytest.raises(TypeError, match=r"`datamodule` must be a LightningDataModule .*class"):
        check_lightning(TimmClassifier, "datamodule", "datamodule")
    with pytest.raises(TypeError, match="needs a Lightning Trainer"):
        check_trainer(object(), LRSchedule("cosine"))
    only_last = {"module": lt.NAMESPACES[-1:], "callbacks[0]": lt.NAMESPACES}
    assert common_namespace(only_last) is lt.NAMESPACES[-1]


def test_namespace_by_name():
    assert lt.namespace(lt.NAMESPACES[-1].__name__) is lt.NAMESPACES[-1]
    with pytest.raises(ValueError, match=r"`lightning` must be one of .*lightning='lightning'"):
        lt.namespace("lightning")


# ---------------------------------------------------------------- one package installed
BLOCKER = """
import sys

BLOCKED = {blocked!r}


class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, Block())
"""

ONE_PACKAGE_RUN = """
import torch
torch.set_num_threads(1)
import lightning_tune
from lightning_tune import DigitsDataModule, TimmClassifier, Tuner
from lightning_tune._lightning import NAMESPACES
from lightning_tune.callbacks import EarlyStopping, GradientClipping, LabelSmoothing, LRSchedule

assert [ns.__name__ for ns in NAMESPACES] == [{expected!r}], NAMESPACES
assert not any(m == b or m.startswith(b + ".") for m in sys.modules for b in BLOCKED)
ns = NAMESPACES[0]
trainer = ns.Trainer(
    max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    callbacks=[LRSchedule("cosine", warmup=0.5), GradientClipping(1.0), LabelSmoothing(0.1),
               EarlyStopping("val_loss")],
)
trainer.fit(TimmClassifier("test_resnet"), datamodule=DigitsDataModule(image_size=8))
result = Tuner(
    TimmClassifier, {{"lr": {{"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}}},
    datamodule=DigitsDataModule, datamodule_kwargs={{"image_size": 8}},
    module_kwargs={{"model_name": "test_resnet"}}, storage="memory", max_epochs=1,
    trainer_kwargs={{"limit_train_batches": 2, "limit_val_batches": 1}}, quiet=True,
    keep_checkpoints=0, loggers=(), output_dir={out!r}, pruner="median",
).run(n_trials=2, plots=False)
states = sorted({{t.state.name for t in result.study.trials}})
print("OK", len(result.study.trials), ns.__name__, *states)
"""


def _run_blocked(
    blocked: tuple[str, ...], body: str, tmp_path: Path
) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=blocked) + body
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@BOTH
@pytest.mark.parametrize(
    ("blocked", "expected"),
    [
        (("lightning",), "pytorch_lightning"),
        (("pytorch_lightning", "lightning_fabric"), "lightning.pytorch"),
    ],
    ids=["only-pytorch_lightning", "only-lightning"],
)
def test_with_only_one_package_installed(blocked, expected, tmp_path):
    body = ONE_PACKAGE_RUN.format(expected=expected, out=str(tmp_path / "runs"))
    done = _run_blocked(blocked, body, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"OK 2 {expected} COMPLETE\n" in done.stdout  # both trials trained to the end


def test_with_neither_package_the_import_error_says_what_to_install(tmp_path):
    blocked = ("lightning", "pytorch_lightning", "lightning_fabric")
    done = _run_blocked(blocked, "import lightning_tune\n", tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: lightning_tune needs Lightning"), last
    assert "lightning-tune[lightning]" in last and "lightning-tune[pl]" in last


def test_the_script_blocks_what_it_says(tmp_path):
    done = _run_blocked(("pytorch_lightning",), "import pytorch_lightning\n", tmp_path)
    assert "No module named 'pytorch_lightning'" in done.stderr
    assert textwrap.dedent(BLOCKER).count("Block()") == 1
