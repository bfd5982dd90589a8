"""Create timm models, load pretrained weights (hub or local file), find layer groups.

Everything here asks the model about its own structure (``pretrained_cfg``, ``group_matcher``,
``get_classifier``) instead of guessing module names.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

__all__ = [
    "WeightsFileNotFoundError",
    "classifier_names",
    "classifier_parameter_names",
    "create_model",
    "find_timm_model",
    "finetuning_groups",
    "layer_groups",
    "load_weights_file",
]

log = logging.getLogger(__name__)

PretrainedArg = bool | str | os.PathLike
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model", "module")
_PREFIXES = ("model.", "module.", "_orig_mod.")


class WeightsFileNotFoundError(FileNotFoundError, ValueError):
    """A ``pretrained`` path that does not exist (both a ``FileNotFoundError`` and a ``ValueError``).

    Example:
        >>> try:
        ...     load_weights_file("no/such/weights.pth")
        ... except ValueError as err:
        ...     print(type(err).__name__, isinstance(err, FileNotFoundError))
        WeightsFileNotFoundError True
    """


def _check_model_name(model_name: str) -> None:
    if not isinstance(model_name, str):
        raise TypeError(f"`model_name` must be a str, but got {model_name!r}")
    if timm.is_model(model_name):
        return
    close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean one of {close}?" if close else ""
    raise ValueError(
        f"`model_name={model_name!r}` is not a timm model.{hint} "
        "`timm.list_models('pattern*')` lists the accepted names."
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
        ValueError: the file holds no tensors.

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
            f"init) or the path of a local weights file ({', '.join(_WEIGHT_SUFFIXES)})."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors have many types
            raise ValueError(
                f"`pretrained={str(path)!r}` could not be read as a torch weights file with "
                f"weights_only=True ({type(err).__name__}: {str(err).splitlines()[0]})"
            ) from err
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"`pretrained={str(path)!r}` holds no state dict of tensors")
    return _strip_prefixes({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)})


def classifier_names(model: nn.Module) -> list[str]:
    """Module names of the classifier(s) of a timm model, from its ``pretrained_cfg``.

    Example:
        >>> classifier_names(create_model("test_convnext", num_classes=2))
        ['head.fc']
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier")
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def _file_num_classes(state_dict: Mapping[str, torch.Tensor], classifiers: list[str]) -> int | None:
    for name in classifiers:
        weight = state_dict.get(f"{name}.weight")
        if weight is not None:
            return int(weight.shape[0])
    return None


def _describe_mismatch(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], skip: list[str]
) -> str:
    own = model.state_dict()
    skipped = tuple(f"{name}." for name in skip)
    missing = [k for k in own if k not in state_dict and not k.startswith(skipped)]
    unexpected = [k for k in state_dict if k not in own and not k.startswith(skipped)]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and not k.startswith(skipped) and state_dict[k].shape != own[k].shape
    ]
    parts = []
    for title, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape-mismatched", shapes),
    ):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{len(items)} {title} keys: {items[:5]}{more}")
    return "; ".join(parts)


def create_model(
    model_name: str,
    num_classes: int | None = None,
    pretrained: PretrainedArg = False,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model, optionally with pretrained weights from the hub or a local file.

    ``pretrained`` may be ``False`` (random init), ``True`` (timm's hub weights; needs internet
    or a warm cache) or the path of a local ``.safetensors``/``.pth``/``.pt``/``.bin``/``.ckpt``
    file. A local file goes through timm's own pretrained machinery (its checkpoint filter, input
    channel adaptation and classifier handling): when the file's classifier has another number of
    classes than ``num_classes``, the classifier is dropped and re-initialised, and a message says
    so. Files are read with ``weights_only=True``.

    Args:
        model_name: any name from ``timm.list_models()``.
        num_classes: classes of the new classifier (timm's default when None).
        pretrained: False, True, or a path to a weights file.
        **kwargs: passed to ``timm.create_model`` (``drop_rate``, ``img_size``, ...).

    Raises:
        ValueError: unknown model name (with close names), ``num_classes < 1``, a weights file
            of another architecture (with the keys that do not match).
        WeightsFileNotFoundError: the weights file does not exist.

    Example:
        >>> model = create_model("test_resnet", num_classes=3)
        >>> model.get_classifier().out_features
        3
    """
    _check_model_name(model_name)
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"`num_classes` must be an int >= 1, but got {num_classes=!r}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained is False or pretrained is None:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    if pretrained is True:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(
            f"`pretrained` must be a bool or a path to a weights file, but got {pretrained!r}"
        )
    state_dict = load_weights_file(pretrained)
    reference = timm.create_model(model_name, pretrained=False, **kwargs)
    classifiers = classifier_names(reference)
    file_classes = _file_num_classes(state_dict, classifiers)
    target_classes = reference.num_classes if hasattr(reference, "num_classes") else None
    overlay: dict[str, Any] = {"state_dict": state_dict}
    if file_classes is not None:
        overlay["num_classes"] = file_classes
    if file_classes is not None and target_classes is not None and file_classes != target_classes:
        log.warning(
            "lightning_tune: %s has a %d-class classifier (%s); the model has %d classes, so the "
            "classifier is re-initialised and the rest of the weights are loaded.",
            pretrained,
            file_classes,
            ", ".join(classifiers),
            target_classes,
        )
    try:
        return timm.create_model(
            model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        )
    except RuntimeError as err:
        detail = _describe_mismatch(reference, state_dict, classifiers) or str(err).splitlines()[0]
        raise ValueError(
            f"`pretrained={str(pretrained)!r}` does not fit `model_name={model_name!r}`: {detail}. "
            "Was it saved from another architecture?"
        ) from err


def layer_groups(model: nn.Module, *, coarse: bool = False) -> list[tuple[str, list[str]]]:
    """The layer groups of a timm model, bottom (stem) to top (head), as parameter names.

    Groups come from the model's own ``group_matcher`` (timm's layer-decay grouping): the stem,
    then one group per block (``coarse=False``) or per stage (``coarse=True``), then the head.
    Each entry is ``(group_name, [parameter names])``; parameters that no matcher claims land in
    the last group, as in timm.

    Example:
        >>> groups = layer_groups(create_model("test_resnet", num_classes=2), coarse=True)
        >>> [name for name, _ in groups][:2], groups[-1][1]
        (['group_0', 'group_1'], ['fc.weight', 'fc.bias'])
    """
    from timm.models import group_parameters

    if not hasattr(model, "group_matcher"):
        raise ValueError(
            f"{type(model).__name__} has no `group_matcher`; layer groups come from timm models. "
            "Name the modules explicitly instead."
        )
    grouping = group_parameters(model, model.group_matcher(coarse=coarse), reverse=False)
    ordered = sorted(grouping.items(), key=lambda kv: kv[0])
    return [(f"group_{i}", list(names)) for i, (_, names) in enumerate(ordered)]


# ------------------------------------------------------------------ structure for fine-tuning
def find_timm_model(module: nn.Module, attribute: str | None = None) -> tuple[str, nn.Module]:
    """The timm model inside ``module`` (e.g. a LightningModule) and its attribute path.

    A timm model is recognised by its ``group_matcher`` and ``get_classifier`` methods. With
    ``attribute`` (a dotted path such as ``"model"`` or ``"net.backbone"``) that submodule is
    used; otherwise the shallowest such submodule (``module`` itself counts, with path ``""``).

    Raises:
        ValueError: no timm model found, several at the same depth, or ``attribute`` does not
            name a timm model; the message lists what was searched.

    Example:
        >>> wrapper = nn.ModuleDict({"net": create_model("test_resnet", num_classes=2)})
        >>> find_timm_model(wrapper)[0]
        'net'
    """

    def is_timm(m: nn.Module) -> bool:
        return callable(getattr(m, "group_matcher", None)) and callable(
            getattr(m, "get_classifier", None)
        )

    if attribute is not None:
        try:
            found = module.get_submodule(attribute)
        except AttributeError as err:
            raise ValueError(
                f"`model_attribute={attribute!r}` is not a submodule of {type(module).__name__}; "
                f"its top-level modules are {[n for n, _ in module.named_children()]}"
            ) from err
        if not is_timm(found):
            raise ValueError(
                f"`model_attribute={attribute!r}` is a {type(found).__name__}, not a timm model "
                "(no `group_matcher`/`get_classifier`); pass `groups=[...]` for other modules"
            )
        return attribute, found
    candidates = [(name, m) for name, m in module.named_modules() if is_timm(m)]
    if not candidates:
        raise ValueError(
            f"no timm model (a module with `group_matcher` and `get_classifier`) found in "
            f"{type(module).__name__}; searched {len(list(module.modules()))} submodules. For "
            "other models pass `groups=[...]` (module names or regex patterns, bottom to top, "
            "head last)"
        )
    depth = min(name.count(".") + bool(name) for name, _ in candidates)
    shallowest = [(n, m) for n, m in candidates if n.count(".") + bool(n) == depth]
    if len(shallowest) > 1:
        raise ValueError(
            f"several timm models found in {type(module).__name__}: "
            f"{[n for n, _ in shallowest]}; pass `model_attribute=` to choose one"
        )
    return shallowest[0]


def classifier_parameter_names(model: nn.Module) -> list[str]:
    """Names (in ``model``) of the parameters of a timm model's classifier.

    The classifier is what ``model.get_classifier()`` returns together with the modules named
    by ``pretrained_cfg["classifier"]``.

    Raises:
        ValueError: neither names a module with parameters (the message says what was searched).

    Example:
        >>> classifier_parameter_names(create_model("test_convnext", num_classes=2))
        ['head.fc.weight', 'head.fc.bias']
    """
    owned: set[int] = set()
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    if isinstance(classifier, nn.Module):
        owned.update(id(p) for p in classifier.parameters())
    modules = dict(model.named_modules())
    for name in classifier_names(model):
        if name in modules:
            owned.update(id(p) for p in modules[name].parameters())
    names = [n for n, p in model.named_parameters() if id(p) in owned]
    if not names:
        raise ValueError(
            f"no classifier found in {type(model).__name__}: searched `get_classifier()` "
            f"(returned {type(classifier).__name__}) and `pretrained_cfg['classifier']` "
            f"({classifier_names(model) or 'not set'}). Pass `groups=[...]` with the head as the "
            "last entry to name it explicitly"
        )
    return names


def finetuning_groups(model: nn.Module, *, coarse: bool = True) -> list[tuple[str, list[str]]]:
    """Layer groups of a timm model for freezing, bottom to top, the classifier in the last one.

    Like :func:`layer_groups`, with two guarantees: the classifier's parameters (see
    :func:`classifier_parameter_names`) are in the last group, which is named ``"head"``, and no
    group is empty.

    Example:
        >>> groups = finetuning_groups(create_model("test_resnet", num_classes=2))
        >>> len(groups), groups[-1]
        (6, ('head', ['fc.weight', 'fc.bias']))
    """
    head = classifier_parameter_names(model)
    head_set = set(head)
    groups = [
        (name, [n for n in names if n not in head_set])
        for name, names in layer_groups(model, coarse=coarse)
    ]
    _, last = groups.pop()
    groups = [(name, names) for name, names in groups if names]
    return [*groups, ("head", [*last, *head])]
