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
