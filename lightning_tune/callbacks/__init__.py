"""Lightning callbacks: schedules, early stopping, clipping, label smoothing, freezing."""

from __future__ import annotations

__all__: list[str] = []
