"""Train state of an energy-based model: one pytree holding everything a resumed run needs.

The replay buffer lives inside the state on the device, so a jitted step reads and writes it
without host round-trips, and a checkpoint of the state is a checkpoint of the chains too.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxebm.sampling import buffer
from jaxebm.sampling.buffer import BufferState

__all__ = ["TrainState", "create_train_state", "make_optimizer"]


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree; no static fields).

    step: int32 scalar, train-step calls made so far (skipped non-finite steps count too).
    params: model parameters (`model.init` output).
    opt_state: optax state of `make_optimizer(config)`; its counts drive the learning-rate schedule.
    ema_params: exponential moving average of `params` (evaluate these).
    buffer: replay buffer of chain end points (`jaxebm.sampling.buffer`); samples are the features
      `(capacity, N, F)` or the pair `(features, mask (capacity, N))`.
    key: typed PRNG key, split once per step.
    lr_scale: float32 scalar multiplying every parameter update (i.e. the learning rate); a
      rollback after a divergence halves it without recompiling the step.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    ema_params: Any
    buffer: BufferState
    key: jax.Array
    lr_scale: jax.Array


def make_optimizer(config) -> optax.GradientTransformation:
    """Global-norm gradient clipping then Adam with an exponentially decaying learning rate.

    Reads ``config.grad_clip_norm, lr, lr_decay, steps_per_epoch, adam_b1, adam_b2`` (a `CDConfig`):
    the learning rate is ``lr * lr_decay ** floor(update / steps_per_epoch)``.
    """
    schedule = optax.exponential_decay(
        init_value=config.lr, transition_steps=config.steps_per_epoch, decay_rate=config.lr_decay,
        staircase=True)
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2),
    )


def _buffer_classes(model: nn.Module, config) -> int | None:
    """Class partitions of the replay buffer: the model's K for class-conditional chains, else None."""
    return model.config.num_classes if getattr(config, "class_conditional", False) else None


def create_train_state(key, model: nn.Module, config, example_x: jax.Array, example_mask: jax.Array,
                       noise_fn: Callable) -> TrainState:
    """Initial state: parameters from ``model.init`` on an example batch, a fresh optimiser, EMA equal
    to the parameters, and a replay buffer of ``config.buffer_size`` samples of ``noise_fn``.

    Args:
      key: PRNG key (typed, or a legacy uint32 key, which is wrapped).
      config: a `CDConfig` (optimiser and buffer settings).
      example_x: ``(B, N, F)`` any batch of the training shape; example_mask: ``(B, N)`` bool.
      noise_fn: ``noise_fn(key, n)`` -> chain starts with leading axis n, the same function the
        train step gets (features, or ``(features, mask)`` in "mask" padding mode).
    With ``config.class_conditional`` the buffer is split into the model's ``num_classes`` partitions
    (``buffer_size`` must be a multiple of it).
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    key_params, key_buffer, key_train = jax.random.split(key, 3)
    params = jax.jit(model.init)(key_params, example_x, example_mask)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=make_optimizer(config).init(params),
        ema_params=jax.tree.map(jnp.copy, params),  # own buffers: the step donates the state
        buffer=buffer.init(key_buffer, noise_fn, config.buffer_size, num_classes=_buffer_classes(model, config)),
        key=key_train,
        lr_scale=jnp.ones((), jnp.float32),
    )
