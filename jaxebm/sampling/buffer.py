"""Device-resident replay buffer of chain end points (persistent contrastive divergence).

The buffer holds any pytree of arrays with a leading capacity axis: constituent features
`(cap, N, 3)` together with masks `(cap, N)`, latent vectors `(cap, d)`, images. Everything is a
pure function on `BufferState` with fixed shapes: no Python lists, no host sync, and one trace per
shape, so it lives inside a jitted train step.

    state = buffer.init(key, noise_fn, capacity=10_000)
    starts, indices = buffer.sample(key, state, 128, noise_fn)   # 5% fresh noise, rest replayed
    ...  run chains from `starts` ...
    state = buffer.push(state, chain_ends, indices)

Replacement: `sample(..., replacement='random')` returns the drawn slots as write-back indices
(the chain end replaces the sample it came from); `'fifo'` returns the next slots after the write
pointer (oldest first). With `num_classes`, the capacity is split into equal contiguous partitions
and `class_ids` picks each chain's partition (for hybrid classifiers).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["BufferState", "init", "sample", "push"]


class BufferState(NamedTuple):
    """samples: pytree, leaves `(capacity, ...)`.
    ptr: int32 `(num_classes,)` (`(1,)` without classes): writes so far per partition, modulo its
    size; FIFO writes continue from here."""

    samples: object
    ptr: jax.Array


def _capacity(state: BufferState) -> int:
    return jax.tree.leaves(state.samples)[0].shape[0]


def _partition_size(state: BufferState) -> int:
    return _capacity(state) // state.ptr.shape[0]


def init(key, noise_fn: Callable, capacity: int, *, num_classes: int | None = None) -> BufferState:
    """Fill a buffer of `capacity` samples from `noise_fn(key, n) -> pytree with leading n`.

    `num_classes` splits the capacity into that many equal partitions (must divide `capacity`).
    """
    num_partitions = 1 if num_classes is None else num_classes
    if num_partitions < 1 or capacity % num_partitions:
        raise ValueError(f"capacity {capacity} must be a positive multiple of num_classes {num_classes}")
    return BufferState(noise_fn(key, capacity), jnp.zeros((num_partitions,), jnp.int32))


def _partition_ids(state: BufferState, batch_size: int, class_ids) -> jax.Array:
    """Partition of each chain `(B,)` int32; validates `class_ids` against the buffer's layout."""
    num_partitions = state.ptr.shape[0]
    if class_ids is None:
        if num_partitions > 1:
            raise ValueError(f"buffer has {num_partitions} class partitions: pass class_ids (B,)")
        return jnp.zeros((batch_size,), jnp.int32)
    if num_partitions == 1:
        raise ValueError("class_ids given but the buffer was built without num_classes")
    class_ids = jnp.asarray(class_ids, jnp.int32)
    if class_ids.shape != (batch_size,):
        raise ValueError(f"class_ids shape {class_ids.shape} must be (batch_size,) = ({batch_size},)")
    return class_ids


def _fifo_slots(state: BufferState, partition_ids: jax.Array) -> jax.Array:
    """Next free slot within its partition for every chain, in batch order: `(B,)`."""
    one_hot = jax.nn.one_hot(partition_ids, state.ptr.shape[0], dtype=jnp.int32)
    rank = jnp.sum((jnp.cumsum(one_hot, axis=0) - 1) * one_hot, axis=1)
    return (state.ptr[partition_ids] + rank) % _partition_size(state)


def sample(key, state: BufferState, batch_size: int, noise_fn: Callable, restart_prob=0.05, *,
           class_ids=None, replacement: str = "random"):
    """Chain starts: each chain restarts from `noise_fn` with probability `restart_prob`, else
    replays a uniformly drawn buffer entry (from its class partition when `class_ids (B,)` is given).

    Returns:
      starts: pytree like `state.samples` with leading `batch_size`.
      indices: int32 `(batch_size,)` buffer slots to `push` the chain ends to ('random': the drawn
        slots; 'fifo': the oldest slots of each partition).
    """
    if replacement not in ("random", "fifo"):
        raise ValueError(f"replacement must be 'random' or 'fifo', got {replacement!r}")
    partition_ids = _partition_ids(state, batch_size, class_ids)
    size = _partition_size(state)
    key_slot, key_restart, key_noise = jax.random.split(key, 3)
    offsets = partition_ids * size
    drawn = offsets + jax.random.randint(key_slot, (batch_size,), 0, size)
    is_restart = jax.random.bernoulli(key_restart, restart_prob, (batch_size,))
    noise = noise_fn(key_noise, batch_size)

    def choose(fresh, stored):
        replayed = stored[drawn]
        return jnp.where(is_restart.reshape((-1,) + (1,) * (fresh.ndim - 1)), fresh, replayed)

    starts = jax.tree.map(choose, noise, state.samples)
    indices = drawn if replacement == "random" else offsets + _fifo_slots(state, partition_ids)
    return starts, indices


def push(state: BufferState, samples, indices: jax.Array) -> BufferState:
    """Write `samples` (pytree, leading `B`) at `indices (B,)`; advance each partition's pointer by
    the number of its writes. Duplicate indices keep one of the writes."""
    new_samples = jax.tree.map(lambda stored, new: stored.at[indices].set(new), state.samples, samples)
    partition_ids = indices // _partition_size(state)
    counts = jnp.zeros_like(state.ptr).at[partition_ids].add(1)
    return BufferState(new_samples, (state.ptr + counts) % _partition_size(state))
