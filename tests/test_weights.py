from __future__ import annotations

import os
import re

import pytest
import torch
from safetensors.torch import save_file

from lightning_tune.timm_utils import create_model
from lightning_tune.weights import load_weights_file, match_weights


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture(scope="module")
def state():
    return {
        k: v.contiguous()
        for k, v in create_model("test_resnet", num_classes=3).state_dict().items()
    }


def _save(state, path, fmt):
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "torch zip archive")


@pytest.mark.parametrize(
    ("suffix", "fmt"),
    [
        (".safetensors", "safetensors"),
        (".pth", "torch zip archive"),
        (".ckpt", "torch zip archive"),
        (".pt", "legacy torch pickle"),
    ],
)
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_damaged_files_fail_once_naming_path_and_format(tmp_path, state, suffix, fmt, damage):
    path = tmp_path / f"weights{suffix}"
    _save(state, path, fmt)
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x13" * 64}
    path.write_bytes(damaged[damage])
    expected = fmt if damage == "truncated" else ("safetensors" if fmt == "safetensors" else "")
    pattern = rf"`pretrained='{re.escape(str(path))}'` is not a readable {expected}.*file"
    with pytest.raises(ValueError, match=pattern) as info:
        load_weights_file(path)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "weights_only=False" not in str(info.value)


def test_unsafe_pickle_names_the_global_and_never_suggests_unsafe_loading(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": _RunsCode()}, path)
    with pytest.raises(ValueError, match=r"pickles the global `posix\.getcwd`") as info:
        load_weights_file(path)
    assert "weights_only=False" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    torch.save({"fc.weight": torch.zeros(2, 2), "callable": print}, path)
    with pytest.raises(ValueError, match=r"pickles the global `print`"):
        load_weights_file(path)


def test_a_file_without_tensors_is_refused(tmp_path):
    path = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(ValueError, match=r"\(torch zip archive\) holds no state dict of tensors"):
        load_weights_file(path)


def test_match_counts_by_name_shape_and_value():
    model = {"a": torch.ones(2), "b": torch.ones(3), "head.w": torch.ones(4)}
    found = match_weights(
        model, {"a": torch.ones(2), "b": torch.ones(4), "x": torch.ones(1)}, ("head.",)
    )
    assert (found.matched, found.backbone, found.head_matched, found.head) == (1, 2, 0, 1)
    assert found.mismatched == ["b: file (4,) vs model (3,)"] and found.unexpected == ["x"]
    after = match_weights(model, {"a": torch.zeros(2), "b": torch.ones(3)}, ("head.",), values=True)
    assert after.matched == 1 and after.mismatched == ["a: values differ after loading"]
