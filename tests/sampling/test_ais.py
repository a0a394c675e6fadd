"""AIS log Z against exact Gaussian normalising constants."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.sampling import AISConfig, HMCConfig, LangevinConfig, ais


def scaled_gaussian(dim):
    """E(x) = sum((x - 1)^2 / (2 s^2)) with s in [0.5, 2]: log Z = D/2 log(2 pi) + sum(log s)."""
    scales = jnp.linspace(0.5, 2.0, dim)
    log_z = 0.5 * dim * np.log(2 * np.pi) + float(jnp.sum(jnp.log(scales)))
    return (lambda x: 0.5 * jnp.sum(jnp.square((x - 1.0) / scales), axis=-1)), log_z


@pytest.mark.parametrize("dim", [1, 2, 10])
@pytest.mark.parametrize("transition", [LangevinConfig(0.1), HMCConfig(0.3, 3)], ids=["mala", "hmc"])
def test_log_z_within_four_standard_errors(dim, transition):
    energy_fn, exact = scaled_gaussian(dim)
    config = AISConfig(transition, num_temperatures=100)
    result = jax.jit(lambda key: ais.run(key, energy_fn, 1024, (dim,), config))(jax.random.key(dim))
    assert result.log_weights.shape == (1024,) and result.samples.shape == (1024, dim)
    assert 0.0 < float(result.log_z_se) < 0.1
    assert abs(float(result.log_z) - exact) < 4 * float(result.log_z_se)
    assert float(result.acceptance_rate) > 0.5


def test_log_mean_exp_with_se_matches_direct_formula():
    log_w = jnp.log(jnp.array([1.0, 2.0, 3.0, 6.0]))
    log_mean, se = ais.log_mean_exp_with_se(log_w)
    assert float(log_mean) == pytest.approx(np.log(3.0))
    assert float(se) == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2 / 3.0, rel=1e-5)


def test_transition_temperature_must_be_one():
    with pytest.raises(ValueError, match="temperature"):
        AISConfig(LangevinConfig(0.1, temperature=2.0))
