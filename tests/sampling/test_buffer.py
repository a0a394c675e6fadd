"""Replay buffer: restart fraction, write-back, FIFO, class partitions, pytrees, no recompiles."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.sampling import buffer, sphere
from sampling_testing import assert_close_iid


def constant_noise(value):
    """noise_fn giving a constituent pytree (features (n, 4, 3), mask (n, 4)) filled with `value`."""
    def noise_fn(key, num):
        del key
        return {"features": jnp.full((num, 4, 3), value, jnp.float32),
                "mask": jnp.full((num, 4), value > 0, bool)}
    return noise_fn


def indexed_state(capacity, num_classes=None):
    """A buffer whose slot i holds the value i (features and mask leaves)."""
    state = buffer.init(jax.random.key(0), constant_noise(0.0), capacity, num_classes=num_classes)
    values = jnp.arange(capacity, dtype=jnp.float32)
    samples = {"features": jnp.broadcast_to(values[:, None, None], (capacity, 4, 3)),
               "mask": jnp.broadcast_to((values > 0)[:, None], (capacity, 4))}
    return state._replace(samples=samples)


@pytest.mark.parametrize("restart_prob", [0.05, 0.3])
def test_restart_fraction_matches_probability(restart_prob):
    state = buffer.init(jax.random.key(0), constant_noise(0.0), 1000)
    starts, _ = jax.jit(buffer.sample, static_argnums=(2, 3))(
        jax.random.key(1), state, 20_000, constant_noise(1.0), restart_prob)
    is_restart = np.asarray(starts["features"][:, 0, 0] == 1.0, np.float64)
    np.testing.assert_array_equal(np.asarray(starts["mask"][:, 0]), is_restart.astype(bool))
    assert_close_iid(is_restart, restart_prob, what="restart fraction")
    # binomial check with the exact standard deviation as well
    assert abs(is_restart.mean() - restart_prob) < 5 * np.sqrt(restart_prob * (1 - restart_prob) / 20_000)


def test_replayed_starts_and_written_samples_come_back():
    state = indexed_state(100)
    starts, indices = buffer.sample(jax.random.key(2), state, 64, constant_noise(-1.0), 0.0)
    np.testing.assert_array_equal(starts["features"][:, 0, 0], indices.astype(np.float32))
    new = {"features": jnp.full((64, 4, 3), 7.0), "mask": jnp.zeros((64, 4), bool)}
    state = buffer.push(state, new, indices)
    np.testing.assert_array_equal(state.samples["features"][indices], new["features"])
    untouched = np.setdiff1d(np.arange(100), np.asarray(indices))
    np.testing.assert_array_equal(state.samples["features"][untouched, 0, 0], untouched.astype(np.float32))


def test_replayed_slots_are_uniform_over_the_whole_buffer():
    state = indexed_state(10)
    starts, indices = jax.jit(buffer.sample, static_argnums=(2, 3))(
        jax.random.key(5), state, 20_000, constant_noise(-1.0), 0.0)
    np.testing.assert_array_equal(starts["features"][:, 0, 0], indices.astype(np.float32))
    one_hot = np.asarray(indices)[:, None] == np.arange(10)
    assert_close_iid(one_hot.astype(np.float64), np.full(10, 0.1), what="slot frequencies")


def test_fifo_writes_oldest_slots_in_order():
    state = indexed_state(10)
    written = []
    for i in range(3):
        _, indices = buffer.sample(jax.random.key(i), state, 4, constant_noise(-1.0), replacement="fifo")
        written.append(np.asarray(indices))
        state = buffer.push(state, constant_noise(5.0)(None, 4), indices)
    np.testing.assert_array_equal(np.concatenate(written), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    assert int(state.ptr[0]) == 2


def test_class_partitions_are_respected():
    state = indexed_state(30, num_classes=3)
    class_ids = jnp.array([0, 2, 2, 1, 2] * 40)
    starts, indices = buffer.sample(jax.random.key(3), state, 200, constant_noise(-1.0), 0.0,
                                    class_ids=class_ids)
    np.testing.assert_array_equal(np.asarray(indices) // 10, np.asarray(class_ids))
    np.testing.assert_array_equal(starts["features"][:, 0, 0] // 10, class_ids.astype(np.float32))

    _, fifo = buffer.sample(jax.random.key(4), state, 5, constant_noise(-1.0), class_ids=class_ids[:5],
                            replacement="fifo")
    np.testing.assert_array_equal(fifo, [0, 20, 21, 10, 22])
    state = buffer.push(state, constant_noise(5.0)(None, 5), fifo)
    np.testing.assert_array_equal(state.ptr, [1, 1, 3])


def test_latent_vectors_on_the_sphere():
    noise_fn = lambda key, num: sphere.uniform(key, num, 3)
    state = buffer.init(jax.random.key(0), noise_fn, 500)
    starts, _ = buffer.sample(jax.random.key(1), state, 64, noise_fn, 0.5)
    np.testing.assert_allclose(np.linalg.norm(starts, axis=-1), 1.0, rtol=1e-5)


def test_jitted_sample_push_does_not_recompile():
    noise_fn = constant_noise(1.0)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state, class_ids):
        starts, indices = buffer.sample(key, state, 16, noise_fn, 0.05, class_ids=class_ids)
        moved = {"features": starts["features"] + 1.0, "mask": starts["mask"]}
        return buffer.push(state, moved, indices)

    chex.clear_trace_counter()
    state = buffer.init(jax.random.key(0), constant_noise(0.0), 64, num_classes=2)
    for i in range(3):
        state = step(jax.random.key(i), state, jnp.arange(16) % 2)
    np.testing.assert_array_equal(state.ptr, [24, 24])  # 8 writes per class per call


@pytest.mark.parametrize("call, match", [
    (lambda: buffer.init(jax.random.key(0), constant_noise(0.0), 10, num_classes=3), "multiple"),
    (lambda: buffer.sample(jax.random.key(0), indexed_state(10, 2), 4, constant_noise(0.0)), "class_ids"),
    (lambda: buffer.sample(jax.random.key(0), indexed_state(10), 4, constant_noise(0.0),
                           class_ids=jnp.zeros(4, int)), "num_classes"),
    (lambda: buffer.sample(jax.random.key(0), indexed_state(10), 4, constant_noise(0.0),
                           replacement="lifo"), "replacement"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
