"""Closed-form checks of the 1-D divergences and the Gaussian MMD."""

import numpy as np
import pytest
import scipy.stats

from jaxebm.metrics import (
    MetricInputError,
    gaussian_mmd,
    histogram_edges,
    histogram_jsd,
    jsd_from_histograms,
    normalised_histogram,
    wasserstein_1d,
)


def test_w1_of_shifted_sample_is_the_shift():
    values = np.random.default_rng(0).normal(size=500)
    assert wasserstein_1d(values, values + 0.7) == pytest.approx(0.7, abs=1e-12)


@pytest.mark.parametrize("is_weighted", [False, True])
def test_w1_matches_scipy(is_weighted):
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=300), rng.exponential(size=211)
    u_weights = rng.random(300) if is_weighted else None
    v_weights = rng.random(211) if is_weighted else None
    expected = scipy.stats.wasserstein_distance(u, v, u_weights, v_weights)
    assert wasserstein_1d(u, v, u_weights, v_weights) == pytest.approx(expected, rel=1e-12)


def test_w1_with_ties_matches_scipy():
    rng = np.random.default_rng(2)
    u, v = rng.integers(0, 5, size=100), rng.integers(0, 7, size=80)
    expected = scipy.stats.wasserstein_distance(u, v)
    assert wasserstein_1d(u, v) == pytest.approx(expected, rel=1e-12)


def test_jsd_of_identical_histograms_is_zero():
    values = np.random.default_rng(3).normal(size=1000)
    assert histogram_jsd(values, values) == 0.0


def test_jsd_of_disjoint_samples_is_log_two():
    assert histogram_jsd([0.0, 0.5, 1.0], [10.0, 11.0]) == pytest.approx(np.log(2.0))
    assert jsd_from_histograms([1, 0, 0], [0, 0, 3]) == pytest.approx(np.log(2.0))


def test_jsd_closed_form_and_empty_bins():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    m = np.array([0.25, 0.5, 0.25])
    expected = 0.5 * (0.5 * np.log(0.5 / 0.25)) * 2  # the shared bin contributes log(1) = 0
    assert jsd_from_histograms(p, q) == pytest.approx(expected)
    assert np.isfinite(jsd_from_histograms(m, p))


def test_quantile_binning_covers_both_samples():
    real = np.random.default_rng(4).normal(size=1000)
    gen = np.array([-10.0, 10.0])
    edges = histogram_edges(real, gen, num_bins=10, binning="quantile")
    assert edges[0] == -10.0 and edges[-1] == 10.0
    counts = np.histogram(real, edges)[0]
    assert counts[1:-1].min() >= 90  # ~ equal real counts per inner bin
    assert normalised_histogram(gen, edges).sum() == pytest.approx(1.0)


def test_value_range_counts_overflow_in_outer_bins():
    edges = histogram_edges([0.0], [1.0], num_bins=2, value_range=(0.0, 1.0))
    np.testing.assert_allclose(normalised_histogram([-5.0, 0.2, 0.9, 5.0], edges), [0.5, 0.5])


def test_bad_inputs_raise():
    with pytest.raises(MetricInputError):
        histogram_jsd([np.nan, 1.0], [1.0])
    with pytest.raises(MetricInputError):
        histogram_edges([1.0], [2.0], binning="log")


def test_gaussian_mmd_closed_form_for_two_points():
    # x = {0, 0}, y = {1, 1} in 1-D: unbiased MMD^2 = 1 + 1 - 2 exp(-1 / (2 s^2))
    value = gaussian_mmd(np.zeros((2, 1)), np.ones((2, 1)), bandwidth=1.0)
    assert value == pytest.approx(2.0 - 2.0 * np.exp(-0.5))


def test_gaussian_mmd_same_vs_shifted():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(400, 2)), rng.normal(size=(400, 2))
    same = gaussian_mmd(x, y, bandwidth=1.0)
    shifted = gaussian_mmd(x, y + 1.0, bandwidth=1.0)
    assert abs(same) < 0.01 < shifted
    assert gaussian_mmd(x, y, bandwidth=1.0, unbiased=False) >= 0.0
