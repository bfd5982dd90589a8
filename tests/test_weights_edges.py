"""Edges of ``lightning_tune.weights``: exact messages and counts.

Covers the reason ``load_weights_file`` quotes from a reader's error (torch's advice lines
dropped, the last real line kept, "the file ends early" for an empty message), the five-item
limit of ``WeightsMatch.describe``, ``match_weights`` without head prefixes (every tensor is
backbone) and with them (the file's extra classifier tensors are not "unused"), and
``check_loaded(strict=False)`` refusing a file of which no backbone tensor matches while
accepting one that matches a single tensor.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch

from lightning_tune.timm_utils import create_model
from lightning_tune.weights import WeightsMatch, check_loaded, load_weights_file, match_weights


@pytest.fixture(scope="module")
def resnet_state():
    torch.manual_seed(0)
    return {
        k: v.contiguous()
        for k, v in create_model("test_resnet", num_classes=3).state_dict().items()
    }


def _load_error(path) -> str:
    with pytest.raises(ValueError) as info:
        load_weights_file(path)
    return str(info.value)


def test_reason_skips_torchs_weights_only_advice_and_keeps_the_unpickler_line(tmp_path):
    # Bytes that are no pickle: torch's weights_only unpickler answers with a paragraph of
    # advice (lines naming weights_only, blank lines, "Check the documentation ...") around
    # the one line that says what is wrong.
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"\x13" * 64)
    message = _load_error(path)
    prefix = f"`pretrained={str(path)!r}` is not a readable torch.save (unrecognised header) file"
    assert message == f"{prefix} (truncated or corrupt?): UnpicklingError: Unsupported operand 19"


def test_reason_keeps_a_plain_one_line_reader_message(tmp_path, resnet_state):
    path = tmp_path / "weights.pth"
    torch.save(resnet_state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _load_error(path)
    assert re.fullmatch(
        rf"`pretrained={re.escape(repr(str(path)))}` is not a readable torch zip archive file "
        r"\(truncated or corrupt\?\): RuntimeError: PytorchStreamReader failed reading zip "
        r"archive: failed finding central directory\..*",
        message,
    ), message
    assert "weights_only" not in message


def test_reason_for_an_empty_reader_message_is_that_the_file_ends_early(tmp_path):
    # torch.load of an empty file raises EOFError with no message at all.
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    assert _load_error(path) == (
        f"`pretrained={str(path)!r}` is not a readable torch.save (unrecognised header) file "
        "(truncated or corrupt?): EOFError: the file ends early"
    )


def _keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.mark.parametrize(
    ("n", "suffix"), [(5, ""), (6, " (+1 more)"), (7, " (+2 more)")], ids=["5", "6", "7"]
)
def test_describe_lists_five_keys_and_counts_the_rest(n, suffix):
    found = WeightsMatch(missing=_keys("m", n), unexpected=_keys("u", n))
    shown = str(_keys("m", 5)), str(_keys("u", 5))
    assert found.describe() == (
        f"{n} missing keys: {shown[0]}{suffix}; {n} unexpected keys: {shown[1]}{suffix}"
    )


def test_without_head_prefixes_every_tensor_is_backbone():
    model = {"conv.weight": torch.ones(2, 2), "fc.weight": torch.ones(3, 2)}
    found = match_weights(model, {"conv.weight": torch.ones(2, 2), "x": torch.ones(1)})
    assert (found.backbone, found.matched, found.head, found.head_matched) == (2, 1, 0, 0)
    assert found.missing == ["fc.weight"] and found.unexpected == ["x"]
    assert not found.complete
    with pytest.raises(ValueError, match=r"only 1/2 backbone tensors .* \['fc\.weight'\]"):
        check_loaded(found, "w.pth", "net")


def test_extra_classifier_tensors_in_the_file_are_not_reported_unused(
    tmp_path, resnet_state, caplog
):
    found = match_weights(
        {"conv.weight": torch.ones(2), "fc.weight": torch.ones(3)},
        {"conv.weight": torch.ones(2), "fc.extra": torch.ones(1), "x": torch.ones(1)},
        ("fc.",),
    )
    assert found.unexpected == ["x"]
    # The same through create_model: a checkpoint whose classifier holds one more tensor.
    path = tmp_path / "extra_head.pth"
    torch.save({**resnet_state, "fc.extra": torch.zeros(3)}, path)
    with caplog.at_level(logging.INFO, logger="lightning_tune"):
        model = create_model("test_resnet", num_classes=3, pretrained=path)
    assert f"loaded 92/92 tensors from {path}" in caplog.text
    assert "unused" not in caplog.text
    assert torch.equal(model.state_dict()["fc.weight"], resnet_state["fc.weight"])


def test_strict_false_refuses_a_file_with_no_backbone_match_but_takes_one_match(tmp_path):
    model = {"a": torch.ones(2), "b": torch.ones(2), "fc.w": torch.ones(1)}
    nothing = match_weights(model, {"c": torch.ones(2)}, ("fc.",))
    with pytest.raises(
        ValueError,
        match=r"^`pretrained='w\.pth'` does not fit `model_name='net'`: only 0/2 backbone "
        r"tensors match by name and shape; 2 missing keys: \['a', 'b'\]; 1 unexpected keys: "
        r"\['c'\]\. Nothing of the backbone matches\.$",
    ):
        check_loaded(nothing, "w.pth", "net", strict=False)
    one = match_weights(model, {"a": torch.ones(2)}, ("fc.",))
    assert check_loaded(one, "w.pth", "net", strict=False) == (
        "loaded 1/3 tensors from w.pth (classifier re-initialised); strict=False: 1 backbone "
        "tensors keep their random initialisation (1 missing keys: ['b'])"
    )
    # Through create_model: a file of tensors test_resnet does not have at all.
    path = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.ones(4, 4)}, path)
    with pytest.raises(ValueError, match=r"only 0/90 backbone tensors.*Nothing of the backbone"):
        create_model("test_resnet", num_classes=3, pretrained=path, strict=False)
