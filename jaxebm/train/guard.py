"""The in-step half of the driver's non-finite policy, shared by every step: the optimiser update scaled by the
state's ``lr_scale`` (which a rollback lowers), and the guard that keeps the old state when the loss or the
gradient is not finite. The other half, rollback to the last checkpoint, is the driver's (`jaxebm.train.loop`).

    params, opt_state = scaled_update(optimizer, grads, state.opt_state, state.params, state.lr_scale)
    (params, opt_state), is_finite, grad_norm = keep_if_finite(
        loss, grads, (params, opt_state), (state.params, state.opt_state))
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["keep_if_finite", "scaled_update"]


def scaled_update(optimizer: optax.GradientTransformation, grads: Any, opt_state: optax.OptState, params: Any,
                  lr_scale: jax.Array) -> tuple[Any, optax.OptState]:
    """``(params, opt_state)`` after one optax update whose step is multiplied by ``lr_scale`` (a scalar)."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, jax.tree.map(lambda u: u * lr_scale, updates)), opt_state


def keep_if_finite(loss: jax.Array, grads: Any, new: Any, old: Any) -> tuple[Any, jax.Array, jax.Array]:
    """``new`` where ``loss`` and the global norm of ``grads`` are finite, else ``old`` (pytrees of one structure),
    selected leaf by leaf inside the jitted step; also returns ``is_finite`` and the gradient norm."""
    grad_norm = optax.tree.norm(grads)
    is_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    return jax.tree.map(lambda n, o: jnp.where(is_finite, n, o), new, old), is_finite, grad_norm
