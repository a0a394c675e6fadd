"""Energy mover's distance against closed forms and a brute-force linear program."""

import numpy as np
import pytest
from scipy.optimize import linprog

from jaxebm.metrics import (
    coverage_mmd,
    emd_sum,
    emd_sum_observables,
    energy_movers_distance,
    jetnet_jets,
    pairwise_emd,
)


def random_jet(rng, num=6, total=1.0):
    pt = rng.dirichlet(np.ones(num)) * total
    return pt, rng.normal(0, 0.3, num), rng.normal(0, 0.3, num)


def brute_force_emd(pt_a, eta_a, phi_a, pt_b, eta_b, phi_b):
    """The energy mover's distance as its defining linear program (R = 1)."""
    theta = np.hypot(eta_a[:, None] - eta_b[None, :], phi_a[:, None] - phi_b[None, :])
    n_a, n_b = theta.shape
    rows = np.kron(np.eye(n_a), np.ones(n_b))  # sum_j f_ij <= pt_a_i
    cols = np.kron(np.ones(n_a), np.eye(n_b))  # sum_i f_ij <= pt_b_j
    result = linprog(
        theta.ravel(),
        A_ub=np.vstack([rows, cols]),
        b_ub=np.r_[pt_a, pt_b],
        A_eq=np.ones((1, n_a * n_b)),
        b_eq=[min(pt_a.sum(), pt_b.sum())],
        bounds=(0, None),
    )
    return result.fun + abs(pt_a.sum() - pt_b.sum())


def test_emd_of_identical_jets_is_zero():
    jet = random_jet(np.random.default_rng(0))
    assert energy_movers_distance(*jet, *jet) == pytest.approx(0.0, abs=1e-12)


def test_emd_of_shifted_copy_is_the_shift():
    pt, eta, phi = random_jet(np.random.default_rng(1))
    shifted = energy_movers_distance(pt, eta, phi, pt, eta + 0.3, phi - 0.4)
    assert shifted == pytest.approx(0.5)
    assert energy_movers_distance(pt, eta, phi, pt, eta + 0.3, phi, radius=0.5) == pytest.approx(
        0.6
    )


@pytest.mark.parametrize("totals", [(1.0, 1.0), (1.0, 1.7), (2.5, 0.4)])
def test_emd_matches_linear_program(totals):
    rng = np.random.default_rng(2)
    jet_a = random_jet(rng, num=5, total=totals[0])
    jet_b = random_jet(rng, num=7, total=totals[1])
    expected = brute_force_emd(*jet_a, *jet_b)
    assert energy_movers_distance(*jet_a, *jet_b) == pytest.approx(expected, rel=1e-7)


def test_pairwise_emd_ignores_padding():
    rng = np.random.default_rng(3)
    jets = [random_jet(rng, num=4) for _ in range(3)]
    particles = np.zeros((3, 6, 3))
    for i, (pt, eta, phi) in enumerate(jets):
        particles[i, :4] = np.stack([eta, phi, pt], axis=1)
    particles[:, 4:] = 7.0
    mask = np.arange(6)[None, :] < 4
    mask = np.repeat(mask, 3, axis=0)
    distances = pairwise_emd(particles, mask, particles[:2], mask[:2])
    assert distances.shape == (3, 2)
    assert distances[1, 0] == pytest.approx(energy_movers_distance(*jets[1], *jets[0]))
    np.testing.assert_allclose(np.diag(distances[:2]), 0.0, atol=1e-12)


def make_jets(rng, num_jets, eta_shift=0.0):
    particles = np.stack(
        [
            rng.normal(eta_shift, 0.2, (num_jets, 8)),
            rng.normal(0, 0.2, (num_jets, 8)),
            rng.dirichlet(np.ones(8), num_jets),
        ],
        axis=-1,
    )
    return jetnet_jets(particles, np.ones((num_jets, 8), bool))


def test_coverage_and_mmd_sanity():
    rng = np.random.default_rng(4)
    real, gen = make_jets(rng, 60), make_jets(rng, 60)
    result = coverage_mmd(real, gen, num_batches=2, batch_size=20)
    assert 0.0 < result.coverage.value <= 1.0
    assert 0.0 < result.minimum_matching_distance.value < 1.0
    far = coverage_mmd(real, make_jets(rng, 60, eta_shift=5.0), num_batches=2, batch_size=20)
    assert far.minimum_matching_distance.value > 4.0
    one_jet = jetnet_jets(np.repeat(gen.particles[:1], 30, 0), np.repeat(gen.mask[:1], 30, 0))
    collapsed = coverage_mmd(real, one_jet, num_batches=2, batch_size=20)
    assert collapsed.coverage.value == pytest.approx(1 / 20)
    assert collapsed.coverage.settings["batch_size"] == 20


def test_emd_sum_of_shifted_observables():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(500, 5))
    result = emd_sum(real, real + np.array([1.0, 0.0, 0.5, 0.0, 0.0]))
    assert result.value == pytest.approx(1.5)
    assert result.components["mass"][0] == pytest.approx(1.0)


def test_emd_sum_observables_of_a_two_particle_jet():
    constituents = np.array(
        [[[10.0, 10.0, 0.0, 0.0], [10.0, -10.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]]
    )
    mask = np.array([[True, True, False]])
    mass, energy, pt, eta, _ = emd_sum_observables(constituents, mask)[0]
    assert (mass, energy, pt, eta) == pytest.approx((20.0, 20.0, 0.0, 0.0))
