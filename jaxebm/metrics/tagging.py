"""Tagging metrics: ROC, AUC, background rejection, significance improvement, seed averages.

Conventions: ``labels`` are 1 (True) for signal and 0 for background; a *higher* score is more
signal-like (an anomaly score for anomaly detection). A cut ``score >= t`` keeps the fraction
``eps_S(t)`` of signal and ``eps_B(t)`` of background.

- ROC: the points ``(eps_S(t), eps_B(t))`` at every distinct score t (tied scores move both
  efficiencies in one step), starting at (0, 0).
- AUC = P(score_s > score_b) + 1/2 P(score_s = score_b), from average ranks (Mann-Whitney U);
  equal to the brute-force count over all signal-background pairs with ties counted 1/2.
- Background rejection ``1/eps_B`` at a signal efficiency: ``eps_B`` linearly interpolated on
  the ROC polygon; where several points share that ``eps_S`` the smallest ``eps_B`` is used;
  ``eps_B = 0`` gives ``inf``.
- Significance improvement ``eps_S / sqrt(eps_B)`` (``inf`` where ``eps_B = 0 < eps_S``, 0 at
  the origin).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

from jaxebm.metrics.result import MetricInputError, MetricResult, mean_and_std

__all__ = [
    "RocCurve",
    "auc",
    "background_rejection",
    "roc_curve",
    "significance_improvement",
    "summarise_over_seeds",
    "tagging_metrics",
]


class RocCurve(NamedTuple):
    """ROC points ordered by decreasing threshold, all ``(num_points,)`` float64.

    ``thresholds[0] = inf`` (nothing kept); eps_S and eps_B are non-decreasing.
    """

    signal_efficiency: np.ndarray
    background_efficiency: np.ndarray
    thresholds: np.ndarray


def _check_labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise MetricInputError(
            f"labels and scores must be 1-D of equal length: {labels.shape}, {scores.shape}"
        )
    if labels.all() or not labels.any():
        raise MetricInputError("labels must contain both signal (1) and background (0)")
    if not np.all(np.isfinite(scores)):
        raise MetricInputError("scores contain non-finite values")
    return labels, scores


def roc_curve(labels, scores) -> RocCurve:
    """Signal and background efficiencies of the cuts ``score >= t`` at every distinct t."""
    labels, scores = _check_labels_scores(labels, scores)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_tie = np.r_[np.diff(sorted_scores) != 0, True]
    signal_kept = np.cumsum(sorted_labels)[last_of_tie]
    background_kept = np.cumsum(~sorted_labels)[last_of_tie]
    return RocCurve(
        np.r_[0.0, signal_kept / labels.sum()],
        np.r_[0.0, background_kept / (~labels).sum()],
        np.r_[np.inf, sorted_scores[last_of_tie]],
    )


def auc(labels, scores) -> float:
    """Area under the ROC curve with ties counted 1/2 (rank-based Mann-Whitney statistic)."""
    labels, scores = _check_labels_scores(labels, scores)
    num_signal, num_background = labels.sum(), (~labels).sum()
    signal_rank_sum = rankdata(scores)[labels].sum()
    u_statistic = signal_rank_sum - num_signal * (num_signal + 1) / 2.0
    return float(u_statistic / (num_signal * num_background))


def _background_efficiency_at(curve: RocCurve, signal_efficiency: float) -> float:
    eps_s, eps_b = curve.signal_efficiency, curve.background_efficiency
    if not 0.0 <= signal_efficiency <= 1.0:
        raise MetricInputError(f"signal efficiency must be in [0, 1], got {signal_efficiency}")
    j = int(np.searchsorted(eps_s, signal_efficiency, side="left"))
    if eps_s[j] == signal_efficiency:
        return float(eps_b[j])
    fraction = (signal_efficiency - eps_s[j - 1]) / (eps_s[j] - eps_s[j - 1])
    return float(eps_b[j - 1] + fraction * (eps_b[j] - eps_b[j - 1]))


def background_rejection(labels, scores, signal_efficiency: float) -> float:
    """``1 / eps_B`` at the given ``eps_S`` (interpolated on the ROC; ``inf`` if eps_B = 0)."""
    eps_b = _background_efficiency_at(roc_curve(labels, scores), signal_efficiency)
    return float("inf") if eps_b == 0.0 else 1.0 / eps_b


def significance_improvement(signal_efficiency, background_efficiency) -> np.ndarray:
    """``eps_S / sqrt(eps_B)`` elementwise; ``inf`` where eps_B = 0 < eps_S, 0 where both are 0."""
    eps_s = np.asarray(signal_efficiency, dtype=np.float64)
    eps_b = np.asarray(background_efficiency, dtype=np.float64)
    root = np.sqrt(eps_b)
    improvement = np.divide(
        eps_s, root, out=np.zeros(np.broadcast(eps_s, root).shape), where=root > 0
    )
    return np.where((root == 0) & (eps_s > 0), np.inf, improvement)


def tagging_metrics(
    labels, scores, *, signal_efficiencies: Sequence[float] = (0.2, 0.3, 0.5)
) -> dict[str, float]:
    """``{"auc": ..., "rejection_at_0.2": 1/eps_B(eps_S = 0.2), ...}`` for one classifier."""
    curve = roc_curve(labels, scores)
    metrics = {"auc": auc(labels, scores)}
    for target in signal_efficiencies:
        eps_b = _background_efficiency_at(curve, target)
        metrics[f"rejection_at_{target:g}"] = float("inf") if eps_b == 0.0 else 1.0 / eps_b
    return metrics


def summarise_over_seeds(
    per_seed: Sequence[Mapping[str, float]], *, ddof: int = 1
) -> dict[str, MetricResult]:
    """Mean +- std (sample std, ``ddof = 1`` by default) of each metric over seeds.

    Args:
        per_seed: one mapping per seed (e.g. ``tagging_metrics`` results), same keys.

    Returns:
        ``{key: MetricResult(mean, std, {"num_seeds": n, "ddof": ddof})}``; a key with a
        non-finite value (an infinite rejection) gets ``error = nan``.
    """
    if not per_seed:
        raise MetricInputError("summarise_over_seeds needs at least one result")
    keys = list(per_seed[0])
    if any(set(row) != set(keys) for row in per_seed):
        raise MetricInputError("every per-seed result must have the same keys")
    summary = {}
    settings = {"num_seeds": len(per_seed), "ddof": ddof}
    for key in keys:
        values = np.array([row[key] for row in per_seed], dtype=np.float64)
        if np.all(np.isfinite(values)):
            summary[key] = MetricResult(*mean_and_std(values, ddof=ddof), settings)
        else:
            summary[key] = MetricResult(float(np.mean(values)), float("nan"), settings)
    return summary
