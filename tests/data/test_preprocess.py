"""Constituent kinematics, features, centring/rotation, padding and standardisation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.data.io import massless_four_vectors
from jaxebm.data.preprocess import (
    JetInputError,
    Standardizer,
    center_rotate_ebm,
    center_rotate_flip_nae,
    constituent_features,
    constituent_pt_eta_phi,
    features_to_four_vectors,
    pad_or_truncate,
    wrap_phi,
)


def synthetic_jets(seed, num_jets=64, num_slots=30, jet_phi=None, garbage=True):
    """Random massless jets around random axes, pT-ordered, with garbage in the padded slots."""
    rng = np.random.default_rng(seed)
    axis_eta = rng.uniform(-2, 2, (num_jets, 1))
    axis_phi = rng.uniform(-np.pi, np.pi, (num_jets, 1)) if jet_phi is None else jet_phi
    pt = -np.sort(-rng.exponential(20.0, (num_jets, num_slots)), axis=1) + 0.5
    eta = axis_eta + rng.normal(0, 0.2, (num_jets, num_slots))
    phi = wrap_phi(axis_phi + rng.normal(0, 0.2, (num_jets, num_slots)))
    mask = np.arange(num_slots) < rng.integers(2, num_slots + 1, (num_jets, 1))
    constituents = massless_four_vectors(pt, eta, phi)
    if garbage:
        constituents = np.where(mask[..., None], constituents, rng.normal(0, 1e6, constituents.shape))
    return constituents, mask


def test_pt_eta_phi_recovers_the_generating_values():
    rng = np.random.default_rng(0)
    pt, eta, phi = rng.uniform(1, 100, (5, 7)), rng.uniform(-3, 3, (5, 7)), rng.uniform(-np.pi, np.pi, (5, 7))
    mask = np.ones((5, 7), bool)
    got = constituent_pt_eta_phi(massless_four_vectors(pt, eta, phi), mask)
    for value, expected in zip(got, (pt, eta, phi)):
        np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)


def test_pt_eta_phi_is_zero_for_padding_and_zero_momenta():
    constituents, mask = synthetic_jets(1, num_jets=4)
    constituents[:, 0] = 0.0  # a real constituent without momentum
    constituents[:, 1, 1:3] = 0.0  # one along the beam: zero pT, large pz
    pt, eta, phi = constituent_pt_eta_phi(constituents, mask)
    for value in (pt, eta, phi):
        assert np.all(value[~mask] == 0) and np.all(value[:, :2] == 0)
        assert np.all(np.isfinite(value))
    assert pt.dtype == np.float64
    assert constituent_pt_eta_phi(constituents.astype(np.float32), mask)[0].dtype == np.float32


def test_azimuth_of_negative_zero_py_is_pi():
    constituents = np.array([[[1.0, -1.0, -0.0, 0.0]]])
    assert constituent_pt_eta_phi(constituents, np.ones((1, 1), bool))[2][0, 0] == np.pi


def test_four_vectors_to_features_and_back_reproduces_massless_inputs():
    constituents, mask = synthetic_jets(2)
    features = constituent_features(constituents, mask)
    momentum = np.where(mask[..., None], constituents, 0).sum(1)
    jet_eta = np.arcsinh(momentum[:, 3] / np.hypot(momentum[:, 1], momentum[:, 2]))
    jet_phi = np.arctan2(momentum[:, 2], momentum[:, 1])
    back = features_to_four_vectors(features, mask, jet_eta=jet_eta, jet_phi=jet_phi)
    np.testing.assert_allclose(back[mask], constituents[mask], rtol=1e-10, atol=1e-9)
    assert np.all(back[~mask] == 0)


def test_features_to_four_vectors_and_back_is_exact():
    rng = np.random.default_rng(3)
    mask = np.arange(20) < rng.integers(1, 21, (50, 1))
    features = np.stack(
        [rng.normal(2, 1, (50, 20)), rng.normal(0, 0.3, (50, 20)), rng.uniform(-1, 1, (50, 20))], axis=-1
    )
    features = np.where(mask[..., None], features, 0.0)
    jets = np.zeros((50, 5))
    jets[:, 1], jets[:, 2] = rng.uniform(-2, 2, 50), rng.uniform(-np.pi, np.pi, 50)
    four_vectors = features_to_four_vectors(features, mask, jet_eta=jets[:, 1], jet_phi=jets[:, 2])
    np.testing.assert_allclose(four_vectors[..., 0] ** 2, (four_vectors[..., 1:] ** 2).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(constituent_features(four_vectors, mask, jets=jets), features, atol=1e-12)


def test_phi_rel_is_small_for_a_jet_straddling_the_pi_boundary():
    constituents, mask = synthetic_jets(4, jet_phi=np.full((64, 1), np.pi - 0.01))
    pt, eta, phi = constituent_pt_eta_phi(constituents, mask)
    assert np.any(phi[mask] > 3.0) and np.any(phi[mask] < -3.0)  # both sides occupied
    phi_rel = constituent_features(constituents, mask)[..., 2]
    assert np.abs(phi_rel[mask]).max() < 1.2
    assert np.all((phi_rel > -np.pi) & (phi_rel <= np.pi))


def test_wrap_phi_range():
    angles = np.array([-3 * np.pi, -np.pi, -1.0, 0.0, np.pi, 3 * np.pi + 0.5])
    np.testing.assert_allclose(wrap_phi(angles), [np.pi, np.pi, -1.0, 0.0, np.pi, np.pi + 0.5 - 2 * np.pi])


@pytest.mark.parametrize("transform", ["features", "ebm", "nae"])
def test_padded_values_never_change_outputs(transform):
    constituents, mask = synthetic_jets(5)
    clean = np.where(mask[..., None], constituents, 0.0)
    dirty = np.where(mask[..., None], constituents, np.nan)
    features_clean, features_dirty = constituent_features(clean, mask), constituent_features(dirty, mask)
    if transform == "features":
        got, expected = features_dirty, features_clean
    elif transform == "ebm":
        garbage = np.where(mask[..., None], features_clean, np.inf)
        got, expected = center_rotate_ebm(garbage, mask), center_rotate_ebm(features_clean, mask)
    else:
        pt = np.exp(features_clean[..., 0])
        eta_dirty = np.where(mask, features_clean[..., 1], 1e9)
        got = np.stack(center_rotate_flip_nae(pt, eta_dirty, features_clean[..., 2], mask))
        expected = np.stack(center_rotate_flip_nae(pt, features_clean[..., 1], features_clean[..., 2], mask))
    np.testing.assert_array_equal(got, expected)
    assert np.all(got[..., ~mask] == 0) if transform == "nae" else np.all(got[~mask] == 0)


def test_center_rotate_ebm_centres_and_makes_the_axis_vertical():
    constituents, mask = synthetic_jets(6)
    features = constituent_features(constituents, mask)
    rotated = center_rotate_ebm(features, mask)
    np.testing.assert_array_equal(rotated[..., 0], features[..., 0])
    pt = np.where(mask, np.exp(rotated[..., 0]), 0.0)
    eta, phi = rotated[..., 1], rotated[..., 2]
    np.testing.assert_allclose((pt * eta).sum(1) / pt.sum(1), 0.0, atol=1e-12)
    np.testing.assert_allclose((pt * phi).sum(1) / pt.sum(1), 0.0, atol=1e-12)
    radius = np.where(mask, np.hypot(eta, phi), 1.0)
    axis_eta, axis_phi = (pt * eta / radius).sum(1), (pt * phi / radius).sum(1)
    np.testing.assert_allclose(axis_eta / axis_phi, 0.0, atol=1e-10)
    assert np.all(axis_phi > 0)


def test_center_rotate_ebm_is_a_rigid_motion():
    constituents, mask = synthetic_jets(7, num_jets=8)
    features = constituent_features(constituents, mask)
    rotated = center_rotate_ebm(features, mask)
    for jet in range(8):
        before, after = features[jet, mask[jet], 1:], rotated[jet, mask[jet], 1:]
        distances = [np.linalg.norm(x[:, None] - x[None], axis=-1) for x in (before, after)]
        np.testing.assert_allclose(distances[1], distances[0], atol=1e-12)


def test_center_rotate_flip_nae_conventions():
    constituents, mask = synthetic_jets(8)
    pt, _, _ = constituent_pt_eta_phi(constituents, mask)
    features = constituent_features(constituents, mask)
    eta, phi = center_rotate_flip_nae(pt, features[..., 1], features[..., 2], mask)
    total = pt.sum(1)
    np.testing.assert_allclose((pt * eta).sum(1) / total, 0.0, atol=1e-12)
    np.testing.assert_allclose((pt * phi).sum(1) / total, 0.0, atol=1e-12)
    c_ee, c_pp, c_ep = (pt * eta**2).sum(1), (pt * phi**2).sum(1), (pt * eta * phi).sum(1)
    np.testing.assert_allclose(c_ep / (c_ee + c_pp), 0.0, atol=1e-12)  # principal axes on the grid
    assert np.all(c_pp >= c_ee)  # the major axis is vertical (12 o'clock)
    assert np.all((pt * (eta < 0)).sum(1) >= (pt * (eta > 0)).sum(1))  # harder on the left
    assert np.all((pt * (phi < 0)).sum(1) >= (pt * (phi > 0)).sum(1))  # harder below


def test_center_rotate_flip_nae_on_a_known_jet():
    # a hard particle right of centre and two soft ones along a tilted line: after the
    # transform the spread is vertical and the hard particle sits below and left
    pt = np.array([[10.0, 1.0, 1.0]])
    eta, phi = np.array([[0.1, -0.3, 0.2]]), np.array([[0.1, -0.3, 0.4]])
    new_eta, new_phi = center_rotate_flip_nae(pt, eta, phi, np.ones((1, 3), bool))
    assert new_phi[0, 0] < 0 and new_eta[0, 0] <= 0
    assert np.ptp(new_phi) > np.ptp(new_eta)


def test_pad_or_truncate_keeps_the_first_real_constituents():
    features = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    mask = np.array([[True, True, True, True, False], [True, False, True, False, False]])
    short, short_mask = pad_or_truncate(features, mask, 3)
    np.testing.assert_array_equal(short_mask, [[True, True, True], [True, True, False]])
    np.testing.assert_array_equal(short[0], features[0, :3])
    np.testing.assert_array_equal(short[1], np.stack([features[1, 0], features[1, 2], np.zeros(3)]))
    long, long_mask = pad_or_truncate(features, mask, 7)
    assert long.shape == (2, 7, 3) and long.dtype == np.float32
    np.testing.assert_array_equal(long_mask.sum(1), mask.sum(1))
    assert np.all(long[~long_mask] == 0)
    vectors, vector_mask = pad_or_truncate(np.ones((2, 5, 4)), mask, 2)
    assert vectors.shape == (2, 2, 4) and vector_mask.all()


def test_standardizer_fit_apply_invert():
    constituents, mask = synthetic_jets(9)
    features = constituent_features(constituents, mask)
    features[~mask] = 123.0  # must not enter the statistics
    scaler = Standardizer.fit(features, mask)
    scaled = scaler.apply(features, mask)
    np.testing.assert_allclose(scaled[mask].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled[mask].std(0), 1.0, rtol=1e-12)
    assert np.all(scaled[~mask] == 0)
    restored = scaler.invert(scaled, mask)
    np.testing.assert_allclose(restored[mask], features[mask], rtol=1e-12, atol=1e-12)
    assert np.all(restored[~mask] == 0)
    copy = Standardizer.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(copy.mean, scaler.mean)
    np.testing.assert_array_equal(copy.std, scaler.std)


def test_standardizer_constant_feature_and_float32():
    features = np.ones((3, 4, 2), np.float32)
    features[..., 1] = np.arange(4)
    scaler = Standardizer.fit(features, np.ones((3, 4), bool))
    assert scaler.std[0] == 1.0
    assert scaler.apply(features, np.ones((3, 4), bool)).dtype == np.float32


def test_standardizer_works_under_jit():
    rng = np.random.default_rng(10)
    features, mask = rng.normal(3, 2, (4, 6, 3)).astype(np.float32), rng.random((4, 6)) < 0.7
    scaler = Standardizer.fit(features, mask)
    scaled = jax.jit(scaler.apply)(jnp.asarray(features), jnp.asarray(mask))
    assert isinstance(scaled, jax.Array) and scaled.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(scaled), scaler.apply(features, mask), rtol=1e-5, atol=1e-6)


def test_bad_inputs_name_the_argument():
    constituents, mask = synthetic_jets(11, num_jets=3)
    with pytest.raises(JetInputError, match="constituents"):
        constituent_pt_eta_phi(constituents[:, :, :3], mask)
    with pytest.raises(JetInputError, match="mask"):
        constituent_features(constituents, mask.astype(int))
    with pytest.raises(JetInputError, match="jets"):
        constituent_features(constituents, mask, jets=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="features"):
        Standardizer(mean=np.zeros(3), std=np.ones(3)).apply(np.zeros((3, 30, 2)), mask)
