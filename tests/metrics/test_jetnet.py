"""JetNet metrics on constructed jets and on Gaussian feature sets with known distances."""

import numpy as np
import pytest
import scipy.linalg

from jaxebm.data.observables import efps_w1
from jaxebm.metrics import (
    fpd,
    frechet_distance,
    jetnet_features,
    jetnet_jets,
    kpd,
    unbiased_polynomial_mmd,
    w1efp,
    w1m,
    w1p,
)


def massless_four_vectors(pt, eta, phi):
    """(E, px, py, pz) of massless particles, stacked on the last axis."""
    return np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], -1)


def random_jets(rng, num_jets=200, num_max=20):
    """JetNet-format jets with a random number of real particles and garbage in padded slots."""
    mask = np.arange(num_max)[None, :] < rng.integers(3, num_max, size=num_jets)[:, None]
    particles = np.stack(
        [
            rng.normal(0, 0.2, (num_jets, num_max)),
            rng.normal(0, 0.2, (num_jets, num_max)),
            rng.dirichlet(np.ones(num_max), num_jets),
        ],
        axis=-1,
    )
    particles[~mask] = 99.0
    return particles, mask


def test_jetnet_features_recover_relative_coordinates():
    rng = np.random.default_rng(0)
    pt = np.array([[300.0, 200.0, 100.0, 0.0]])
    eta = 0.8 + np.array([[0.1, -0.05, 0.2, 0.0]])
    phi = 3.1 + np.array([[0.05, -0.1, 0.1, 0.0]])  # crosses +-pi
    mask = np.array([[True, True, True, False]])
    constituents = massless_four_vectors(pt, eta, phi)
    constituents[~mask] = rng.normal(size=(1, 4))  # padded slots are ignored
    jets = jetnet_features(constituents, mask)
    jet = constituents[0, :3].sum(0)
    jet_pt = np.hypot(jet[1], jet[2])
    jet_mass = np.sqrt(jet[0] ** 2 - jet[1] ** 2 - jet[2] ** 2 - jet[3] ** 2)
    np.testing.assert_allclose(jets.particles[0, :3, 2], pt[0, :3] / jet_pt)
    np.testing.assert_allclose(jets.particles[0, :3, 0], eta[0, :3] - np.arcsinh(jet[3] / jet_pt))
    assert np.all(np.abs(jets.particles[0, :3, 1]) < 0.3)
    assert jets.mass[0] == pytest.approx(jet_mass / jet_pt, rel=1e-9)
    np.testing.assert_array_equal(jets.particles[0, 3], 0.0)


def test_w1p_of_shifted_identical_jets_is_exact():
    rng = np.random.default_rng(1)
    particles, mask = random_jets(rng, num_jets=1)
    real = jetnet_jets(np.repeat(particles, 50, 0), np.repeat(mask, 50, 0))
    shifted = particles.copy()
    shifted[..., 0] += 0.1
    gen = jetnet_jets(np.repeat(shifted, 50, 0), np.repeat(mask, 50, 0))
    result = w1p(real, gen, num_batches=3, batch_size=20)
    assert result.components["eta_rel"][0] == pytest.approx(0.1)
    assert result.components["phi_rel"] == (0.0, 0.0)
    assert result.value == pytest.approx(0.1 / 3)
    assert result.error == pytest.approx(0.0, abs=1e-12)


def test_w1_metrics_are_seeded_and_scale_down():
    rng = np.random.default_rng(2)
    real = jetnet_jets(*random_jets(rng))
    gen = jetnet_jets(*random_jets(rng))
    first, second = w1m(real, gen, seed=3), w1m(real, gen, seed=3)
    assert first == second
    assert first.settings["batch_size"] == 200 and first.settings["is_scaled_down"]
    assert first.value > 0 and first.error >= 0
    assert w1p(real, gen, seed=3).settings["num_batches"] == 5


def test_w1efp_uses_unnormalised_pt_rel_like_jetnet():
    """n = 4, d = 4 EFPs are degree-4 in the energies: doubling pT_rel scales each by 16."""
    rng = np.random.default_rng(4)
    particles, mask = random_jets(rng, num_jets=1)
    real = jetnet_jets(np.repeat(particles, 10, 0), np.repeat(mask, 10, 0))
    doubled = particles.copy()
    doubled[..., 2] *= 2.0
    gen = jetnet_jets(np.repeat(doubled, 10, 0), np.repeat(mask, 10, 0))
    result = w1efp(real, gen, num_batches=2, batch_size=5)
    eta, phi, pt = np.moveaxis(particles, -1, 0)
    real_efps = efps_w1(pt, eta, phi, mask, normed=False)[0]
    for k in range(5):
        assert result.components[f"efp_{k}"][0] == pytest.approx(15 * real_efps[k], rel=1e-6)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cov1, cov2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mean1, mean2 = rng.normal(size=4), rng.normal(size=4)
    expected = np.sum((mean1 - mean2) ** 2) + np.trace(
        cov1 + cov2 - 2 * scipy.linalg.sqrtm(cov1 @ cov2).real
    )
    assert frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(expected, rel=1e-9)


def test_fpd_same_gaussian_tends_to_zero():
    rng = np.random.default_rng(6)
    real, gen = rng.normal(size=(40_000, 3)), rng.normal(size=(40_000, 3))
    result = fpd(real, gen, min_samples=5_000, max_samples=20_000, num_batches=5)
    assert 0.0 <= result.value < 5e-5
    assert not result.settings["is_scaled_down"]
    assert len(result.settings["batch_sizes"]) == 10


def test_fpd_shifted_gaussians_match_analytic_distance():
    rng = np.random.default_rng(7)
    cov = np.array([[1.0, 0.5], [0.5, 2.0]])
    real = rng.multivariate_normal([0.0, 0.0], cov, size=40_000)
    gen = rng.multivariate_normal([1.0, -0.5], 0.5 * cov, size=40_000)
    scale = np.abs(real).max(0)  # FPD divides by the real sample's max |value|
    mean_gen = np.array([1.0, -0.5]) / scale
    cov_real, cov_gen = cov / np.outer(scale, scale), 0.5 * cov / np.outer(scale, scale)
    expected = frechet_distance(np.zeros(2), cov_real, mean_gen, cov_gen)
    result = fpd(real, gen, min_samples=5_000, max_samples=20_000, num_batches=5)
    assert result.value == pytest.approx(expected, rel=0.03)
    assert result.error < 0.03 * expected


def test_fpd_scales_down_for_small_samples():
    rng = np.random.default_rng(8)
    result = fpd(rng.normal(size=(3_000, 2)), rng.normal(size=(5_000, 2)), num_batches=2)
    assert result.settings["is_scaled_down"]
    assert max(result.settings["batch_sizes"]) <= 3_000


def test_unbiased_polynomial_mmd_has_zero_mean_under_the_null():
    rng = np.random.default_rng(9)
    same = [
        unbiased_polynomial_mmd(rng.normal(size=(50, 2)), rng.normal(size=(50, 2)))
        for _ in range(400)
    ]
    standard_error = np.std(same) / np.sqrt(len(same))
    assert abs(np.mean(same)) < 4 * standard_error
    assert min(same) < 0.0  # an unbiased estimator must go negative sometimes


def test_kpd_same_vs_shifted():
    rng = np.random.default_rng(10)
    real, gen = rng.normal(size=(4_000, 3)), rng.normal(size=(4_000, 3))
    same = kpd(real, gen, batch_size=1_000)
    shifted = kpd(real, gen + 0.5, batch_size=1_000)
    assert abs(same.value) < 3 * same.error + 1e-4
    assert shifted.value > 10 * shifted.error > 0
    assert same.settings["batch_size"] == 1_000 and not same.settings["is_scaled_down"]
