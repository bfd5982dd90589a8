"""Read weights files safely and check that pretrained weights really loaded.

:func:`load_weights_file` reads ``.safetensors`` files with safetensors and everything else
with ``torch.load(weights_only=True)``; a truncated or corrupt file fails with one
``ValueError`` naming the path and the format, and a file that pickles code is refused with
the name of the offending global. :func:`match_weights` counts, by name and shape, which of a
model's tensors a state dict provides; :func:`check_loaded` turns that count into the success
line or an error listing the missing, unexpected and shape-mismatched keys.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "WEIGHT_SUFFIXES",
    "WeightsFileNotFoundError",
    "WeightsMatch",
    "check_loaded",
    "load_weights_file",
    "match_weights",
]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model", "module")
_PREFIXES = ("model.", "module.", "_orig_mod.")
_UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


class WeightsFileNotFoundError(FileNotFoundError, ValueError):
    """A ``pretrained`` path that does not exist (both a ``FileNotFoundError`` and a ``ValueError``).

    Example:
        >>> try:
        ...     load_weights_file("no/such/weights.pth")
        ... except ValueError as err:
        ...     print(type(err).__name__, isinstance(err, FileNotFoundError))
        WeightsFileNotFoundError True
    """


def _file_format(path: Path) -> str:
    """The format of a weights file, from its first bytes (its suffix for safetensors)."""
    if path.suffix == ".safetensors":
        return "safetensors"
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        return "torch zip archive"
    if head[:1] == b"\x80":
        return "legacy torch pickle"
    return "torch.save (unrecognised header)"


def _read(path: Path, fmt: str) -> Any:
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _reason(text: str) -> str:
    """The line of a reader's message that says what is wrong (not torch's advice)."""
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and "weights_only" not in line and not line.startswith("Check the doc")
    ]
    return lines[-1] if lines else "the file ends early"


def _read_error(path: Path, fmt: str, err: Exception) -> ValueError:
    text = str(err)
    unsafe = _UNSAFE_GLOBAL.search(text) if isinstance(err, pickle.UnpicklingError) else None
    if unsafe:
        return ValueError(
            f"`pretrained={str(path)!r}` ({fmt}) pickles the global `{unsafe.group(1)}`, which "
            "is not a tensor, a container or a number; lightning_tune only reads weights and "
            "never runs code from a file. Save the weights alone (`torch.save(model."
            "state_dict(), path)` or safetensors' `save_file`) from a source you trust."
        )
    return ValueError(
        f"`pretrained={str(path)!r}` is not a readable {fmt} file (truncated or corrupt?): "
        f"{type(err).__name__}: {_reason(text)}"
    )


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file safely and return a flat ``name -> tensor`` state dict.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, so a file cannot run code. Wrapped checkpoints
    (``{"state_dict": ...}``, a Lightning checkpoint of :class:`~lightning_tune.TimmClassifier`)
    and ``model.`` / ``module.`` prefixes are unwrapped.

    Raises:
        WeightsFileNotFoundError: the file does not exist.
        ValueError: the file is truncated or corrupt (the message names the path and format),
            pickles code (it names the global), or holds no tensors.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.pth")
        >>> torch.save({"state_dict": {"model.fc.weight": torch.ones(2, 3)}}, path)
        >>> {k: tuple(v.shape) for k, v in load_weights_file(path).items()}
        {'fc.weight': (2, 3)}
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileNotFoundError(
            f"`pretrained={str(path)!r}` is not a file. Pass True (hub weights), False (random "
            f"init) or the path of a local weights file ({', '.join(WEIGHT_SUFFIXES)})."
        )
    fmt = _file_format(path)
    try:
        obj = _read(path, fmt)
    except Exception as err:  # readers raise many types (SafetensorError, RuntimeError, ...)
        raise _read_error(path, fmt, err) from None
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"`pretrained={str(path)!r}` ({fmt}) holds no state dict of tensors")
    return _strip_prefixes({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)})


@dataclass
class WeightsMatch:
    """Which of a model's tensors a state dict provides, by name and shape.

    ``backbone`` counts the model's tensors outside the classifier, ``matched`` those of them
    the file has with the same shape; ``head_matched`` is the same for the classifier.
    """

    backbone: int = 0
    matched: int = 0
    head: int = 0
    head_matched: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every backbone tensor is provided."""
        return self.matched == self.backbone

    def describe(self) -> str:
        """The missing / unexpected / mismatched keys, five of each."""
        parts = []
        for title, items in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape-mismatched", self.mismatched),
        ):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {title} keys: {items[:5]}{more}")
        return "; ".join(parts)


def match_weights(
    model_state: Mapping[str, torch.Tensor],
    file_state: Mapping[str, torch.Tensor],
    head_prefixes: tuple[str, ...] = (),
    *,
    values: bool = False,
    adapted: frozenset[str] = frozenset(),
) -> WeightsMatch:
    """Count the model tensors that ``file_state`` provides (same name and shape).

    Names starting with one of ``head_prefixes`` (e.g. ``("fc.",)``) belong to the classifier,
    which may be re-initialised. With ``values=True`` a tensor only counts when the model holds
    exactly the file's values (to check a load that already happened). Names in ``adapted``
    (an input conv timm converted to another number of channels) count when present.

    Example:
        >>> model = {"conv.weight": torch.ones(2, 2), "fc.weight": torch.ones(3, 2)}
        >>> found = match_weights(model, {"conv.weight": torch.ones(2, 2)}, ("fc.",))
        >>> found.matched, found.backbone, found.head_matched, found.complete
        (1, 1, 0, True)
    """
    found = WeightsMatch()
    for name, own in model_state.items():
        head = name.startswith(head_prefixes) if head_prefixes else False
        theirs = file_state.get(name)
        ok = theirs is not None and (theirs.shape == own.shape or name in adapted)
        if ok and values and name not in adapted:
            ok = torch.equal(own.detach().cpu(), theirs.to(own.dtype).cpu())
        if head:
            found.head += 1
            found.head_matched += ok
            continue
        found.backbone += 1
        found.matched += ok
        if theirs is None:
            found.missing.append(name)
        elif theirs.shape != own.shape and name not in adapted:
            found.mismatched.append(
                f"{name}: file {tuple(theirs.shape)} vs model {tuple(own.shape)}"
            )
        elif not ok:
            found.mismatched.append(f"{name}: values differ after loading")
    found.unexpected = [
        k for k in file_state if k not in model_state and not k.startswith(head_prefixes or ("\0",))
    ]
    return found


def check_loaded(found: WeightsMatch, source: str, target: str, *, strict: bool = True) -> str:
    """The success line for ``found``, or a ``ValueError`` when backbone tensors are missing.

    With ``strict=False`` a partial load is accepted (the line says how partial) as long as at
    least one backbone tensor matched.

    Example:
        >>> print(check_loaded(WeightsMatch(backbone=4, matched=4, head=2), "w.pth", "resnet"))
        loaded 4/6 tensors from w.pth (classifier re-initialised)
    """
    total = found.backbone + found.head
    loaded = found.matched + found.head_matched
    if not found.complete and (strict or found.matched == 0):
        hint = (
            "Was it saved from another architecture?"
            if strict
            else "Nothing of the backbone matches."
        )
        raise ValueError(
            f"`pretrained={source!r}` does not fit `model_name={target!r}`: only "
            f"{found.matched}/{found.backbone} backbone tensors match by name and shape; "
            f"{found.describe()}. {hint}"
        )
    note = " (classifier re-initialised)" if found.head_matched < found.head else ""
    partial = (
        ""
        if found.complete
        else f"; strict=False: {found.backbone - found.matched} backbone tensors keep their "
        f"random initialisation ({found.describe()})"
    )
    unused = (
        f"; {len(found.unexpected)} file tensors unused: {found.unexpected[:5]}"
        if found.unexpected
        else ""
    )
    return f"loaded {loaded}/{total} tensors from {source}{note}{partial}{unused}"
