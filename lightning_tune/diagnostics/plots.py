"""Pictures of a run's diagnostics: gradient flow, update ratios with the 1e-3 band, dead units."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["plot_diagnostics"]


def _series(history: Sequence[Mapping[str, Any]], key: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for entry in history:
        for name, value in entry.get(key, {}).items():
            out.setdefault(name, []).append((int(entry["step"]), float(value)))
    return out


def _gradient_flow(history: Sequence[Mapping[str, Any]], path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    entries = [e for e in history if e.get("grad_norm")]
    layers = list(dict.fromkeys(n for e in entries for n in e["grad_norm"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(layers) + 3), 4.5))
    cmap = plt.get_cmap("viridis")
    for i, entry in enumerate(entries):
        values = [entry["grad_norm"].get(n, float("nan")) for n in layers]
        color = cmap(i / max(1, len(entries) - 1))
        ax.plot(range(len(layers)), values, marker="o", ms=3, color=color, alpha=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("gradient norm")
    ax.set_title("Gradient flow, first layer to last (colour: early -> late steps)")
    if entries:
        low, high = entries[0]["step"], entries[-1]["step"]
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(low, max(high, low + 1)))
        fig.colorbar(sm, ax=ax, label="step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _update_ratio(history: Sequence[Mapping[str, Any]], path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhspan(1e-4, 1e-2, color="tab:green", alpha=0.12, label="healthy band around 1e-3")
    ax.axhline(1e-3, color="tab:green", lw=1, ls="--")
    for name, points in _series(history, "update_ratio").items():
        steps = [s for s, v in points if v > 0]
        values = [v for _, v in points if v > 0]
        ax.plot(steps, values, marker=".", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("|dw| / |w| per step")
    ax.set_title("Update-to-weight ratio per param group")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _dead_units(history: Sequence[Mapping[str, Any]], path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    series = _series(history, "dead")
    names = list(series)
    last = [series[n][-1][1] for n in names]
    first = [series[n][0][1] for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 3), 4.5))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], first, width=0.4, label="first sampled step")
    ax.bar([i + 0.2 for i in x], last, width=0.4, label="last sampled step")
    ax.axhline(0.5, color="tab:red", lw=1, ls="--", label="warning threshold")
    ax.set_xticks(list(x), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of dead units")
    ax.set_title("Dead units per activation layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_diagnostics(source: Any, out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Write ``gradient_flow.png``, ``update_ratio.png`` and ``dead_units.png`` to ``out_dir``.

    ``source`` is a :class:`~lightning_tune.callbacks.TrainingDiagnostics` after a fit (or its
    ``history``). A plot whose measurements are missing (e.g. its check was off) is skipped.

    Example:
        >>> import tempfile
        >>> history = [{"step": 0, "grad_norm": {"a": 1.0, "b": 0.5}, "update_ratio": {"all": 1e-3},
        ...             "dead": {"act": 0.1}}, {"step": 5, "grad_norm": {"a": 0.8, "b": 0.4},
        ...             "update_ratio": {"all": 2e-3}, "dead": {"act": 0.2}}]
        >>> [p.name for p in plot_diagnostics(history, tempfile.mkdtemp())]
        ['gradient_flow.png', 'update_ratio.png', 'dead_units.png']
    """
    history = getattr(source, "history", source)
    if not isinstance(history, Sequence):
        raise TypeError(
            "`source` must be a TrainingDiagnostics or its history (a list of dicts), but got "
            f"source={source!r}"
        )
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    plots = (
        ("grad_norm", "gradient_flow.png", _gradient_flow),
        ("update_ratio", "update_ratio.png", _update_ratio),
        ("dead", "dead_units.png", _dead_units),
    )
    for key, name, draw in plots:
        if any(e.get(key) for e in history):
            written.append(draw(history, out / name))
    return written
