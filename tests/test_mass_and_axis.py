"""The pieces of the generated-jet mass and axis study (`experiments/ebm_mass_and_axis.py`): the jet axis, the
rigid translation, the data's recentring, and the energy change under translation."""
from types import SimpleNamespace

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from experiments.ebm_mass_and_axis import DELTAS, energy_under_translation, recentred, translated
from jaxebm.data.pipeline import ConstituentPipeline
from jaxebm.data.preprocess import Standardizer
from jaxebm.evaluation import jet_observables

N = 6


def _pipeline(std=(1.0, 1.0, 1.0)):
    """Raw-space (or scaled) pipeline of N slots in "zeros" mode."""
    return ConstituentPipeline(N, "zeros", Standardizer(np.zeros(3), np.asarray(std)), (0.0,) * N + (1.0,), "raw")


def _jets(n=20, seed=0):
    """Raw features (log pT, eta, phi) of n jets whose slots' plain mean (eta, phi) is (0, 0)."""
    rng = np.random.default_rng(seed)
    raw = np.stack([rng.normal(3.0, 1.0, (n, N)), rng.normal(0, 0.1, (n, N)), rng.normal(0, 0.15, (n, N))], -1)
    raw[..., 1:] -= raw[..., 1:].mean(axis=1, keepdims=True)
    return raw.astype(np.float32), np.ones((n, N), bool)


def _axes(pipeline, x, mask):
    """(n, 2) jet axis (eta, phi) of the summed four-vector, as the study reads it."""
    observables = jet_observables(pipeline.to_four_vectors(x, mask), mask)
    return np.stack([observables["eta"], observables["phi"]], axis=1)


def test_translation_moves_the_jet_axis_by_delta_and_recentring_brings_it_back_without_changing_the_mass():
    pipeline, (x, mask) = _pipeline(std=(2.0, 0.5, 0.25)), _jets()
    x = np.asarray(pipeline.standardizer.apply(x, mask))  # model space differs from raw space
    axes = _axes(pipeline, x, mask)
    moved = translated(pipeline, x, mask, 0.03, -0.02)
    moved_axes = _axes(pipeline, moved, mask)
    # A rigid shift in eta is a longitudinal boost: the jet's rapidity moves by exactly delta, its pseudorapidity
    # (what the axis is) nearly; a shift in phi is a rotation.
    np.testing.assert_allclose(moved_axes[:, 0] - axes[:, 0], 0.03, atol=2e-3)
    np.testing.assert_allclose(moved_axes[:, 1] - axes[:, 1], -0.02, atol=1e-5)
    back = recentred(pipeline, moved, mask)  # centring and rotation: the mass changes only at second order
    assert np.abs(_axes(pipeline, back, mask)).max() < 0.01
    np.testing.assert_allclose(jet_observables(pipeline.to_four_vectors(back, mask), mask)["mass"],
                               jet_observables(pipeline.to_four_vectors(x, mask), mask)["mass"], rtol=1e-2)


C = 0.015


class _QuadraticInEta(nn.Module):
    """E(x) = sum over slots of (eta - C)^2: along a translation by delta, E changes by N (delta^2 - 2 C delta)
    for jets whose slots average to eta = 0 (a minimum at delta = C); flat in phi."""

    @nn.compact
    def __call__(self, x, mask, deterministic=True):
        return jnp.sum(jnp.where(mask, (x[..., 1] - C) ** 2, 0.0), axis=-1)


def test_energy_under_translation_is_the_known_change_along_eta_and_zero_along_phi():
    x, mask = _jets()
    run = SimpleNamespace(model=_QuadraticInEta(), params={}, pipeline=_pipeline())
    change = energy_under_translation(run, x, mask, batch_size=8)
    np.testing.assert_allclose(change["eta"], [N * (d * d - 2 * C * d) for d in DELTAS], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(change["phi"], 0.0, atol=1e-6)
    # +0.01 and +0.02 still descend towards the minimum at +0.015; at 0.04 and 0.08 both directions climb.
    assert change["eta_frac_centre_is_minimum"] == [0.0, 0.0, 1.0, 1.0]
    assert change["phi_frac_centre_is_minimum"] == [0.0] * 4
