"""The jitted CD step: loss and gradient against a closed-form energy, chain ends written to the buffer,
learning a toy density, masks, scan, no recompiles."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BATCH, NUM_CONSTITUENTS, NUM_FEATURES, data_batch

from jaxebm.models import MLPConfig, MLPEnergy, TransformerConfig, TransformerEnergy, energy_fn
from jaxebm.sampling import buffer, langevin
from jaxebm.train import CDConfig, create_train_state, ema_decay_at, make_cd_step, make_noise_fn, multiplicity_distribution
from jaxebm.train.cd import _cd_loss


def host_copy(tree):
    return jax.tree.map(np.array, tree)


def test_one_step_lowers_data_energy_relative_to_negatives():
    """Chains frozen (step 0, noise 0): negatives are the buffer's noise samples; one Adam step on the
    CD loss must push E(data) down relative to E(negatives). (The loss value itself is checked against
    a closed-form energy in `test_loss_and_gradient_match_a_closed_form_energy`.)"""
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


# --- loss and gradient against a closed-form energy --------------------------------------------------

W, C = np.array([0.6, -0.4, 1.1]), 0.3


class QuadraticEnergy(nn.Module):
    """``E(x) = 0.5 * sum_{real n, f} w_f x_nf^2 + c``: energy and parameter gradient in closed form."""

    @nn.compact
    def __call__(self, x, mask, *, deterministic=True):
        w = self.param("w", lambda key, shape: jnp.asarray(W, jnp.float32), (NUM_FEATURES,))
        c = self.param("c", lambda key, shape: jnp.asarray(C, jnp.float32), ())
        return 0.5 * jnp.einsum("bnf,bn,f->b", jnp.square(x), mask.astype(x.dtype), w) + c


def fixed_negatives(key, num):
    """noise_fn ignoring its key: the same recognisable starts (num, N, F) on every call."""
    del key
    return jnp.asarray(0.5 + np.random.default_rng(num).standard_normal((num, NUM_CONSTITUENTS, NUM_FEATURES)),
                       jnp.float32)


def quadratic_loss_and_grad(x_pos, mask_pos, x_neg, alpha):
    """numpy float64: loss, cd, reg, E+, E- and d loss / d (w, c) of `QuadraticEnergy`, negatives all real."""
    def energy_and_dw(x, mask):
        squares = 0.5 * np.einsum("bnf,bn->bf", np.square(np.asarray(x, np.float64)), np.asarray(mask, np.float64))
        return squares @ W + C, squares  # E (B,), dE/dw (B, F); dE/dc = 1
    e_pos, dw_pos = energy_and_dw(x_pos, mask_pos)
    e_neg, dw_neg = energy_and_dw(x_neg, np.ones(x_neg.shape[:2]))
    cd, reg = e_pos.mean() - e_neg.mean(), np.mean(e_pos**2 + e_neg**2)
    grad_w = (dw_pos.mean(0) - dw_neg.mean(0)
              + alpha * np.mean(2 * e_pos[:, None] * dw_pos + 2 * e_neg[:, None] * dw_neg, axis=0))
    grad_c = alpha * np.mean(2 * e_pos + 2 * e_neg)
    return cd + alpha * reg, cd, reg, e_pos, e_neg, np.append(grad_w, grad_c)


def with_mask(padding_mode, noise_fn):
    """"mask" mode: the noise_fn's starts with an all-True mask."""
    if padding_mode == "zeros":
        return noise_fn
    return lambda key, num: (noise_fn(key, num), jnp.ones((num, NUM_CONSTITUENTS), bool))


@pytest.mark.parametrize("padding_mode", ["zeros", "mask"])
def test_loss_and_gradient_match_a_closed_form_energy(padding_mode):
    """Frozen chains (step 0, noise 0) all restarted (restart 1) from fixed starts: the negatives are
    known, so the loss mean(E+) - mean(E-) + alpha mean(E+^2 + E-^2), its parts and its gradient are
    closed form, and the buffer slots written hold those starts. Data carry garbage in the slots their
    mask calls padded: the model sees them in "zeros" mode only."""
    model = QuadraticEnergy()
    config = CDConfig(batch_size=BATCH, buffer_size=2 * BATCH, num_langevin_steps=2, step_size=0.0,
                      noise_scale=0.0, restart_prob=1.0, data_noise=0.0, alpha=0.3, lr=1e-3,
                      padding_mode=padding_mode)
    x_pos, _ = data_batch(0)
    mask_pos = jnp.arange(NUM_CONSTITUENTS)[None, :] < (jnp.arange(BATCH) % NUM_CONSTITUENTS + 1)[:, None]
    x_pos = jnp.where(mask_pos[..., None], x_pos, 2.0)
    x_neg, all_real = fixed_negatives(None, BATCH), jnp.ones((BATCH, NUM_CONSTITUENTS), bool)
    noise_fn = with_mask(padding_mode, fixed_negatives)
    model_mask = mask_pos if padding_mode == "mask" else all_real
    loss, cd, reg, e_pos, e_neg, grad = quadratic_loss_and_grad(x_pos, model_mask, x_neg, config.alpha)

    state = create_train_state(jax.random.key(0), model, config, x_pos, mask_pos, noise_fn)
    probs = np.full(NUM_CONSTITUENTS + 1, 1.0 / NUM_CONSTITUENTS) * (np.arange(NUM_CONSTITUENTS + 1) > 0)
    other_starts = make_noise_fn((0.0,) * 3, (1.0,) * 3, NUM_CONSTITUENTS,
                                 multiplicity_probs=probs if padding_mode == "mask" else None)
    state = state.replace(buffer=buffer.init(jax.random.key(1), other_starts, config.buffer_size))
    old_buffer, params_before = host_copy(state.buffer.samples), host_copy(state.params)
    # the loss function itself: value and full parameter gradient
    (value, _), grads = jax.value_and_grad(_cd_loss, has_aux=True)(
        state.params, model, config, jax.random.key(2), x_pos, model_mask, x_neg, all_real)
    np.testing.assert_allclose(value, loss, rtol=1e-5)
    np.testing.assert_allclose(np.append(grads["params"]["w"], grads["params"]["c"]), grad, rtol=1e-4, atol=1e-6)
    # the step: reported parts, the raw gradient norm, Adam's first update -lr * sign(grad) (b1 = 0)
    state, metrics = make_cd_step(model, config, noise_fn)(state, x_pos, mask_pos)
    for name, expected in [("loss", loss), ("cd", cd), ("reg", reg), ("e_pos", e_pos.mean()),
                           ("e_neg", e_neg.mean()), ("grad_norm", np.linalg.norm(grad))]:
        np.testing.assert_allclose(metrics[name], expected, rtol=1e-5, err_msg=name)
    update = np.append(state.params["params"]["w"] - params_before["params"]["w"],
                       state.params["params"]["c"] - params_before["params"]["c"])
    assert np.all(np.abs(grad) > 1e-3)  # sign(grad) is well defined
    np.testing.assert_allclose(update, -config.lr * np.sign(grad), rtol=1e-3)
    # the written buffer slots hold the (unmoved) restarts: rows of fixed_negatives
    old_x, new_x = old_buffer, host_copy(state.buffer.samples)
    if padding_mode == "mask":
        (old_x, _), (new_x, new_mask) = old_x, new_x
    else:
        new_mask = np.ones(new_x.shape[:2], bool)
    written = np.any(new_x != old_x, axis=(1, 2))
    np.testing.assert_array_equal(new_mask[written], True)
    assert BATCH // 2 <= written.sum() <= BATCH  # 16 draws from 32 slots: ~12 distinct slots
    distance = np.abs(new_x[written][:, None] - np.asarray(x_neg)[None]).max(axis=(2, 3))
    np.testing.assert_array_equal(distance.min(axis=1), 0.0)


def test_data_noise_is_added_to_real_slots_with_its_std():
    """E = 0.5 sum_real x^2 (w = 1, c = 0) on data x+ = 0: E(x+ + noise) = 0.5 sigma^2 chi^2(real coords)."""
    model = QuadraticEnergy()
    config = CDConfig(batch_size=BATCH, buffer_size=BATCH, num_langevin_steps=1, step_size=0.0, noise_scale=0.0,
                      data_noise=0.5, padding_mode="mask")
    mask = jnp.arange(NUM_CONSTITUENTS)[None, :] < (jnp.arange(BATCH) % 2 + 1)[:, None]  # 1 or 2 real slots
    noise_fn = with_mask("mask", fixed_negatives)
    x_pos = jnp.zeros((BATCH, NUM_CONSTITUENTS, NUM_FEATURES))
    state = create_train_state(jax.random.key(0), model, config, x_pos, mask, noise_fn)
    state = state.replace(params={"params": {"w": jnp.ones(NUM_FEATURES), "c": jnp.zeros(())}})
    step = make_cd_step(model, config, noise_fn)
    e_pos = []
    for _ in range(20):
        state, metrics = step(state, x_pos, mask)
        e_pos.append(float(metrics["e_pos"]))  # each step changes w and c by lr = 1e-4 at most
    real_coordinates = float(mask.sum()) * NUM_FEATURES / BATCH  # per jet, on average
    expected, std = 0.5 * 0.25 * real_coordinates, 0.5 * 0.25 * np.sqrt(2 * real_coordinates / BATCH / 20)
    assert abs(np.mean(e_pos) - expected) < 5 * std


# --- the replay buffer receives the chain ends -------------------------------------------------------

class PooledEnergy(nn.Module):
    """Tiny set energy ``E = 0.5 ||sum_real tanh(x_n W + b)||^2``: a padded slot counted as real changes
    the gradient on the real ones (b != 0)."""

    @nn.compact
    def __call__(self, x, mask, *, deterministic=True):
        h = jnp.tanh(nn.Dense(4, bias_init=nn.initializers.normal(1.0))(x))
        return 0.5 * jnp.sum(jnp.square(jnp.sum(jnp.where(mask[..., None], h, 0.0), axis=1)), axis=-1)


def descend(model, params, x, mask, step_size, num_steps):
    """Noise-free Langevin written out: ``x <- x - step_size * grad_x E(x)`` on real slots."""
    grad_fn = jax.jit(jax.grad(lambda y: model.apply(params, y, mask).sum()))
    for _ in range(num_steps):
        x = jnp.where(mask[..., None], x - step_size * grad_fn(x), x)
    return np.asarray(x)


@pytest.mark.parametrize("padding_mode", ["zeros", "mask"])
def test_buffer_holds_the_chain_ends_at_the_sampled_slots(padding_mode):
    """No restarts, noise-free moving chains from a random buffer: every written slot holds the chain
    end of its own old content (descended independently here), so the step wrote chain ends, not
    starts, to the slots it drew them from."""
    model = PooledEnergy()
    config = CDConfig(batch_size=BATCH, buffer_size=2 * BATCH, num_langevin_steps=3, step_size=0.2,
                      noise_scale=0.0, restart_prob=0.0, padding_mode=padding_mode)
    probs = np.array([0.0, 0.3, 0.0, 0.3, 0.4]) if padding_mode == "mask" else None  # multiplicities 1, 3, 4
    noise_fn = make_noise_fn((1.0, 0.0, 0.0), (1.0, 0.5, 0.5), NUM_CONSTITUENTS, multiplicity_probs=probs)
    x, mask = data_batch(0)
    state = create_train_state(jax.random.key(0), model, config, x, mask, noise_fn)
    old, params = host_copy(state.buffer.samples), host_copy(state.params)
    state, _ = make_cd_step(model, config, noise_fn)(state, x, mask)
    new = host_copy(state.buffer.samples)
    (old_x, old_mask), (new_x, new_mask) = (old, new) if padding_mode == "mask" else (
        (old, np.ones(old.shape[:2], bool)), (new, np.ones(new.shape[:2], bool)))
    np.testing.assert_array_equal(new_mask, old_mask)
    written = np.any(old_x != new_x, axis=(1, 2))
    assert BATCH // 2 <= written.sum() <= BATCH  # 16 draws from 32 slots: ~12 distinct slots
    ends = descend(model, params, old_x[written], old_mask[written], config.step_size, config.num_langevin_steps)
    assert np.abs(ends - old_x[written]).max() > 0.05  # the chains moved
    np.testing.assert_allclose(new_x[written], ends, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(new_x[~new_mask], 0.0)
