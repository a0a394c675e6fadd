"""Tagging metrics against brute-force counts and hand-constructed score sets."""

import numpy as np
import pytest

from jaxebm.metrics import (
    auc,
    background_rejection,
    roc_curve,
    significance_improvement,
    summarise_over_seeds,
    tagging_metrics,
)


def brute_force_auc(labels, scores):
    signal, background = scores[labels == 1], scores[labels == 0]
    wins = (signal[:, None] > background[None, :]).sum()
    ties = (signal[:, None] == background[None, :]).sum()
    return (wins + 0.5 * ties) / (len(signal) * len(background))


def test_auc_equals_pair_count_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=400)
    scores = rng.integers(0, 6, size=400) + labels  # many ties
    assert auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores), rel=1e-12)


def test_auc_extremes():
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc(labels, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auc(labels, [1.0, 1.0, 1.0, 1.0]) == 0.5


def constructed_scores():
    """4 signal at 0.95, 0.85, 0.75, 0.65; 100 background at 0.005, 0.015, ..., 0.995."""
    signal = np.array([0.95, 0.85, 0.75, 0.65])
    background = (np.arange(100) + 0.5) / 100
    labels = np.r_[np.ones(4), np.zeros(100)]
    return labels, np.r_[signal, background]


def test_roc_curve_points():
    labels, scores = constructed_scores()
    curve = roc_curve(labels, scores)
    assert curve.signal_efficiency[0] == 0.0 and curve.background_efficiency[0] == 0.0
    assert curve.signal_efficiency[-1] == 1.0 and curve.background_efficiency[-1] == 1.0
    assert np.all(np.diff(curve.signal_efficiency) >= 0)
    assert np.all(np.diff(curve.background_efficiency) >= 0)


def test_background_rejection_at_working_points():
    labels, scores = constructed_scores()
    # score >= 0.85 keeps 2/4 signal and the 15 background at 0.855 ... 0.995
    assert background_rejection(labels, scores, 0.5) == pytest.approx(100 / 15)
    # between the ROC corners (0.25, 0.15) and (0.5, 0.15) eps_B is flat
    assert background_rejection(labels, scores, 0.375) == pytest.approx(100 / 15)
    # at eps_S = 0.25 the best point of the vertical segment 0.05 ... 0.15 is used
    assert background_rejection(labels, scores, 0.25) == pytest.approx(20.0)
    assert background_rejection(labels, scores, 1.0) == pytest.approx(100 / 35)  # 0.655 ... 0.995


def test_background_rejection_interpolates_across_a_tie():
    # ROC: (0, 0) -> (0.5, 0) -> (1, 0.5) (signal and background tied at 0.5) -> (1, 1)
    labels, scores = np.array([1, 0, 1, 0]), np.array([1.0, 0.5, 0.5, 0.0])
    assert background_rejection(labels, scores, 0.75) == pytest.approx(4.0)


def test_background_rejection_is_inf_without_background():
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.2])
    assert background_rejection(labels, scores, 0.5) == np.inf
    assert tagging_metrics(labels, scores)["rejection_at_0.2"] == np.inf


def test_significance_improvement():
    improvement = significance_improvement([0.5, 0.2, 0.0, 0.3], [0.25, 0.0, 0.0, 0.09])
    np.testing.assert_allclose(improvement, [1.0, np.inf, 0.0, 1.0])


def test_summarise_over_seeds():
    rows = [{"auc": 0.7, "r": 10.0}, {"auc": 0.8, "r": np.inf}, {"auc": 0.9, "r": 12.0}]
    summary = summarise_over_seeds(rows)
    assert summary["auc"].value == pytest.approx(0.8)
    assert summary["auc"].error == pytest.approx(0.1)
    assert summary["r"].value == np.inf and np.isnan(summary["r"].error)
    assert summary["auc"].settings == {"num_seeds": 3, "ddof": 1}
