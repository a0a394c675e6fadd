"""Parts shared by the energy networks: initialisers, activations, dense layers, the energy closure.

Initialisers (``init`` option of the model configs):
  "torch": PyTorch's default for ``nn.Linear``: kernel and bias both ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
    The paper's public code inherits it. Its input gradients at initialisation are much smaller than
    with Flax's default, which kept the Langevin chains from running away (docs: REFERENCE 1).
  "lecun": Flax's default, kernel ``lecun_normal`` (truncated normal, variance 1/fan_in), bias zero.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["INITS", "ACTIVATIONS", "activation", "class_energy_fn", "dense", "energy_fn", "padded_to_zero", "torch_bias_init"]

INITS = ("torch", "lecun")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "swish": nn.swish,
    "tanh": jnp.tanh,
    "softplus": nn.softplus,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (one of ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def torch_bias_init(fan_in: int) -> Callable:
    """Bias initialiser ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch ``nn.Linear``)."""
    bound = 1.0 / jnp.sqrt(float(fan_in))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dense(x: jax.Array, features: int, init: str, name: str | None = None, dot_general: Callable | None = None) -> jax.Array:
    """``nn.Dense(features)`` applied to ``x (..., fan_in)`` with the ``init`` scheme (see module doc).

    Call inside a compact module's ``__call__``; the fan-in is read from ``x``. ``dot_general``: the
    product (None: ``lax.dot_general``; `jaxebm.models.precision.dense_dot_general` gives the policy's).
    """
    if init == "torch":
        kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # bound 1/sqrt(fan_in)
        bias_init = torch_bias_init(x.shape[-1])
    elif init == "lecun":
        kernel_init, bias_init = nn.initializers.lecun_normal(), nn.initializers.zeros
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return nn.Dense(features, kernel_init=kernel_init, bias_init=bias_init, name=name,
                    dot_general=dot_general)(x)


def padded_to_zero(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``x (B, N, F)`` with the slots where ``mask (B, N)`` is False set to 0 (no gradient flows to them)."""
    return jnp.where(mask[..., None], x, 0.0)


def energy_fn(model: nn.Module, params, mask: jax.Array | None = None) -> Callable[[jax.Array], jax.Array]:
    """Batched energy closure for the samplers: ``x (B, N, F) -> E(x) (B,)``.

    ``params`` pass through ``stop_gradient``, so chains never feed the parameter gradient; dropout
    is off. ``mask (B, N)`` bool is fixed for the chain (None: every slot is a real constituent).
    """
    frozen_params = jax.lax.stop_gradient(params)

    def energy(x: jax.Array) -> jax.Array:
        chain_mask = jnp.ones(x.shape[:2], bool) if mask is None else mask
        return model.apply(frozen_params, x, chain_mask, deterministic=True)

    return energy


def class_energy_fn(model: nn.Module, params, mask: jax.Array, class_ids: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """Sampler closure of a hybrid model's class energy ``x (B, N, F) -> E(x, y) = -g(x)_y (B,)`` for
    ``class_ids y (B,)`` int; ``model`` has a ``logits`` method (`TransformerEnergy` with ``num_classes``).
    Parameters frozen (``stop_gradient``), dropout off, ``mask (B, N)`` fixed, as `energy_fn`."""
    frozen_params = jax.lax.stop_gradient(params)

    def energy(x: jax.Array) -> jax.Array:
        logits = model.apply(frozen_params, x, mask, deterministic=True, method="logits")
        return -jnp.take_along_axis(logits, class_ids[:, None], axis=1)[:, 0]

    return energy
