"""ActivationProbe's non-finite check: exact for half precision, the first module named."""

from __future__ import annotations

import torch
from torch import nn

from lightning_tune.diagnostics.probes import ActivationProbe


class _Constant(nn.Module):
    def __init__(self, value: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.value, self.dtype = value, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((64, 512), 1.0, dtype=self.dtype)
        out[3, 7] = self.value
        return out * 60000.0 if self.value == 1.0 else out


def _first_nonfinite(net: nn.Module) -> str | None:
    probe = ActivationProbe(net, units=False, nonfinite=True)
    probe.attach()
    net(torch.zeros(2, 3))
    result = probe.results()["first_nonfinite"]
    probe.detach()
    return result


def test_a_large_finite_half_precision_output_is_not_called_non_finite() -> None:
    # 64 * 512 values of 60000 in float16: each is finite, their float16 sum is not.
    assert torch.full((64, 512), 60000.0, dtype=torch.float16).sum().isinf()
    net = nn.Sequential(_Constant(1.0, torch.float16), nn.Identity())
    assert _first_nonfinite(net) is None


def test_the_first_module_with_an_inf_or_nan_output_is_named() -> None:
    for bad in (float("inf"), float("-inf"), float("nan")):
        net = nn.Sequential(nn.Linear(3, 3), _Constant(bad, torch.float32), nn.Identity())
        assert _first_nonfinite(net) == "1", bad


def test_the_watched_modules_are_walked_once_and_reused() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    first = ActivationProbe(net, units=True, nonfinite=True)
    watched = first.watched()
    assert [name for name, _ in watched] == ["0", "1"]
    second = ActivationProbe(net, units=True, nonfinite=True, watched=watched)
    assert second.watched() is watched
    second.attach()
    net(torch.ones(4, 3))
    assert set(second.results()["dead"]) == {"1"}
    second.detach()
