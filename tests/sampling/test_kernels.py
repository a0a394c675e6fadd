"""ULA, MALA and HMC reach and preserve known targets (statistical tests over 4096 i.i.d. chains)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.sampling import HMCConfig, LangevinConfig, hmc, langevin, mala, schedules
from sampling_testing import assert_close_iid, assert_moments, gaussian_energy

NUM_CHAINS = 4096
MEAN_2D = np.array([1.0, -0.5])
COV_2D = np.array([[1.0, 0.8], [0.8, 1.0]])


def run(module, config, energy_fn, x0, num_steps, seed=0, **kwargs):
    """Jitted `module.run_chain` with a trace thinned to 10 points."""
    fn = jax.jit(lambda key, x: module.run_chain(key, x, energy_fn, config, num_steps, trace=True,
                                                 thin=num_steps // 10, **kwargs))
    return fn(jax.random.key(seed), jnp.asarray(x0, jnp.float32))


def overdispersed_start(dim, seed=1, scale=2.0):
    return scale * jax.random.normal(jax.random.key(seed), (NUM_CHAINS, dim)) + 1.0


def mixture_energy(x):
    """0.25 N(-1, 0.5^2) + 0.75 N(1, 0.5^2) in 1-D; x (B, 1)."""
    logits = jnp.stack([jnp.log(0.25) - 2.0 * (x[:, 0] + 1) ** 2, jnp.log(0.75) - 2.0 * (x[:, 0] - 1) ** 2])
    return -jax.nn.logsumexp(logits, axis=0)


MIXTURE_P_POSITIVE = 0.25 * 0.022750131948179 + 0.75 * (1 - 0.022750131948179)  # Phi(-2) = 0.02275


def banana_energy(x):
    """x1 ~ N(0, 1), x2 | x1 ~ N(0.5 (x1^2 - 1), 1): mean 0, var (1, 1.5), E[x1^2 x2] = 1."""
    return 0.5 * x[:, 0] ** 2 + 0.5 * (x[:, 1] - 0.5 * (x[:, 0] ** 2 - 1)) ** 2


MH_KERNELS = [
    pytest.param(mala, LangevinConfig(step_size=0.15), id="mala-tied"),
    pytest.param(mala, LangevinConfig(step_size=0.3, noise_scale=0.6), id="mala-decoupled"),
    pytest.param(hmc, HMCConfig(step_size=0.25, num_integration_steps=6), id="hmc"),
]


def ula_stationary_cov(precision, step_size, noise_scale, temperature):
    """Exact stationary covariance of ULA on a Gaussian: s^2 (2 hP/T - (hP/T)^2)^-1."""
    a = step_size * precision / temperature
    return noise_scale**2 * np.linalg.inv(2 * a - a @ a)


@pytest.mark.parametrize("step_size, noise_scale, temperature", [
    (0.1, None, 1.0), (0.3, 0.5, 1.0), (0.05, None, 2.0)])
def test_ula_matches_its_exact_gaussian_stationary_law(step_size, noise_scale, temperature):
    config = LangevinConfig(step_size, noise_scale, temperature)
    x, info = run(langevin, config, gaussian_energy(MEAN_2D, COV_2D), overdispersed_start(2), 400)
    noise = np.sqrt(2 * step_size) if noise_scale is None else noise_scale
    expected = ula_stationary_cov(np.linalg.inv(COV_2D), step_size, noise, temperature)
    assert_moments(x, MEAN_2D, expected)
    assert info.energy.shape == (10, NUM_CHAINS) and bool(jnp.all(info.acceptance_rate == 1))


def test_ula_small_step_approaches_target():
    x, _ = run(langevin, LangevinConfig(0.002), gaussian_energy([1.0], [[0.25]]),
               overdispersed_start(1), 3000)
    assert_moments(x, [1.0], [[0.25 / (1 - 0.002 / 0.5)]])
    assert abs(float(jnp.var(x)) - 0.25) < 0.02


@pytest.mark.parametrize("module, config", MH_KERNELS)
def test_mh_kernels_reach_correlated_gaussian(module, config):
    x, info = run(module, config, gaussian_energy(MEAN_2D, COV_2D), overdispersed_start(2), 400)
    assert_moments(x, MEAN_2D, COV_2D)
    assert 0.3 < float(jnp.mean(info.acceptance_rate)) < 1.0


@pytest.mark.parametrize("module, config", MH_KERNELS)
def test_mh_kernels_reach_mixture_mode_weights(module, config):
    x, _ = run(module, config, mixture_energy, overdispersed_start(1), 600)
    assert_close_iid(np.asarray(x[:, 0] > 0, np.float64), MIXTURE_P_POSITIVE, what="P(x > 0)")
    assert_close_iid(np.asarray(x[:, 0]), 0.5, what="mixture mean")


@pytest.mark.parametrize("module, config", MH_KERNELS)
def test_mh_kernels_reach_banana(module, config):
    # a milder start: from x1 ~ 7 the quartic tail stalls MALA (the proposal overshoots)
    x, _ = run(module, config, banana_energy, overdispersed_start(2, scale=1.0), 600)
    assert_moments(x, [0.0, 0.0], [[1.0, 0.0], [0.0, 1.5]])
    assert_close_iid(np.asarray(x[:, 0] ** 2 * x[:, 1]), 1.0, what="E[x1^2 x2]")


@pytest.mark.parametrize("module, config", [
    pytest.param(mala, LangevinConfig(0.2, temperature=2.0), id="mala-T2"),
    pytest.param(hmc, HMCConfig(0.2, 5, temperature=0.5), id="hmc-T0.5"),
])
def test_temperature_scales_gaussian_variance(module, config):
    x, _ = run(module, config, gaussian_energy([0.0], [[1.0]]), overdispersed_start(1), 300)
    assert_moments(x, [0.0], [[config.temperature]])


def test_decoupled_mala_is_exact_where_ula_is_not():
    config = LangevinConfig(step_size=0.3, noise_scale=0.5)
    energy_fn = gaussian_energy([0.0], [[1.0]])
    # start N(1, 1): this proposal contracts by 0.7 per step, so from |x| > 4 MALA rejects for long
    x_mala, _ = run(mala, config, energy_fn, overdispersed_start(1, scale=1.0), 400)
    x_ula, _ = run(langevin, config, energy_fn, overdispersed_start(1, scale=1.0), 400)
    assert_moments(x_mala, [0.0], [[1.0]])
    assert_moments(x_ula, [0.0], [[0.25 / (1 - 0.7**2)]])  # ULA's own stationary variance, 0.49


@pytest.mark.parametrize("step_size, low, high", [(1e-4, 0.99, 1.0), (50.0, 0.0, 0.05)])
def test_mala_acceptance_limits(step_size, low, high):
    x0 = jax.random.normal(jax.random.key(2), (NUM_CHAINS, 10))
    _, info = run(mala, LangevinConfig(step_size), gaussian_energy(np.zeros(10), np.eye(10)), x0, 20)
    assert low <= float(jnp.mean(info.acceptance_rate)) <= high


INVARIANCE_CASES = [
    pytest.param(mala, LangevinConfig(0.5, 0.9), {}, 1.0, id="mala-decoupled"),
    pytest.param(mala, LangevinConfig(0.4, 0.7, temperature=2.0), {}, 2.0, id="mala-temperature"),
    pytest.param(mala, LangevinConfig(0.6, grad_clip_norm=0.3), {}, 1.0, id="mala-clip-norm"),
    pytest.param(mala, LangevinConfig(0.6, 0.5, grad_clip_value=0.2), {}, 1.0, id="mala-clip-value"),
    pytest.param(mala, LangevinConfig(schedules.StepDecay(0.8, 0.5, 2), schedules.InverseTime(1.0)),
                 {}, 1.0, id="mala-schedules"),
    pytest.param(hmc, HMCConfig(0.4, 4, grad_clip_norm=0.5), {}, 1.0, id="hmc-clip-norm"),
    pytest.param(hmc, HMCConfig(0.3, 5), {"inverse_mass": jnp.array([2.0, 0.5])}, 1.0, id="hmc-mass"),
]


@pytest.mark.parametrize("module, config, kwargs, temperature", INVARIANCE_CASES)
def test_mh_kernels_leave_target_invariant(module, config, kwargs, temperature):
    cov = temperature * COV_2D
    x0 = np.random.default_rng(3).multivariate_normal(MEAN_2D, cov, NUM_CHAINS)
    x, info = run(module, config, gaussian_energy(MEAN_2D, COV_2D), x0, 10, **kwargs)
    assert_moments(x, MEAN_2D, cov)
    assert float(jnp.mean(info.acceptance_rate)) > 0.05  # the chains did move


def test_trace_and_thinning_shapes():
    energy_fn = gaussian_energy([0.0], [[1.0]])
    x0 = jnp.zeros((8, 1))
    fn = jax.jit(lambda key: mala.run_chain(key, x0, energy_fn, LangevinConfig(0.1), 12, thin=4))
    x, info = fn(jax.random.key(0))
    assert x.shape == (8, 1) and info.energy.shape == (8,) and info.is_accepted.dtype == bool
    with pytest.raises(ValueError, match="multiple of thin"):
        mala.run_chain(jax.random.key(0), x0, energy_fn, LangevinConfig(0.1), 10, thin=4)
