"""The jitted CD step: loss wiring and gradient sign, learning a toy density, masks, scan, no recompiles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BATCH, NUM_CONSTITUENTS, data_batch

from jaxebm.models import MLPConfig, MLPEnergy, TransformerConfig, TransformerEnergy, energy_fn
from jaxebm.sampling import langevin
from jaxebm.train import CDConfig, create_train_state, ema_decay_at, make_cd_step, make_noise_fn, multiplicity_distribution


def host_copy(tree):
    return jax.tree.map(np.array, tree)


def test_one_step_lowers_data_energy_relative_to_negatives():
    """Chains frozen (step 0, noise 0): negatives are the buffer's noise samples; one Adam step on the
    CD loss must push E(data) down relative to E(negatives), and the reported loss must be Algorithm 1's."""
    model = TransformerEnergy(TransformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=32,
                                                projector_sizes=(16,), dropout_rate=0.0))
    config = CDConfig(batch_size=BATCH, buffer_size=BATCH, num_langevin_steps=1, step_size=0.0, noise_scale=0.0,
                      restart_prob=0.0, data_noise=0.0, lr=1e-3)
    noise_fn = make_noise_fn((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), NUM_CONSTITUENTS)
    x_pos, mask = data_batch(0)
    state = create_train_state(jax.random.key(0), model, config, x_pos, mask, noise_fn)
    negatives = np.array(state.buffer.samples)

    @jax.jit
    def energy_gap(params):
        return energy_fn(model, params, mask)(x_pos).mean() - energy_fn(model, params, None)(negatives).mean()

    params_before = host_copy(state.params)
    e_pos_before = float(energy_fn(model, params_before, mask)(x_pos).mean())
    gap_before = float(energy_gap(params_before))
    state, metrics = make_cd_step(model, config, noise_fn)(state, x_pos, mask)
    np.testing.assert_allclose(metrics["e_pos"], e_pos_before, rtol=1e-5)
    np.testing.assert_allclose(metrics["cd"], metrics["e_pos"] - metrics["e_neg"], rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], metrics["cd"] + config.alpha * metrics["reg"], rtol=1e-5)
    np.testing.assert_array_equal(state.buffer.samples, negatives)  # frozen chains wrote back their starts
    assert float(energy_gap(state.params)) < gap_before - 1e-3
    # EMA warm-up: the first update moves the average 90% of the way (decay (1 + 0) / (10 + 0) = 0.1).
    jax.tree.map(lambda ema, new, old: np.testing.assert_allclose(ema, 0.1 * old + 0.9 * new, rtol=1e-5, atol=1e-7),
                 host_copy(state.ema_params), host_copy(state.params), params_before)


def test_ema_decay_warms_up_to_its_maximum():
    decays = np.asarray([ema_decay_at(step, 0.999) for step in (0, 10, 100, 1000, 10_000)])
    np.testing.assert_allclose(decays[:3], [0.1, 11 / 20, 101 / 110], rtol=1e-6)
    assert np.all(np.diff(decays) > 0) and decays[-1] == np.float32(0.999)


def two_mode_data(key, num):
    """Jets of 2 constituents x 2 features, all four coordinates at +1.5 or all at -1.5 (std 0.3)."""
    key_sign, key_spread = jax.random.split(key)
    sign = jnp.where(jax.random.bernoulli(key_sign, 0.5, (num, 1, 1)), 1.0, -1.0)
    return 1.5 * sign + 0.3 * jax.random.normal(key_spread, (num, 2, 2))


def mean_correlation(x):
    """Mean off-diagonal correlation of the flattened coordinates (two-mode data: 0.96; noise: 0)."""
    corr = np.corrcoef(np.asarray(x).reshape(len(x), -1).T)
    return corr[~np.eye(len(corr), dtype=bool)].mean()


def test_tiny_ebm_learns_a_two_mode_toy():
    model = MLPEnergy(MLPConfig(hidden_sizes=(32, 32)))
    config = CDConfig(batch_size=64, buffer_size=1024, num_langevin_steps=20, step_size=0.02, noise_scale=0.2,
                      lr=1e-3, steps_per_epoch=10_000, ema_decay=0.99)
    noise_fn = make_noise_fn((0.0, 0.0), (2.0, 2.0), 2)
    mask = jnp.ones((64, 2), bool)
    state = create_train_state(jax.random.key(0), model, config, two_mode_data(jax.random.key(1), 64), mask,
                               noise_fn)
    step = make_cd_step(model, config, noise_fn)

    @jax.jit
    def evaluate(params, key):
        """E(data) - E(uniform on [-4, 4]^4), and model samples: 200 chain steps from the noise init."""
        key_data, key_uniform, key_start, key_chain = jax.random.split(key, 4)
        full = jnp.ones((2000, 2), bool)
        margin = (model.apply(params, jax.random.uniform(key_uniform, (2000, 2, 2), minval=-4, maxval=4), full).mean()
                  - model.apply(params, two_mode_data(key_data, 2000), full).mean())
        samples, _ = langevin.run_chain(key_chain, noise_fn(key_start, 2000), energy_fn(model, params, full),
                                        config.langevin_config, 200)
        return margin, samples

    margin_before, samples_before = evaluate(state.ema_params, jax.random.key(9))
    for key in jax.random.split(jax.random.key(2), 300):
        state, metrics = step(state, two_mode_data(key, 64), mask)
    margin_after, samples_after = evaluate(state.ema_params, jax.random.key(9))
    assert bool(metrics["is_finite"])
    assert abs(float(margin_before)) < 0.5 and float(margin_after) > 2.0
    assert abs(mean_correlation(samples_before)) < 0.1 and mean_correlation(samples_after) > 0.3


def test_step_does_not_recompile(tiny):
    state = tiny.new_state()
    for index in range(3):
        state, _ = tiny.step(state, *data_batch(index))
    assert tiny.step._cache_size() == 1


def test_non_finite_batch_keeps_the_state(tiny):
    state, _ = tiny.step(tiny.new_state(), *data_batch(0))
    before = host_copy((state.params, state.opt_state, state.ema_params, state.buffer))
    key_before, step_before = np.array(jax.random.key_data(state.key)), int(state.step)
    x, mask = data_batch(1)
    state, metrics = tiny.step(state, jnp.full_like(x, jnp.nan), mask)
    assert not bool(metrics["is_finite"])
    jax.tree.map(np.testing.assert_array_equal, host_copy((state.params, state.opt_state, state.ema_params,
                                                           state.buffer)), before)
    assert int(state.step) == step_before + 1
    assert not np.array_equal(jax.random.key_data(state.key), key_before)


def test_scanned_iterations_match_single_steps(tiny):
    config = CDConfig(**{**tiny.config.__dict__, "iterations_per_call": 2})
    scanned_step = make_cd_step(tiny.model, config, tiny.noise_fn)
    batches = [data_batch(index) for index in range(2)]
    stacked = tuple(jnp.stack(parts) for parts in zip(*batches))
    scanned, metrics = scanned_step(tiny.new_state(), *stacked)
    single = tiny.new_state()
    for batch in batches:
        single, _ = tiny.step(single, *batch)
    assert metrics["loss"].shape == (2,) and metrics["sample_mean"].shape == (2, 3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 host_copy((scanned.params, scanned.buffer)), host_copy((single.params, single.buffer)))
    np.testing.assert_array_equal(jax.random.key_data(scanned.key), jax.random.key_data(single.key))
    with pytest.raises(ValueError, match="x_pos must be"):
        scanned_step(scanned, *batches[0])


def test_mask_mode_freezes_padded_slots_and_keeps_multiplicities(tiny):
    probs = np.zeros(NUM_CONSTITUENTS + 1)
    probs[[1, 3]] = 0.5
    noise_fn = make_noise_fn((2.0, 0.0, 0.0), (1.0, 0.1, 0.2), NUM_CONSTITUENTS, multiplicity_probs=probs)
    config = CDConfig(**{**tiny.config.__dict__, "padding_mode": "mask"})
    x, _ = data_batch(0)
    mask = jnp.arange(NUM_CONSTITUENTS)[None, :] < jnp.asarray(np.arange(BATCH) % NUM_CONSTITUENTS + 1)[:, None]
    state = create_train_state(jax.random.key(0), tiny.model, config, x, mask, noise_fn)
    step = make_cd_step(tiny.model, config, noise_fn)
    for index in range(3):
        state, metrics = step(state, data_batch(index)[0], mask)
    features, buffer_mask = np.asarray(state.buffer.samples[0]), np.asarray(state.buffer.samples[1])
    np.testing.assert_allclose(multiplicity_distribution(buffer_mask)[[1, 3]].sum(), 1.0)
    assert np.all(buffer_mask == (np.arange(NUM_CONSTITUENTS) < buffer_mask.sum(1, keepdims=True)))
    assert np.all(features[~buffer_mask] == 0.0) and np.all(features[buffer_mask] != 0.0)
    assert bool(metrics["is_finite"]) and np.all(np.isfinite(metrics["sample_std"]))
