"""Sampler options: frozen coordinates, projection, bounds, clipping, schedules, validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxebm.sampling import HMCConfig, LangevinConfig, hmc, langevin, mala, proposal, schedules
from sampling_testing import assert_close_iid, assert_moments, gaussian_energy

NUM_CHAINS = 4096


def masked_set_energy(x):
    """Toy constituent energy: x (B, N, 3) -> (B,), quadratic in every coordinate."""
    return 0.5 * jnp.sum(jnp.square(x), axis=(1, 2))


@pytest.mark.parametrize("module, config, kwargs", [
    pytest.param(langevin, LangevinConfig(0.1, 0.3, grad_clip_norm=5.0), {}, id="ula"),
    pytest.param(mala, LangevinConfig(0.2, bounds=(-4.0, 4.0), bounds_mode="reflect"), {},
                 id="mala-reflect"),
    pytest.param(hmc, HMCConfig(0.3, 3), {"inverse_mass": jnp.array([1.0, 2.0, 0.5])}, id="hmc"),
])
def test_frozen_coordinates_stay_bit_identical_and_free_ones_sample(module, config, kwargs):
    key_x, key_mask = jax.random.split(jax.random.key(0))
    x0 = 3.9 * jnp.tanh(10.0 * jax.random.normal(key_x, (1024, 8, 3)))  # near +-3.9, inside the bounds
    is_padded = jax.random.bernoulli(key_mask, 0.4, (1024, 8))
    fn = jax.jit(lambda key, x, m: module.run_chain(key, x, masked_set_energy, config, 300,
                                                    frozen_mask=m, **kwargs))
    x, _ = fn(jax.random.key(1), x0, is_padded)
    padded = np.asarray(is_padded)
    np.testing.assert_array_equal(np.asarray(x)[padded], np.asarray(x0)[padded])
    free = np.asarray(x)[~padded].reshape(-1, 1)
    moved = np.abs(free) < 3.0  # the free coordinates left x0 (|x0| ~ 3.9)
    assert free.shape[0] > 10_000 and moved.mean() > 0.95
    if module is not langevin:  # exact kernels: the free coordinates follow N(0, 1)
        assert_moments(free, [0.0], [[1.0]])


def test_frozen_mask_shape_is_validated():
    with pytest.raises(ValueError, match="leading prefix"):
        proposal.free_mask(jnp.zeros((4, 3), bool), jnp.zeros((4, 2, 3)))


def test_projected_chains_stay_on_sphere():
    x0 = jax.random.normal(jax.random.key(0), (256, 5))
    project = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    energy_fn = gaussian_energy(np.ones(5), np.eye(5))
    for module in (langevin, mala):
        x, _ = jax.jit(lambda key: module.run_chain(key, x0, energy_fn, LangevinConfig(0.1), 50,
                                                    project_fn=project))(jax.random.key(1))
        np.testing.assert_allclose(np.linalg.norm(np.asarray(x), axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("bounds_mode", ["clamp", "reflect"])
def test_ula_bounds_hold(bounds_mode):
    config = LangevinConfig(0.5, 1.5, bounds=(0.0, 1.0), bounds_mode=bounds_mode)
    energy_fn = gaussian_energy([0.9, 0.1], np.eye(2) * 4.0)
    x0 = jax.random.uniform(jax.random.key(0), (512, 2))
    x, _ = jax.jit(lambda key: langevin.run_chain(key, x0, energy_fn, config, 20))(jax.random.key(1))
    assert float(jnp.min(x)) >= 0.0 and float(jnp.max(x)) <= 1.0
    assert len(np.unique(np.asarray(x))) > 100 if bounds_mode == "reflect" else True


def test_fold_reflects_far_outside_points():
    config = LangevinConfig(bounds=(0.0, 1.0), bounds_mode="reflect")
    z = jnp.array([-0.25, 1.25, 2.5, -3.75, 0.5])
    np.testing.assert_allclose(proposal.apply_bounds(z, config), [0.25, 0.75, 0.5, 0.25, 0.5], atol=1e-6)


def test_mala_with_reflection_samples_truncated_gaussian_exactly():
    # noise 0.7 on a box of width 1: proposals often fold several times
    config = LangevinConfig(0.02, 0.7, bounds=(0.0, 1.0), bounds_mode="reflect")
    energy_fn = gaussian_energy([0.3], [[0.16]])
    x0 = jax.random.uniform(jax.random.key(0), (NUM_CHAINS, 1))
    x, info = jax.jit(lambda key: mala.run_chain(key, x0, energy_fn, config, 300, trace=True))(
        jax.random.key(1))
    truth = stats.truncnorm((0.0 - 0.3) / 0.4, (1.0 - 0.3) / 0.4, loc=0.3, scale=0.4)
    assert_moments(x, [truth.mean()], [[truth.var()]])
    assert 0.1 < float(jnp.mean(info.acceptance_rate)) < 0.99


def test_gradient_clipping():
    grad = jnp.array([[3.0, 4.0], [0.3, 0.4]])
    by_norm = proposal.force(grad, LangevinConfig(grad_clip_norm=1.0, temperature=2.0), None)
    np.testing.assert_allclose(by_norm, [[-0.3, -0.4], [-0.15, -0.2]], rtol=1e-6)
    by_value = proposal.force(grad, LangevinConfig(grad_clip_value=0.35), None)
    np.testing.assert_allclose(by_value, [[-0.35, -0.35], [-0.3, -0.35]], rtol=1e-6)


def test_schedules():
    steps = jnp.arange(0, 121, 40)
    np.testing.assert_allclose(jax.vmap(schedules.StepDecay(0.1, 0.8, 40))(steps),
                               [0.1, 0.08, 0.064, 0.0512], rtol=1e-6)
    np.testing.assert_allclose(schedules.InverseTime(1.0)(jnp.array([0, 1, 3])), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(schedules.Linear(1.0, 0.0, 4)(jnp.array([0, 2, 4, 8])), [1, 0.5, 0, 0])
    assert float(schedules.value_at(0.3, 7)) == pytest.approx(0.3)
    assert hash(LangevinConfig(schedules.StepDecay(0.1, 0.8, 40))) == hash(
        LangevinConfig(schedules.StepDecay(0.1, 0.8, 40)))


def test_tied_noise_follows_scheduled_step():
    config = LangevinConfig(step_size=schedules.StepDecay(0.5, 0.5, 1))
    step_size, noise = proposal.step_and_noise(config, jnp.int32(2))
    assert float(step_size) == pytest.approx(0.125) and float(noise) == pytest.approx(0.5)


def test_ula_scheduled_step_anneals_toward_target():
    """Step 0.5 decayed x0.5 every 100 steps ends close to the exact N(0, 1) stationary law."""
    config = LangevinConfig(schedules.StepDecay(0.5, 0.5, 100))
    energy_fn = gaussian_energy([0.0], [[1.0]])
    x0 = jnp.zeros((NUM_CHAINS, 1))
    x, _ = jax.jit(lambda key: langevin.run_chain(key, x0, energy_fn, config, 600))(jax.random.key(1))
    final_step = 0.5 * 0.5**5
    assert_moments(x, [0.0], [[1.0 / (1.0 - final_step / 2)]], k=6)


@pytest.mark.parametrize("kwargs, match", [
    ({"bounds_mode": "wrap"}, "bounds_mode"),
    ({"bounds": (1.0, 0.0)}, "low < high"),
    ({"temperature": 0.0}, "temperature"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LangevinConfig(**kwargs)


def test_nan_energy_is_rejected():
    energy_fn = lambda x: jnp.where(x[:, 0] > 0.5, jnp.nan, 0.5 * x[:, 0] ** 2)
    x0 = jnp.zeros((256, 1))
    x, info = jax.jit(lambda key: mala.run_chain(key, x0, energy_fn, LangevinConfig(1.0), 30,
                                                 trace=True))(jax.random.key(0))
    assert float(jnp.max(x)) <= 0.5 and bool(jnp.all(jnp.isfinite(info.energy)))
    assert_close_iid(np.asarray(info.is_accepted[-1], np.float64), float(jnp.mean(info.acceptance_rate[-1])),
                     what="acceptance")


def test_unbatched_energy_is_rejected():
    with pytest.raises(ValueError, match="one energy per chain"):
        mala.init(jnp.zeros((4, 2)), lambda x: jnp.sum(x**2))


@pytest.mark.parametrize("module, config", [
    pytest.param(langevin, LangevinConfig(0.1, 0.0, temperature=2.0), id="ula"),
    pytest.param(mala, LangevinConfig(0.05, 0.2), id="mala"),
    pytest.param(hmc, HMCConfig(0.1, 2), id="hmc"),
])
def test_chain_info_reports_energy_and_gradient_norm_over_free_coordinates(module, config):
    """E = 0.5 sum a x^2 on every coordinate (frozen ones too). ULA (noise 0) moves x0 to
    x0 - h a x0 / T on free coordinates and reports E and ||grad E|| over free coordinates at x0;
    MALA and HMC report them at the position they end at."""
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(64, 4, 3)).astype(np.float32)
    frozen = rng.random((64, 4)) < 0.5
    scale = np.array([0.5, 2.0, 1.5], np.float32)
    energy_fn = lambda x: 0.5 * jnp.sum(scale * jnp.square(x), axis=(1, 2))
    x, info = jax.jit(lambda key: module.run_chain(key, jnp.asarray(x0), energy_fn, config, 1,
                                                   frozen_mask=frozen))(jax.random.key(0))
    x, x0 = np.asarray(x, np.float64), x0.astype(np.float64)
    np.testing.assert_array_equal(x[frozen], x0[frozen])
    if module is langevin:
        np.testing.assert_allclose(x, np.where(frozen[..., None], x0, x0 - 0.1 * scale * x0 / 2.0), rtol=1e-6)
        at = x0
    else:
        assert 0.3 < np.mean(np.any(x != x0, axis=(1, 2))) < 1.0  # some chains moved, some rejected
        at = x
    np.testing.assert_allclose(info.energy, 0.5 * np.sum(scale * at**2, axis=(1, 2)), rtol=1e-5)
    free_grad = np.where(frozen[..., None], 0.0, scale * at)
    np.testing.assert_allclose(info.grad_norm, np.linalg.norm(free_grad.reshape(len(at), -1), axis=1), rtol=1e-5)
