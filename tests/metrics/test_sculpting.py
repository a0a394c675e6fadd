"""Mass sculpting and score-mass correlations on scores with known dependence on mass."""

import numpy as np
import pytest

from jaxebm.metrics import distance_correlation, mass_sculpting, pearson_correlation


@pytest.fixture(scope="module")
def background_mass():
    return np.random.default_rng(0).gamma(4.0, 20.0, size=50_000)


def test_independent_score_does_not_sculpt(background_mass):
    score = np.random.default_rng(1).normal(size=background_mass.shape)
    result = mass_sculpting(background_mass, score)
    assert [cut.background_efficiency for cut in result.cuts] == [0.5, 0.1, 0.01]
    assert [len(cut.kept_mass) for cut in result.cuts] == [25_000, 5_000, 500]
    assert max(cut.jsd for cut in result.cuts) < 0.03
    assert abs(result.pearson) < 0.03 and result.distance_correlation < 0.1
    # An independent score's cut is a random subset: its JSD is of the size of the random-subset reference,
    # and that reference grows as the kept sample shrinks (finite-sample bias ~ bins / (8 n_kept)).
    assert all(cut.jsd < 1.5 * cut.random_jsd_q95 for cut in result.cuts)
    references = [cut.random_jsd_q95 for cut in result.cuts]
    assert references == sorted(references) and references[-1] > 5 * references[0]


def test_mass_as_score_sculpts_strongly(background_mass):
    result = mass_sculpting(background_mass, background_mass)
    jsds = [cut.jsd for cut in result.cuts]
    assert jsds == sorted(jsds) and jsds[-1] > 0.4
    assert all(cut.jsd > 10 * cut.random_jsd_q95 for cut in result.cuts[1:])
    assert result.pearson == pytest.approx(1.0)
    assert result.distance_correlation == pytest.approx(1.0)
    assert result.cuts[-1].threshold == pytest.approx(np.quantile(background_mass, 0.99), rel=0.01)


def test_correlations_on_nonlinear_dependence():
    x = np.random.default_rng(2).normal(size=3_000)
    assert pearson_correlation(x, -2 * x) == pytest.approx(-1.0)
    assert abs(pearson_correlation(x, x**2)) < 0.1
    assert distance_correlation(x, x**2) > 0.3
    assert distance_correlation(x, np.ones_like(x)) == 0.0
