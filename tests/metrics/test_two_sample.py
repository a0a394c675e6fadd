"""Classifier two-sample test on identical and on separated Gaussians."""

import numpy as np
import pytest

from jaxebm.metrics import classifier_two_sample_test


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    return rng.normal(size=(1_000, 4)), rng.normal(size=(1_000, 4))


def test_identical_distributions_give_auc_near_half(samples):
    real, gen = samples
    result = classifier_two_sample_test(real, gen, num_epochs=5, seed=1)
    assert abs(result.auc - 0.5) < 0.1  # null std of the AUC here is ~0.024
    assert result.gen_weights.shape == (1_000,)
    assert np.median(result.gen_weights) == pytest.approx(1.0, abs=0.3)
    assert result.settings["num_test"] == [300, 300]


def test_separated_distributions_give_auc_near_one(samples):
    real, gen = samples
    result = classifier_two_sample_test(real, (gen + 3.0).reshape(1_000, 2, 2), num_epochs=5)
    assert result.auc > 0.97
    assert set(np.unique(result.test_labels)) == {0.0, 1.0}


def test_seeded_runs_repeat(samples):
    real, gen = samples
    first = classifier_two_sample_test(real[:200], gen[:200] + 0.5, num_epochs=2, seed=3)
    second = classifier_two_sample_test(real[:200], gen[:200] + 0.5, num_epochs=2, seed=3)
    assert first.auc == second.auc
    np.testing.assert_array_equal(first.gen_weights, second.gen_weights)
