"""README.md's own examples stay true: the quick start and the callbacks example run."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_quick_start_names_the_test_command_ci_runs():
    text = README.read_text()
    marker = text.index("<!-- ci:test-command -->")
    command = re.search(r"```bash\n(.*?)\n```", text[marker:], re.S).group(1)
    assert command.startswith("python -m pytest")
    assert "lightning-tune demo" in text[:marker]


def test_callbacks_at_a_glance_runs(tmp_path, monkeypatch):
    code = _block_after("## Callbacks at a glance")
    small = re.sub(
        r"max_epochs=10,(\s*)callbacks",
        "max_epochs=3, limit_train_batches=3, limit_val_batches=2, enable_progress_bar=False, "
        "logger=False, enable_checkpointing=False, enable_model_summary=False,\\1callbacks",
        code,
    )
    assert small != code, "the README example changed: update this test's shortening"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(small, "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.current_epoch == 3
    names = {type(cb).__name__ for cb in trainer.callbacks}
    assert {
        "LRSchedule",
        "GradientClipping",
        "LabelSmoothing",
        "EarlyStopping",
        "LayerFreezing",
    } <= names


def test_population_based_training_example_runs(tmp_path, monkeypatch):
    code = _block_after("## Population-based training")
    small = code.replace('"population": 4, "interval": 2', '"population": 2, "interval": 1')
    small = small.replace("max_epochs=8", "max_epochs=2").replace(
        '{"accelerator": "cpu"}',
        '{"accelerator": "cpu", "limit_train_batches": 2, "limit_val_batches": 1}',
    )
    assert small.count("population") == code.count("population") and small != code
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(small, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert len(result.study.trials) == 4
    assert (
        tmp_path / "lightning_tune_runs" / "lightning_tune" / "report" / "pbt_lineage.png"
    ).exists()


def test_is_my_training_healthy_runs_and_lists_every_code(tmp_path, monkeypatch):
    from lightning_tune.diagnostics import CODES

    heading = "## Is my training healthy?"
    code = _block_after(heading)
    small = code.replace(
        "limit_train_batches=20,",
        "limit_train_batches=6, limit_val_batches=1, enable_progress_bar=False, logger=False, "
        "enable_checkpointing=False,",
    )
    assert small != code, "the README example changed: update this test's shortening"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(small, "README.md", "exec"), namespace)
    assert namespace["diagnostics"].history
    assert (tmp_path / "diagnostics_png" / "gradient_flow.png").exists()
    text = README.read_text()
    section = text[text.index(heading) :]
    for name in CODES:
        assert f"`{name}`" in section


def test_finetuning_preset_example_runs(tmp_path, monkeypatch):
    code = _block_after("## Fine-tuning a pretrained model: the preset first")
    # lr given: the range test of the README's default path runs in tests/test_recipes.py
    small = code.replace("max_epochs=30)  #", "max_epochs=2, lr=1e-3)  #").replace(
        "pl.Trainer(max_epochs=30, callbacks=plan.callbacks)",
        "pl.Trainer(max_epochs=2, callbacks=plan.callbacks, limit_val_batches=0, "
        "enable_progress_bar=False, logger=False, enable_checkpointing=False, "
        "enable_model_summary=False)",
    )
    assert small.count("max_epochs=2") == 2, "the README example changed: update this test"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(small, "README.md", "exec"), namespace)
    plan, trainer = namespace["plan"], namespace["trainer"]
    assert plan.lr_source == "given" and plan.total_steps == 2 * 2  # 63 images, batch 32
    assert trainer.current_epoch == 2


def test_step_aware_freezing_example_runs(tmp_path, monkeypatch):
    code = _block_after("## Fine-tuning: layer freezing and gradual unfreezing")
    small = code.replace(
        "max_epochs=30,",
        "max_epochs=3, limit_val_batches=0, enable_progress_bar=False, logger=False, "
        "enable_checkpointing=False, enable_model_summary=False,",
    )
    assert small != code, "the README example changed: update this test"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(small, "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    freezing = next(cb for cb in trainer.callbacks if type(cb).__name__ == "LayerFreezing")
    # 63 images at batch 32: 2 steps per epoch, 6 in all; 10 % of 6 is step 1, then every step
    assert [step for step, _ in freezing.step_schedule()] == [1, 2, 3, 4, 5]
    assert trainer.global_step == 6


def test_lightning_or_pytorch_lightning_example_runs(tmp_path, monkeypatch):
    code = _block_after("## Lightning or PyTorch Lightning")
    small = code.replace(
        "max_epochs=2, callbacks",
        "max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_progress_bar=False, "
        "logger=False, enable_checkpointing=False, enable_model_summary=False, callbacks",
    )
    assert small != code, "the README example changed: update this test's shortening"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(small, "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert type(trainer).__module__.startswith("lightning.pytorch")
    assert trainer.global_step == 2


def test_several_objectives_example_runs(tmp_path, monkeypatch):
    code = _block_after("### Several objectives: a Pareto front")
    small = code.replace("tuner.run(n_trials=12)", "tuner.run(n_trials=3)").replace(
        "max_epochs=3,",
        'max_epochs=1, trainer_kwargs={"limit_train_batches": 2, "limit_val_batches": 1}, '
        "quiet=True,",
    )
    assert small.count("n_trials=3") == 1 and "limit_train_batches" in small
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(small, "README.md", "exec"), namespace)
    result = namespace["result"]
    front = result.best_trials
    assert front and all(len(t.values) == 2 for t in front)
    # the front: no trial on it is beaten in both val_loss and params_m by another trial
    complete = [t for t in result.study.trials if t.values]
    for t in front:
        assert not any(
            o.values[0] <= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
            for o in complete
        )
    report = tmp_path / "lightning_tune_runs"
    assert list(report.rglob("pareto_front.csv")), sorted(p.name for p in report.rglob("*"))
