"""What the callback measures on a sampled step: layers, hooks and snapshots.

Everything here runs only on sampled steps; forward hooks are installed for one batch and
removed again, so unsampled steps run the model untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "SATURATING",
    "ActivationProbe",
    "grad_norms",
    "layer_map",
    "norm_buffers",
    "weight_stats",
]

#: Activation modules whose dead-unit fraction is measured.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Mish,
    nn.Hardswish,
)
#: Activation modules whose saturation is measured, with their output limits.
SATURATING: dict[type[nn.Module], tuple[float, float]] = {
    nn.Sigmoid: (0.0, 1.0),
    nn.Tanh: (-1.0, 1.0),
}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _prefix(names: Sequence[str], root: str) -> str:
    """The common module path of ``names``, or the first module + "+" when that is ``root``."""
    parts = [n.split(".")[:-1] for n in names]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    prefix = ".".join(common)
    if prefix and prefix != root:
        return prefix
    return names[0].rpartition(".")[0] + "+"


def layer_map(module: nn.Module) -> list[tuple[str, list[str]]]:
    """Layers first to last, each ``(name, [parameter names])``.

    For a timm model inside ``module`` these are timm's layer groups (``layer_groups``: stem,
    blocks, head), named by their common module path; otherwise one layer per module that owns
    parameters, in registration order.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> layer_map(net)
        [('0', ['0.weight', '0.bias']), ('2', ['2.weight', '2.bias'])]
    """
    from lightning_tune.timm_utils import find_timm_model, layer_groups

    try:
        path, model = find_timm_model(module)
        groups = layer_groups(model, coarse=False)
    except ValueError:
        groups = None
    if groups:
        dot = f"{path}." if path else ""
        named = [[dot + n for n in names] for _, names in groups if names]
        return [(_prefix(names, path), names) for names in named]
    layers: dict[str, list[str]] = {}
    for name, _ in module.named_parameters():
        layers.setdefault(name.rpartition(".")[0] or name, []).append(name)
    return list(layers.items())


def grad_norms(
    layers: Sequence[tuple[str, list[str]]], params: dict[str, nn.Parameter]
) -> list[tuple[str, float]]:
    """The gradient norm of every layer that has gradients (one device sync in all).

    Example:
        >>> net = nn.Linear(3, 1)
        >>> net(torch.ones(2, 3)).sum().backward()
        >>> [(n, round(v, 3)) for n, v in grad_norms(layer_map(net), dict(net.named_parameters()))]
        [('weight', 3.464), ('bias', 2.0)]
    """
    names: list[str] = []
    values: list[torch.Tensor] = []
    for layer, param_names in layers:
        grads = [params[n].grad for n in param_names if params[n].grad is not None]
        if grads:
            names.append(layer)
            norms = [torch.linalg.vector_norm(g.detach(), dtype=torch.float32) for g in grads]
            values.append(torch.linalg.vector_norm(torch.stack(norms)))
    if not values:
        return []
    return list(zip(names, torch.stack(values).tolist()))


def weight_stats(
    layers: Sequence[tuple[str, list[str]]],
    params: dict[str, nn.Parameter],
    *,
    max_only: bool = False,
) -> list[tuple[str, bool, bool, float]]:
    """Per layer with a weight matrix: (name, all zero, identical rows, max |w|).

    ``max_only``: measure only max |w| (the other two are reported False).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        >>> _ = nn.init.zeros_(net[0].weight)
        >>> [s[:3] for s in weight_stats(layer_map(net), dict(net.named_parameters()))]
        [('0', True, True), ('1', False, False)]
    """
    names: list[str] = []
    rows: list[torch.Tensor] = []
    for layer, param_names in layers:
        weights = [params[n].detach() for n in param_names if params[n].ndim >= 2]
        if not weights:
            continue
        max_abs = torch.stack([v.abs().max().float() for v in weights]).max()
        zero = identical = torch.zeros((), dtype=torch.bool)
        if not max_only:
            w = weights[0].flatten(1).float()
            zero = (w == 0).all()
            if w.shape[0] > 1:
                identical = (w == w[:1]).all()
        names.append(layer)
        rows.append(torch.stack([zero.float(), identical.float(), max_abs]))
    if not rows:
        return []
    table = torch.stack(rows).tolist()
    return [(n, bool(z), bool(i), float(m)) for n, (z, i, m) in zip(names, table)]


def _unit_dim(y: torch.Tensor) -> int:
    return 1 if y.ndim in (2, 4, 5) else y.ndim - 1  # (N, F), conv maps; else last dim


class ActivationProbe:
    """Forward hooks for one sampled batch: dead / saturated units and non-finite outputs.

    Install with :meth:`attach`, run the batch, read :meth:`results`, then :meth:`detach`.
    Measurements stay on the device until :meth:`results` (one sync).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> _ = nn.init.constant_(net[0].bias, -100.0)
        >>> probe = ActivationProbe(net, nonfinite=True)
        >>> probe.attach()
        >>> _ = net(torch.randn(5, 3))
        >>> probe.results()["dead"]
        {'1': 1.0}
        >>> probe.detach()
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        units: bool = True,
        nonfinite: bool = True,
        watched: list[tuple[str, nn.Module]] | None = None,
    ) -> None:
        self.module = module
        self.units = units
        self.nonfinite = nonfinite
        self._handles: list[Any] = []
        self._dead: dict[str, torch.Tensor] = {}
        self._saturated: dict[str, torch.Tensor] = {}
        self._finite: list[tuple[str, torch.Tensor]] = []
        self._watched = watched

    def watched(self) -> list[tuple[str, nn.Module]]:
        """The modules it hooks: activations (for units) and leaves (for non-finite outputs).

        Pass the list to the next probe of the same module (``watched=``) to skip the walk.

        Example:
            >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
            >>> [name for name, _ in ActivationProbe(net).watched()]
            ['0', '1']
        """
        if self._watched is None:
            self._watched = list(self._targets())
        return self._watched

    def _targets(self) -> Iterator[tuple[str, nn.Module]]:
        for name, mod in self.module.named_modules():
            if not name:
                continue
            leaf = next(mod.children(), None) is None
            if (self.units and isinstance(mod, ACTIVATIONS + tuple(SATURATING))) or (
                self.nonfinite and leaf
            ):
                yield name, mod

    def attach(self) -> None:
        """Install the hooks (one per watched module)."""
        self._dead, self._saturated, self._finite = {}, {}, []
        for name, mod in self.watched():
            self._handles.append(mod.register_forward_hook(self._hook(name, mod)))

    def _hook(self, name: str, mod: nn.Module) -> Any:
        def hook(_: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            y = output.detach()
            if self.nonfinite:
                # A sum is finite only if every element is (NaN and inf propagate): one pass,
                # no mask. Accumulated in float32 at least, so fp16 outputs do not overflow it.
                self._finite.append(
                    (name, y.sum(dtype=torch.promote_types(y.dtype, torch.float32)))
                )
            if not self.units or y.ndim < 2 or name in self._dead or name in self._saturated:
                return
            if isinstance(mod, ACTIVATIONS):
                units = y.movedim(_unit_dim(y), 0).reshape(y.shape[_unit_dim(y)], -1)
                self._dead[name] = (units <= 0).all(dim=1).float().mean()
            elif type(mod) in SATURATING:
                low, high = SATURATING[type(mod)]
                margin = 0.01 * (high - low)
                self._saturated[name] = ((y < low + margin) | (y > high - margin)).float().mean()

        return hook

    def results(self) -> dict[str, Any]:
        """``{"dead": {module: fraction}, "saturated": {...}, "first_nonfinite": name | None}``."""
        out: dict[str, Any] = {"dead": {}, "saturated": {}, "first_nonfinite": None}
        for key, values in (("dead", self._dead), ("saturated", self._saturated)):
            if values:
                out[key] = dict(zip(values, torch.stack(list(values.values())).tolist()))
        if self._finite:
            flags = torch.isfinite(torch.stack([f for _, f in self._finite])).tolist()
            bad = [name for (name, _), ok in zip(self._finite, flags) if not ok]
            out["first_nonfinite"] = bad[0] if bad else None
        return out

    def detach(self) -> None:
        """Remove every hook."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def norm_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the running statistics of BatchNorm layers whose parameters are all frozen."""
    out: dict[str, torch.Tensor] = {}
    for name, mod in module.named_modules():
        if isinstance(mod, _NORMS) and getattr(mod, "running_mean", None) is not None:
            params = list(mod.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                out[name] = torch.cat([mod.running_mean, mod.running_var]).detach().clone()
    return out
