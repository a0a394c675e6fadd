"""Sphere chains: uniform draws, projected ULA, exact tangent-space MALA (von Mises-Fisher targets)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.sampling import LangevinConfig, sphere
from sampling_testing import assert_close_iid

NUM_CHAINS = 4096
KAPPA = 3.0
MU = jnp.array([0.0, 0.6, 0.8])
VMF_MEAN_COS = 1 / np.tanh(KAPPA) - 1 / KAPPA  # E[mu . z] for von Mises-Fisher on S^2


def vmf_energy(z):
    return -KAPPA * z @ MU


def vmf_draws(key, num):
    """Exact von Mises-Fisher draws on S^2: inverse-CDF for mu.z, uniform direction around mu."""
    key_w, key_dir = jax.random.split(key)
    u = jax.random.uniform(key_w, (num,))
    w = 1 + jnp.log(u + (1 - u) * jnp.exp(-2 * KAPPA)) / KAPPA
    v = jax.random.normal(key_dir, (num, 3))
    v = sphere.project(v - (v @ MU)[:, None] * MU)
    return w[:, None] * MU + jnp.sqrt(1 - w**2)[:, None] * v


def test_uniform_moments():
    z = np.asarray(sphere.uniform(jax.random.key(0), NUM_CHAINS, 4), np.float64)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    assert_close_iid(z, np.zeros(4), what="mean")
    assert_close_iid(z[:, :, None] * z[:, None, :], np.eye(4) / 4, what="second moment")


def test_tangent_mala_reaches_von_mises_fisher():
    z0 = sphere.uniform(jax.random.key(0), NUM_CHAINS, 3)
    z, info = jax.jit(lambda key: sphere.run_chain(key, z0, vmf_energy, LangevinConfig(0.2, 0.5), 200,
                                                   trace=True, thin=20))(jax.random.key(1))
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    assert_close_iid(np.asarray(z @ MU), VMF_MEAN_COS, what="E[mu.z]")
    assert_close_iid(np.asarray(z), np.asarray(VMF_MEAN_COS * MU), what="mean")
    assert 0.3 < float(jnp.mean(info.acceptance_rate)) < 0.99


@pytest.mark.parametrize("step_size, noise_scale", [(0.5, 0.3), (0.05, 1.5)])
def test_tangent_mala_leaves_von_mises_fisher_invariant(step_size, noise_scale):
    z0 = vmf_draws(jax.random.key(2), NUM_CHAINS)
    config = LangevinConfig(step_size, noise_scale)
    z, info = jax.jit(lambda key: sphere.run_chain(key, z0, vmf_energy, config, 10, trace=True))(
        jax.random.key(3))
    cos = np.asarray(z @ MU, np.float64)
    assert_close_iid(cos, VMF_MEAN_COS, what="E[mu.z]")
    assert_close_iid(cos**2, 1 + 2 / KAPPA**2 - 2 / KAPPA / np.tanh(KAPPA), what="E[(mu.z)^2]")
    assert float(jnp.mean(info.acceptance_rate)) > 0.1


def test_tangent_mala_uniform_target_in_ten_dimensions():
    """E = 0: only the proposal densities enter the test, so this checks the tangent-space maps."""
    z0 = sphere.project(jnp.zeros((NUM_CHAINS, 10)).at[:, 0].set(1.0)
                        + 0.1 * jax.random.normal(jax.random.key(4), (NUM_CHAINS, 10)))
    z, _ = jax.jit(lambda key: sphere.run_chain(key, z0, lambda x: jnp.zeros(x.shape[0]),
                                                LangevinConfig(0.1, 0.8), 150))(jax.random.key(5))
    z = np.asarray(z, np.float64)
    assert_close_iid(z, np.zeros(10), what="mean")
    assert_close_iid(z**2, np.full(10, 0.1), what="second moment")


def test_projected_langevin_small_step_approaches_von_mises_fisher():
    z0 = sphere.uniform(jax.random.key(6), NUM_CHAINS, 3)
    z, _ = jax.jit(lambda key: sphere.run_langevin(key, z0, vmf_energy, LangevinConfig(0.005), 800))(
        jax.random.key(7))
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    assert abs(float(jnp.mean(z @ MU)) - VMF_MEAN_COS) < 0.02  # O(step) bias plus 5 SE
