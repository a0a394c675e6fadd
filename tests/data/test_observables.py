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
    # Rounding bound for m^2 = E^2 - |p|^2 (both sides compute it in float64, from the same inputs).
    # Each of the jet's E, px, py, pz is a sum of n terms bounded by E_i (|p_i| <= E_i, massless), so
    # its rounding error is at most ~ n eps E (E = sum E_i, any summation order). Then
    # |d(m^2)| <= 2 E |dE| + 2 |p| |dp| + (rounding of the squares and their difference, ~ 8 eps E^2)
    #          <= (2 + 2 sqrt 3) n eps E^2 + 8 eps E^2 <= 6 (n + 2) eps E^2,
    # so two such computations differ by at most 12 (n + 2) eps E^2 in m^2, whatever m is: the mass of
    # a narrow jet (pure rounding noise for one constituent) is only known to ~sqrt(eps) E. For the
    # masses, m >= 0 gives |m1 - m2| <= sqrt(|m1^2 - m2^2|); clipping m^2 at 0 does not widen gaps.
    eps = np.finfo(np.float64).eps  # jet_kinematics sums and squares in float64
    for jet in range(len(mask)):
        total = fastjet.PseudoJet(0.0, 0.0, 0.0, 0.0)
        for e, px, py, pz in constituents[jet, mask[jet]]:
            total = total + fastjet.PseudoJet(px, py, pz, e)
        m2_tolerance = 12 * (mask[jet].sum() + 2) * eps * total.E() ** 2
        assert kinematics["pt"][jet] == pytest.approx(total.pt(), rel=1e-12)
        m2 = max(total.m2(), 0.0)  # fastjet's m^2 can be rounding noise below zero; ours is clipped
        assert kinematics["mass"][jet] ** 2 == pytest.approx(m2, rel=1e-12, abs=m2_tolerance)
        assert kinematics["mass"][jet] == pytest.approx(np.sqrt(m2), rel=1e-12, abs=np.sqrt(m2_tolerance))
        assert kinematics["eta"][jet] == pytest.approx(total.eta(), rel=1e-10, abs=1e-12)
        assert kinematics["phi"][jet] == pytest.approx(total.phi_std(), rel=1e-12, abs=1e-12)
        assert kinematics["m_over_pt"][jet] ** 2 == pytest.approx(
            m2 / total.pt() ** 2, rel=1e-12, abs=m2_tolerance / total.pt() ** 2
        )
    np.testing.assert_array_equal(kinematics["multiplicity"], mask.sum(1))


def test_jet_mass_of_two_massless_particles():
    pt, eta, phi = np.array([[100.0, 50.0]]), np.array([[0.3, -0.2]]), np.array([[0.1, 0.5]])
    kinematics = jet_kinematics(massless_four_vectors(pt, eta, phi), np.ones((1, 2), bool))
    expected = np.sqrt(2 * 100 * 50 * (np.cosh(0.5) - np.cos(0.4)))
    assert kinematics["mass"][0] == pytest.approx(expected, rel=1e-12)
    single = jet_kinematics(massless_four_vectors(pt[:, :1], eta[:, :1], phi[:, :1]), np.ones((1, 1), bool))
    assert single["mass"][0] == pytest.approx(0.0, abs=1e-5)  # sqrt(max(m^2, 0)) of rounding noise


def one_jet(pt, eta, phi):
    """``(pt, eta, phi, mask)`` of a single jet from per-constituent lists."""
    pt, eta, phi = (np.array([x], np.float64) for x in (pt, eta, phi))
    return pt, eta, np.pi - (np.pi - phi) % (2 * np.pi), np.ones(pt.shape, bool)


# (eta, phi) offsets of the hand-made jets: none, a boost, and a jet across phi = +-pi
OFFSETS = [(0.0, 0.0), (1.3, 0.4), (-0.7, np.pi - 0.3)]


@pytest.mark.parametrize(("eta0", "phi0"), OFFSETS)
def test_nsubjettiness_kt_axes_by_hand_for_three_particles(eta0, phi0):
    # A (pT 10) at phi 0, B (pT 10) at phi 0.2, C (pT 1) at phi 0.6, all at one eta (relative to
    # the offsets). kT distances min(pT_i, pT_j)^2 dR^2: AB 100 * 0.2^2 = 4, AC 1 * 0.6^2 = 0.36,
    # BC 1 * 0.4^2 = 0.16, so B + C merge first and exclusive_jets(2) = {A, B + C} (C/A and anti-kT
    # merge A + B first). Massless particles at one eta sum to a four-vector with pz / E = tanh(eta),
    # i.e. rapidity eta, and E-scheme phi = atan2(sum pT sin phi, sum pT cos phi).
    pt, eta, phi, mask = one_jet([10.0, 10.0, 1.0], [eta0] * 3, [phi0, phi0 + 0.2, phi0 + 0.6])
    phi_bc = np.arctan2(10 * np.sin(0.2) + np.sin(0.6), 10 * np.cos(0.2) + np.cos(0.6))  # ~0.2356
    phi_abc = np.arctan2(10 * np.sin(0.2) + np.sin(0.6), 10 + 10 * np.cos(0.2) + np.cos(0.6))  # ~0.1231
    R = 0.8
    for beta in (1.0, 2.0):
        # tau_1: every particle to the A + B + C axis; tau_2: B and C to the B + C axis, A on its own
        # axis; tau_3 = 0 (three particles). Normalisation: sum pT R^beta = 21 R^beta.
        tau_1 = (10 * phi_abc**beta + 10 * (0.2 - phi_abc) ** beta + (0.6 - phi_abc) ** beta) / (21 * R**beta)
        tau_2 = (10 * (phi_bc - 0.2) ** beta + (0.6 - phi_bc) ** beta) / (21 * R**beta)
        taus = nsubjettiness(pt, eta, phi, mask, R=R, beta=beta)
        np.testing.assert_allclose(taus[0], [tau_1, tau_2, 0.0], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize(("eta0", "phi0"), OFFSETS)
def test_nsubjettiness_kt_axes_by_hand_for_a_rectangle(eta0, phi0):
    # Four pT-5 particles at (eta, phi) = (+-0.3, +-0.1). The pairs at equal eta (dR 0.2) merge first,
    # into axes at (+-0.3, 0) (same eta, symmetric phi); all four sum to pz = 0 (relative to eta0),
    # i.e. an axis at (0, 0). tau_1: 4 * 5 * sqrt(0.3^2 + 0.1^2); tau_2: 4 * 5 * 0.1; tau_3 (one pair
    # merged, the other two particles their own axes): 2 * 5 * 0.1; tau_4 = 0 (4 particles);
    # normalisation 4 * 5 * R^beta.
    pt, eta, phi, mask = one_jet([5.0] * 4, eta0 + np.array([0.3, 0.3, -0.3, -0.3]), phi0 + np.array([0.1, -0.1] * 2))
    R = 1.2
    for beta in (1.0, 2.0):
        distance_1, distance_2 = np.hypot(0.3, 0.1) ** beta, 0.1**beta
        expected = [distance_1 / R**beta, distance_2 / R**beta, distance_2 / (2 * R**beta), 0.0]
        for axes in ("kt", "onepass_kt"):  # these kT axes already minimise tau_N (beta = 1, 2)
            taus = nsubjettiness(pt, eta, phi, mask, R=R, beta=beta, max_n=4, axes=axes)
            np.testing.assert_allclose(taus[0], expected, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize(("eta0", "phi0"), OFFSETS)
def test_nsubjettiness_one_pass_by_hand(eta0, phi0):
    # pT 3 at phi 0 and pT 1 at phi 0.4 (same eta), R = 1. The kT axis for N = 1 (the sum) is at
    # phi_k = atan2(sin 0.4, 3 + cos 0.4) ~ 0.099: tau_1 = (3 phi_k^beta + (0.4 - phi_k)^beta) / 4.
    # One-pass: for beta = 1 the minimum is the weighted median, the hard particle, tau_1 = 0.4 / 4
    # (reached to ~1e-4, the regulator and stopping scale); for beta = 2 the pT-weighted centroid
    # phi = 0.4 / 4 = 0.1, tau_1 = (3 * 0.1^2 + 0.3^2) / 4 = 0.03, in one step.
    pt, eta, phi, mask = one_jet([3.0, 1.0], [eta0] * 2, [phi0, phi0 + 0.4])
    phi_k = np.arctan2(np.sin(0.4), 3 + np.cos(0.4))
    for beta, one_pass, tolerance in ((1.0, 0.4 / 4, 1e-4), (2.0, (3 * 0.1**2 + 0.3**2) / 4, 1e-12)):
        kt = nsubjettiness(pt, eta, phi, mask, R=1.0, beta=beta, max_n=2)
        np.testing.assert_allclose(kt[0], [(3 * phi_k**beta + (0.4 - phi_k) ** beta) / 4, 0.0], rtol=1e-9)
        minimised = nsubjettiness(pt, eta, phi, mask, R=1.0, beta=beta, max_n=2, axes="onepass_kt")
        assert minimised[0, 0] == pytest.approx(one_pass, abs=tolerance)
        assert minimised[0, 0] < kt[0, 0] and minimised[0, 1] == 0


@pytest.mark.parametrize("axes", ["kt", "onepass_kt"])
def test_nsubjettiness_is_zero_when_n_reaches_the_multiplicity(axes):
    pt, eta, phi, mask = random_jets(7, num_jets=60, num_slots=6, min_constituents=0)
    taus = nsubjettiness(pt, eta, phi, mask, max_n=6, axes=axes)
    counts = mask.sum(1)
    assert set(counts) == set(range(7))
    for num_axes in range(1, 7):
        assert np.all(taus[counts <= num_axes, num_axes - 1] == 0)
        assert np.all(taus[counts > num_axes, num_axes - 1] > 0)


@pytest.mark.parametrize("axes", ["kt", "onepass_kt"])
def test_nsubjettiness_is_invariant_under_constituent_permutations(axes):
    pt, eta, phi, mask = random_jets(8, num_jets=60)
    reference = nsubjettiness(pt, eta, phi, mask, axes=axes)
    order = np.argsort(np.random.default_rng(9).random(mask.shape), axis=1)  # padding moves too
    permuted = [np.take_along_axis(x, order, axis=1) for x in (pt, eta, phi, mask)]
    np.testing.assert_allclose(nsubjettiness(*permuted, axes=axes), reference, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.0])
def test_one_pass_never_exceeds_kt_axes(beta):
    pt, eta, phi, mask = random_jets(10, num_jets=100)
    kt = nsubjettiness(pt, eta, phi, mask, beta=beta, max_n=4)
    minimised = nsubjettiness(pt, eta, phi, mask, beta=beta, max_n=4, axes="onepass_kt")
    assert np.all(minimised <= kt)
    assert np.mean(minimised[kt > 0] < kt[kt > 0]) > 0.9  # and it does minimise


def test_nsubjettiness_rejects_bad_arguments():
    pt, eta, phi, mask = one_jet([1.0, 2.0], [0.0, 0.1], [0.0, 0.1])
    for kwargs in ({"axes": "wta_kt"}, {"beta": 0.0}, {"R": -1.0}, {"max_n": 0}, {"num_iterations": -1}):
        with pytest.raises(observables.JetInputError):
            nsubjettiness(pt, eta, phi, mask, **kwargs)


@pytest.mark.parametrize("num_prongs", [1, 2, 3])
def test_nsubjettiness_of_pencil_prongs(num_prongs):
    rng = np.random.default_rng(num_prongs)
    centres = np.array([[0.0, 0.0], [0.4, 0.1], [-0.1, -0.45]])[:num_prongs]
    prong = np.repeat(np.arange(num_prongs), 6)[None].repeat(20, axis=0)
    pt = rng.uniform(1, 50, prong.shape)
    eta = centres[prong, 0] + rng.normal(0, 1e-7, prong.shape)
    phi = centres[prong, 1] + rng.normal(0, 1e-7, prong.shape)
    for axes in ("kt", "onepass_kt"):
        taus = nsubjettiness(pt, eta, phi, np.ones(prong.shape, bool), R=0.8, axes=axes)
        assert taus.shape == (20, 3)
        assert np.all(taus[:, num_prongs - 1] < 1e-6)
        if num_prongs > 1:
            assert np.all(taus[:, num_prongs - 2] > 0.05)


def test_nsubjettiness_ratios_for_random_jets():
    pt, eta, phi, mask = random_jets(1, num_jets=200)
    taus = nsubjettiness(pt, eta, phi, mask, R=1.0)
    assert np.all(taus >= 0) and np.all(np.isfinite(taus))
    assert np.all(taus[mask.sum(1) <= 1] == 0)
    for ratio in tau_ratios(taus):  # kT axes do not force tau_N <= tau_(N-1); fjcontrib's do not either
        assert np.all((ratio >= 0) & np.isfinite(ratio))
    np.testing.assert_array_equal(tau_ratios(np.zeros((2, 3))), np.zeros((2, 2)))


@pytest.mark.parametrize("axes", ["kt", "onepass_kt"])
def test_nsubjettiness_ignores_padding_and_the_phi_boundary(axes):
    pt, eta, phi, mask = random_jets(2)
    taus = nsubjettiness(pt, eta, phi, mask, axes=axes)
    zeros = [np.where(mask, x, 0.0) for x in (pt, eta, phi)]
    np.testing.assert_array_equal(nsubjettiness(*zeros, mask, axes=axes), taus)
    shifted = np.pi - (np.pi - (zeros[2] + np.pi)) % (2 * np.pi)
    shifted_taus = nsubjettiness(zeros[0], zeros[1], shifted, mask, axes=axes)
    np.testing.assert_allclose(shifted_taus, taus, rtol=1e-9, atol=1e-12)


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
