"""Jet kinematics, N-subjettiness and energy-flow polynomials on synthetic jets."""

import itertools

import fastjet
import numpy as np
import pytest

from jaxebm.data import observables
from jaxebm.data.io import massless_four_vectors
from jaxebm.data.observables import efps_d4, efps_w1, jet_kinematics, nsubjettiness, tau_ratios

# energyflow 1.4.0: EFPSet('d<=4', measure='hadr', beta=1, normed=True).graphs(), in its order.
ENERGYFLOW_D4_GRAPHS = [
    [], [(0, 1)], [(0, 1)] * 2, [(0, 1)] * 3, [(0, 1)] * 4,
    [(0, 1), (0, 2)], [(0, 1), (0, 2), (0, 2)], [(0, 1), (0, 2), (0, 2), (0, 2)], [(0, 1), (0, 1), (0, 2), (0, 2)],
    [(0, 1), (0, 2), (1, 2)], [(0, 1), (0, 2), (0, 2), (1, 2)],
    [(0, 1), (0, 2), (0, 3)], [(0, 1), (0, 2), (0, 2), (0, 3)],
    [(0, 1), (0, 2), (1, 3)], [(0, 1), (0, 2), (0, 2), (1, 3)], [(0, 1), (0, 1), (0, 2), (1, 3)],
    [(0, 1), (0, 2), (1, 2), (0, 3)], [(0, 1), (0, 2), (1, 3), (2, 3)],
    [(0, 1), (0, 2), (0, 3), (0, 4)], [(0, 1), (0, 2), (0, 3), (1, 4)], [(0, 1), (0, 2), (1, 3), (2, 4)],
    [(0, 1), (2, 3)], [(0, 1), (2, 3), (2, 3)], [(0, 1), (2, 3), (2, 3), (2, 3)], [(0, 1), (0, 1), (2, 3), (2, 3)],
    [(0, 1), (2, 3), (2, 4)], [(0, 1), (0, 1), (2, 3), (2, 4)], [(0, 1), (2, 3), (2, 4), (2, 4)],
    [(0, 1), (2, 3), (2, 4), (3, 4)], [(0, 1), (2, 3), (4, 5)], [(0, 1), (2, 3), (2, 4), (2, 5)],
    [(0, 1), (2, 3), (2, 4), (3, 5)], [(0, 1), (0, 2), (3, 4), (3, 5)], [(0, 1), (2, 3), (4, 5), (4, 5)],
    [(0, 1), (2, 3), (4, 5), (4, 6)], [(0, 1), (2, 3), (4, 5), (6, 7)],
]  # fmt: skip
W1_GRAPHS = [12, 14, 15, 16, 17]  # energyflow EFPSet(('n==', 4), ('d==', 4), ('p==', 1))


def random_jets(seed, num_jets=40, num_slots=25, min_constituents=1):
    """Random (pt, eta, phi, mask) around random axes, with NaN garbage in the padded slots."""
    rng = np.random.default_rng(seed)
    pt = rng.exponential(10.0, (num_jets, num_slots)) + 0.1
    eta = rng.uniform(-2, 2, (num_jets, 1)) + rng.normal(0, 0.3, (num_jets, num_slots))
    phi = rng.uniform(-np.pi, np.pi, (num_jets, 1)) + rng.normal(0, 0.3, (num_jets, num_slots))
    phi = np.pi - (np.pi - phi) % (2 * np.pi)
    mask = np.arange(num_slots) < rng.integers(min_constituents, num_slots + 1, (num_jets, 1))
    return (*[np.where(mask, x, np.nan) for x in (pt, eta, phi)], mask)


def brute_force_efp(edges, z, theta):
    """sum over all vertex -> particle assignments of prod z * prod theta (the EFP definition)."""
    num_vertices = max((max(edge) for edge in edges), default=0) + 1
    total = 0.0
    for assignment in itertools.product(range(len(z)), repeat=num_vertices):
        term = np.prod([z[i] for i in assignment])
        for a, b in edges:
            term *= theta[assignment[a], assignment[b]]
        total += term
    return total


def test_jet_kinematics_match_fastjet():
    pt, eta, phi, mask = random_jets(0)
    constituents = np.where(mask[..., None], massless_four_vectors(pt, eta, phi), np.nan)
    kinematics = jet_kinematics(constituents, mask)
    for jet in range(len(mask)):
        total = fastjet.PseudoJet(0.0, 0.0, 0.0, 0.0)
        for e, px, py, pz in constituents[jet, mask[jet]]:
            total = total + fastjet.PseudoJet(px, py, pz, e)
        assert kinematics["pt"][jet] == pytest.approx(total.pt(), rel=1e-12)
        mass = max(total.m(), 0.0)  # fastjet returns -sqrt(-m^2) for rounding noise below zero
        assert kinematics["mass"][jet] == pytest.approx(mass, rel=1e-9, abs=1e-6)
        assert kinematics["eta"][jet] == pytest.approx(total.eta(), rel=1e-10, abs=1e-12)
        assert kinematics["phi"][jet] == pytest.approx(total.phi_std(), rel=1e-12, abs=1e-12)
        assert kinematics["m_over_pt"][jet] == pytest.approx(mass / total.pt(), rel=1e-9, abs=1e-8)
    np.testing.assert_array_equal(kinematics["multiplicity"], mask.sum(1))


def test_jet_mass_of_two_massless_particles():
    pt, eta, phi = np.array([[100.0, 50.0]]), np.array([[0.3, -0.2]]), np.array([[0.1, 0.5]])
    kinematics = jet_kinematics(massless_four_vectors(pt, eta, phi), np.ones((1, 2), bool))
    expected = np.sqrt(2 * 100 * 50 * (np.cosh(0.5) - np.cos(0.4)))
    assert kinematics["mass"][0] == pytest.approx(expected, rel=1e-12)
    single = jet_kinematics(massless_four_vectors(pt[:, :1], eta[:, :1], phi[:, :1]), np.ones((1, 1), bool))
    assert single["mass"][0] == pytest.approx(0.0, abs=1e-5)  # sqrt(max(m^2, 0)) of rounding noise


@pytest.mark.parametrize("num_prongs", [1, 2, 3])
def test_nsubjettiness_of_pencil_prongs(num_prongs):
    rng = np.random.default_rng(num_prongs)
    centres = np.array([[0.0, 0.0], [0.4, 0.1], [-0.1, -0.45]])[:num_prongs]
    prong = np.repeat(np.arange(num_prongs), 6)[None].repeat(20, axis=0)
    pt = rng.uniform(1, 50, prong.shape)
    eta = centres[prong, 0] + rng.normal(0, 1e-7, prong.shape)
    phi = centres[prong, 1] + rng.normal(0, 1e-7, prong.shape)
    taus = nsubjettiness(pt, eta, phi, np.ones(prong.shape, bool), R=0.8)
    assert taus.shape == (20, 3)
    assert np.all(taus[:, num_prongs - 1] < 1e-6)
    if num_prongs > 1:
        assert np.all(taus[:, num_prongs - 2] > 0.05)


def test_nsubjettiness_ratios_for_random_jets():
    pt, eta, phi, mask = random_jets(1, num_jets=200)
    taus = nsubjettiness(pt, eta, phi, mask, R=1.0)
    assert np.all(taus >= 0) and np.all(np.isfinite(taus))
    assert np.all(taus[mask.sum(1) <= 1] == 0)
    tau21, tau32 = tau_ratios(taus)
    for ratio in (tau21, tau32):
        assert np.all((ratio >= 0) & (ratio <= 1))
    np.testing.assert_array_equal(tau_ratios(np.zeros((2, 3))), np.zeros((2, 2)))


def test_nsubjettiness_ignores_padding_and_the_phi_boundary():
    pt, eta, phi, mask = random_jets(2)
    taus = nsubjettiness(pt, eta, phi, mask)
    zeros = [np.where(mask, x, 0.0) for x in (pt, eta, phi)]
    np.testing.assert_array_equal(nsubjettiness(*zeros, mask), taus)
    shifted = np.pi - (np.pi - (zeros[2] + np.pi)) % (2 * np.pi)
    np.testing.assert_allclose(nsubjettiness(zeros[0], zeros[1], shifted, mask), taus, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("num_particles", [2, 3])
def test_efps_match_the_definition_on_small_jets(num_particles):
    rng = np.random.default_rng(num_particles)
    pt, eta = rng.uniform(1, 10, (1, num_particles)), rng.normal(0, 0.4, (1, num_particles))
    phi = np.pi - rng.uniform(0, 0.5, (1, num_particles))  # near the boundary
    phi[0, 0] = -np.pi + 0.1
    z = pt[0] / pt[0].sum()
    theta = np.zeros((num_particles, num_particles))
    for i in range(num_particles):
        for j in range(num_particles):
            d_phi = (phi[0, i] - phi[0, j] + np.pi) % (2 * np.pi) - np.pi
            theta[i, j] = np.sqrt((eta[0, i] - eta[0, j]) ** 2 + d_phi**2)
    expected = [brute_force_efp(edges, z, theta) for edges in ENERGYFLOW_D4_GRAPHS]
    got = efps_d4(pt, eta, phi, np.ones((1, num_particles), bool))
    assert got.shape == (1, 36) and len(ENERGYFLOW_D4_GRAPHS) == 36
    np.testing.assert_allclose(got[0], expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(efps_w1(pt, eta, phi, np.ones_like(pt, bool))[0], np.array(expected)[W1_GRAPHS])


def test_efp_beta_and_normalisation():
    pt, eta, phi = np.array([[3.0, 1.0, 2.0]]), np.array([[0.0, 0.3, -0.1]]), np.array([[0.0, 0.2, 0.4]])
    mask = np.ones((1, 3), bool)
    theta = np.hypot(eta[0, :, None] - eta[0], phi[0, :, None] - phi[0])
    for beta in (0.5, 2.0):
        expected = [brute_force_efp(edges, pt[0], theta**beta) for edges in ENERGYFLOW_D4_GRAPHS]
        np.testing.assert_allclose(efps_d4(pt, eta, phi, mask, beta=beta, normed=False)[0], expected, rtol=1e-12)


def test_efps_are_invariant_under_permutations_rotations_and_translations():
    pt, eta, phi, mask = random_jets(3, min_constituents=2)
    pt, eta, phi = (np.where(mask, x, 0.0) for x in (pt, eta, phi))
    reference = efps_d4(pt, eta, phi, mask)
    rng = np.random.default_rng(4)
    order = np.argsort(rng.random(mask.shape), axis=1)
    permuted = [np.take_along_axis(x, order, axis=1) for x in (pt, eta, phi, mask)]
    np.testing.assert_allclose(efps_d4(*permuted), reference, rtol=1e-10)
    # rotate about each jet's first constituent in the (eta, phi) plane (phi unwrapped around it)
    angle = rng.uniform(0, 2 * np.pi, (len(pt), 1))
    d_eta, d_phi = eta - eta[:, :1], (phi - phi[:, :1] + np.pi) % (2 * np.pi) - np.pi
    rotated_eta = np.cos(angle) * d_eta - np.sin(angle) * d_phi + 0.7
    rotated_phi = np.sin(angle) * d_eta + np.cos(angle) * d_phi + 3.0  # crosses the boundary
    np.testing.assert_allclose(efps_d4(pt, rotated_eta, rotated_phi, mask), reference, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(efps_d4(pt * 17.0, eta, phi, mask), reference, rtol=1e-12)


def test_efps_ignore_padding_and_chunking(monkeypatch):
    pt, eta, phi, mask = random_jets(5)
    reference = efps_d4(*(np.where(mask, x, 0.0) for x in (pt, eta, phi)), mask)
    assert np.all(np.isfinite(reference))
    np.testing.assert_array_equal(efps_d4(pt, eta, phi, mask), reference)
    monkeypatch.setattr(observables, "_CHUNK_BYTES", 1)  # one jet per chunk
    np.testing.assert_allclose(efps_d4(pt, eta, phi, mask), reference, rtol=1e-13)
    np.testing.assert_allclose(efps_w1(pt, eta, phi, mask), reference[:, W1_GRAPHS], rtol=1e-13)


def test_composites_are_products_of_their_prime_factors():
    pt, eta, phi, mask = random_jets(6)
    values = efps_d4(pt, eta, phi, mask)
    np.testing.assert_allclose(values[:, 0], 1.0)  # the one-vertex graph: sum of z
    np.testing.assert_allclose(values[:, 21], values[:, 1] ** 2, rtol=1e-12)
    np.testing.assert_allclose(values[:, 35], values[:, 1] ** 4, rtol=1e-12)
    np.testing.assert_allclose(values[:, 32], values[:, 5] ** 2, rtol=1e-12)
