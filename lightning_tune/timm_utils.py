"""Create timm models, load pretrained weights (hub or local file), find layer groups.

Everything here asks the model about its own structure (``pretrained_cfg``, ``group_matcher``,
``get_classifier``) instead of guessing module names.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import nn

from lightning_tune._validation import check_bool, check_int, check_optional
from lightning_tune.weights import (
    WeightsFileNotFoundError,
    check_loaded,
    load_weights_file,
    match_weights,
)

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


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = classifier_names(model)
    if not names:
        try:
            return tuple(classifier_parameter_names(model))
        except ValueError:
            return ()
    return tuple(f"{name}." for name in names)


def _input_conv_adapted(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> frozenset[str]:
    """First-conv weights timm adapts to another number of input channels (``in_chans``)."""
    convs = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv") or ()
    own = model.state_dict()
    adapted = set()
    for conv in (convs,) if isinstance(convs, str) else convs:
        key = f"{conv}.weight"
        theirs, mine = state_dict.get(key), own.get(key)
        if (
            theirs is not None
            and mine is not None
            and theirs.ndim == mine.ndim == 4
            and theirs.shape[1] != mine.shape[1]
            and (theirs.shape[0], *theirs.shape[2:]) == (mine.shape[0], *mine.shape[2:])
        ):
            adapted.add(key)
    return frozenset(adapted)


def _load_local(
    model_name: str, path: str | os.PathLike, kwargs: dict[str, Any], strict: bool
) -> nn.Module:
    source = os.fspath(path)
    state_dict = load_weights_file(path)
    reference = timm.create_model(model_name, pretrained=False, **kwargs)
    heads = _head_prefixes(reference)
    adapted = _input_conv_adapted(reference, state_dict)
    before = match_weights(reference.state_dict(), state_dict, heads, adapted=adapted)
    check_loaded(before, source, model_name, strict=strict)
    own = reference.state_dict()
    usable = {
        k: v
        for k, v in state_dict.items()
        if k in own and (v.shape == own[k].shape or k in adapted)
    }
    kwargs = {"num_classes": getattr(reference, "num_classes", None), **kwargs}
    keep_head = before.head_matched == before.head and before.complete
    # timm drops the file's classifier (and loads non-strictly) when the pretrained config's
    # class count differs from the model's; -1 is never a model's.
    overlay = {"state_dict": usable, "num_classes": kwargs["num_classes"] if keep_head else -1}
    # timm adapts an input conv from `input_size[0]` channels (and takes the model's `in_chans`
    # from there when not given): declare the file's, keep the model's.
    cfg_size = reference.pretrained_cfg["input_size"]
    for key in adapted:
        kwargs.setdefault("in_chans", cfg_size[0])
        chans = state_dict[key].shape[1] * kwargs["in_chans"] // own[key].shape[1]
        overlay["input_size"] = (chans, *cfg_size[1:])
    try:
        model = timm.create_model(
            model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        )
    except RuntimeError as err:
        raise ValueError(
            f"`pretrained={source!r}` does not fit `model_name={model_name!r}`: "
            f"{before.describe() or str(err).splitlines()[0]}"
        ) from err
    # The overlay (the file's tensors, the -1 sentinel) is no description of the model.
    model.pretrained_cfg = model.default_cfg = reference.pretrained_cfg
    after = match_weights(model.state_dict(), state_dict, heads, values=True, adapted=adapted)
    message = check_loaded(after, source, model_name, strict=strict)
    mine = model.state_dict()
    heads_in_file = [
        k
        for k in state_dict
        if k.startswith(heads) and k in mine and state_dict[k].shape != mine[k].shape
    ]
    if after.head_matched < after.head and heads_in_file:
        key = heads_in_file[0]
        message += (
            f"; the file's {key} is {tuple(state_dict[key].shape)}, the model's "
            f"{tuple(mine[key].shape)}"
        )
    level = (
        logging.WARNING if after.head_matched < after.head or not after.complete else logging.INFO
    )
    log.log(level, "lightning_tune: %s: %s", model_name, message)
    return model


def create_model(
    model_name: str,
    num_classes: int | None = None,
    pretrained: PretrainedArg = False,
    *,
    strict: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model, optionally with pretrained weights from the hub or a local file.

    ``pretrained`` may be ``False`` (random init), ``True`` (timm's hub weights; needs internet
    or a warm cache) or the path of a local ``.safetensors``/``.pth``/``.pt``/``.bin``/``.ckpt``
    file. A local file goes through timm's own pretrained machinery (input channel adaptation
    and classifier handling), then every tensor of the model is checked by name, shape and
    value against the file: all of the backbone (everything but the classifier) must have
    loaded, or a ``ValueError`` lists the missing, unexpected and shape-mismatched keys. A
    classifier of another shape (another number of classes) is re-initialised. The log line
    says ``loaded N/M tensors from <file> (classifier re-initialised)``. Files are read with
    ``weights_only=True`` and must use timm's parameter names (as saved by
    ``torch.save(model.state_dict())``, safetensors or a Lightning checkpoint of a module
    holding the model).

    Args:
        model_name: any name from ``timm.list_models()``.
        num_classes: classes of the new classifier (timm's default when None).
        pretrained: False, True, or a path to a weights file.
        strict: with False, a file that provides only part of the backbone loads that part
            (the rest keeps its random initialisation, and the log line lists it); at least one
            backbone tensor must match.
        **kwargs: passed to ``timm.create_model`` (``drop_rate``, ``img_size``, ...).

    Raises:
        ValueError: unknown model name (with close names), ``num_classes < 1``, a weights file
            of another architecture (with the keys that do not match), a truncated or corrupt
            file (naming its path and format), a file that pickles code (naming the global).
        WeightsFileNotFoundError: the weights file does not exist.

    Example:
        >>> model = create_model("test_resnet", num_classes=3)
        >>> model.get_classifier().out_features
        3
    """
    _check_model_name(model_name)
    check_optional(check_int, "num_classes", num_classes, minimum=1, type_error=ValueError)
    check_bool("strict", strict)
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
    return _load_local(model_name, pretrained, kwargs, strict)


def layer_groups(model: nn.Module, *, coarse: bool = False) -> list[tuple[str, list[str]]]:
    """The layer groups of a timm model, bottom (stem) to top (head), as parameter names.

    Groups come from the model's own ``group_matcher`` (timm's layer-decay grouping): the stem,
    then one group per block (``coarse=False``) or per stage (``coarse=True``), then the head.
    Each entry is ``(group_name, [parameter names])``, named after the module the group's
    parameters share (``layer1``, ``stages.2``, ``blocks.3``; ``stem`` for the first group);
    parameters that no matcher claims land in the last group, as in timm.

    Example:
        >>> groups = layer_groups(create_model("test_resnet", num_classes=2), coarse=True)
        >>> [name for name, _ in groups], groups[-1][1]
        (['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'fc'], ['fc.weight', 'fc.bias'])
    """
    from timm.models import group_parameters

    if not hasattr(model, "group_matcher"):
        raise ValueError(
            f"{type(model).__name__} has no `group_matcher`; layer groups come from timm models. "
            "Name the modules explicitly instead."
        )
    grouping = group_parameters(model, model.group_matcher(coarse=coarse), reverse=False)
    ordered = [list(names) for _, names in sorted(grouping.items(), key=lambda kv: kv[0])]
    names = [_stage_name(group, i, len(ordered), coarse) for i, group in enumerate(ordered)]
    return [
        (name if names.count(name) == 1 else f"{name}#{i}", group)
        for i, (name, group) in enumerate(zip(names, ordered))
    ]


def _stage_name(params: list[str], index: int, count: int, coarse: bool) -> str:
    """The module path a group's parameters share: ``layer1``, ``stages.2``, ``blocks.3``
    (a stage when ``coarse``); ``stem`` for the first group and ``head`` for the last when
    they share none, else the top-level modules they come from."""
    parts = [name.split(".")[:-1] for name in params]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if coarse:
        digits = [i for i, part in enumerate(common) if part.isdigit()]
        if digits:
            i = digits[0]
            common = common[:i] if i and common[i - 1][-1:].isdigit() else common[: i + 1]
    if common:
        return ".".join(common)
    if index in (0, count - 1):
        return "stem" if index == 0 else "head"
    return "+".join(dict.fromkeys(p[0] for p in parts if p)) or f"group_{index}"


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
