"""Metrics log (``metrics.jsonl``) and the health check that decides when a run must roll back.

`MetricsLogger` appends one JSON object per line and flushes it, so a crash loses at most the line
being written and readers can follow the file while the run goes. Non-finite numbers are written as
``NaN`` / ``Infinity`` (Python's `json` reads them back).

`HealthMonitor.diagnose(metrics)` returns why a step looks diverged (non-finite loss or gradient,
an energy beyond ``max_abs_energy``, an energy gap beyond ``max_abs_gap``) or None. The driver
(`jaxebm.train.loop.train_loop`) then restores the last good checkpoint with a new key and the
learning rate times ``lr_factor``, at most ``max_rollbacks`` times per run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxebm.jsonable import to_jsonable

__all__ = ["HealthConfig", "HealthMonitor", "MetricsLogger", "read_metrics"]


class MetricsLogger:
    """Append-only JSON-lines log at ``path`` (parent directories created)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def log(self, row: dict[str, Any]) -> None:
        """Append ``row`` (arrays and numpy scalars converted to lists and numbers) as one line."""
        line = json.dumps(to_jsonable(row)) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a ``metrics.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass(frozen=True)
class HealthConfig:
    """Divergence thresholds and the rollback policy.

    max_abs_energy: largest acceptable |mean E(x+)| or |mean E(x-)|. With the squared-energy
      regulariser (alpha = 0.1) healthy energies stay within a few units.
    max_abs_gap: largest acceptable |E(x-) - E(x+)|.
    max_rollbacks: rollbacks allowed per run before the driver gives up.
    lr_factor: learning-rate multiplier applied at each rollback.
    """

    max_abs_energy: float = 1e3
    max_abs_gap: float = 1e2
    max_rollbacks: int = 3
    lr_factor: float = 0.5


class HealthMonitor:
    """Divergence detection plus the count of rollbacks spent (``num_rollbacks``)."""

    def __init__(self, config: HealthConfig = HealthConfig(), num_rollbacks: int = 0):
        self.config = config
        self.num_rollbacks = num_rollbacks

    def diagnose(self, metrics: dict[str, Any]) -> str | None:
        """Why the step(s) behind ``metrics`` (host values of a step; scalars or stacked) look
        diverged, or None when healthy. Reads ``is_finite``, and ``e_pos``, ``e_neg`` and ``gap`` when the
        step reports energies (a step without them, e.g. a flow's, is checked for finiteness only)."""
        if not np.all(metrics["is_finite"]):
            return "non-finite loss or parameter gradient"
        if "e_pos" not in metrics:
            return None
        energy = np.max(np.abs([metrics["e_pos"], metrics["e_neg"]]))
        if not energy <= self.config.max_abs_energy:
            return f"|energy| {energy:.3g} above {self.config.max_abs_energy:g}"
        gap = np.max(np.abs(metrics["gap"]))
        if not gap <= self.config.max_abs_gap:
            return f"|energy gap| {gap:.3g} above {self.config.max_abs_gap:g}"
        return None

    def may_roll_back(self) -> bool:
        """Spend one rollback if any is left; False when the budget is used up."""
        if self.num_rollbacks >= self.config.max_rollbacks:
            return False
        self.num_rollbacks += 1
        return True
