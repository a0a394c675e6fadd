"""Cross-check MALA against blackjax.mala (test-only dependency) on the same target.

blackjax proposes x + h grad log p + sqrt(2h) eps, i.e. our tied-noise MALA with step_size h and
log p = -E. Both run 4096 chains from the same starts; acceptance and moments must agree within
their combined Monte Carlo errors.
"""
import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.sampling import LangevinConfig, mala
from sampling_testing import assert_two_sample_close, gaussian_energy

NUM_CHAINS, NUM_STEPS, STEP_SIZE = 4096, 40, 0.25
ENERGY_FN = gaussian_energy([1.0, -0.5], [[1.0, 0.8], [0.8, 1.0]])


def run_blackjax(key, x0):
    logdensity_fn = lambda x: -ENERGY_FN(x[None])[0]
    kernel = blackjax.mala(logdensity_fn, STEP_SIZE)

    def one_step(states, key):
        keys = jax.random.split(key, NUM_CHAINS)
        states, info = jax.vmap(kernel.step)(keys, states)
        return states, info.acceptance_rate

    states, acceptance = jax.lax.scan(one_step, jax.vmap(kernel.init)(x0), jax.random.split(key, NUM_STEPS))
    return states.position, acceptance


def run_ours(key, x0):
    x, info = mala.run_chain(key, x0, ENERGY_FN, LangevinConfig(STEP_SIZE), NUM_STEPS, trace=True)
    return x, info.acceptance_rate


def test_mala_agrees_with_blackjax():
    x0 = 1.5 * jax.random.normal(jax.random.key(0), (NUM_CHAINS, 2))
    x_ours, acc_ours = jax.jit(run_ours)(jax.random.key(1), x0)
    x_bj, acc_bj = jax.jit(run_blackjax)(jax.random.key(2), x0)
    # per-chain mean acceptance over the run is i.i.d. across chains
    assert_two_sample_close(np.mean(acc_ours, axis=0), np.mean(acc_bj, axis=0), what="acceptance")
    assert_two_sample_close(acc_ours[0], acc_bj[0], what="first-step acceptance")
    x_ours, x_bj = np.asarray(x_ours, np.float64), np.asarray(x_bj, np.float64)
    assert_two_sample_close(x_ours, x_bj, what="mean")
    assert_two_sample_close(x_ours**2, x_bj**2, what="second moments")
    assert_two_sample_close(x_ours[:, :1] * x_ours[:, 1:], x_bj[:, :1] * x_bj[:, 1:], what="cross moment")
    assert 0.5 < float(jnp.mean(acc_ours)) < 0.95

