"""Shared parts of the Langevin-type kernels: batched gradients, clipping, masks, bounds, the
Gaussian (or reflected-Gaussian) proposal with its log-density, and the Metropolis-Hastings accept.

Shapes: `x` is `(B, *event)` with one chain per row; per-chain quantities are `(B,)` and reduce over
the event axes. `free` is a boolean array broadcastable to `x` (True = the coordinate may move) or
None (every coordinate is free). Configs are read by attribute (`temperature`, `grad_clip_norm`,
`grad_clip_value`, and for Langevin proposals `step_size`, `noise_scale`, `bounds`, `bounds_mode`).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxebm.sampling import schedules

__all__ = [
    "event_sum", "free_mask", "keep_frozen", "energy_and_grad", "grad_norm", "force",
    "step_and_noise", "langevin_mean", "apply_bounds", "propose", "log_q", "metropolis",
]

_NUM_IMAGES = 2  # reflected images kept on each side of the nearest one (see `log_q`)


def event_sum(a: jax.Array) -> jax.Array:
    """Sum over every axis but the leading chain axis: `(B, *event) -> (B,)`."""
    return jnp.sum(a, axis=tuple(range(1, a.ndim)))


def free_mask(frozen_mask: jax.Array | None, x: jax.Array) -> jax.Array | None:
    """Boolean "may move" mask broadcastable to `x`.

    `frozen_mask` (True = frozen) has shape `x.shape` or a leading prefix of it, e.g. `(B, N)` for
    constituents `x (B, N, F)`; trailing axes are added so it broadcasts.
    """
    if frozen_mask is None:
        return None
    frozen_mask = jnp.asarray(frozen_mask, bool)
    if frozen_mask.ndim > x.ndim or x.shape[: frozen_mask.ndim] != frozen_mask.shape:
        raise ValueError(
            f"frozen_mask shape {frozen_mask.shape} must be a leading prefix of x shape {x.shape}")
    return ~frozen_mask.reshape(frozen_mask.shape + (1,) * (x.ndim - frozen_mask.ndim))


def keep_frozen(new: jax.Array, old: jax.Array, free: jax.Array | None) -> jax.Array:
    """`new` on free coordinates, `old` (bit-identical) on frozen ones."""
    return new if free is None else jnp.where(free, new, old)


def energy_and_grad(energy_fn: Callable, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-chain energies `(B,)` and their gradients `(B, *event)` from one batched forward/backward.

    Chains are independent, so the gradient of the summed energy is each chain's own gradient.
    """
    (_, energy), grad = jax.value_and_grad(lambda y: _sum_with_aux(energy_fn(y)), has_aux=True)(x)
    if energy.shape != x.shape[:1]:
        raise ValueError(f"energy_fn must return one energy per chain, shape {x.shape[:1]}; "
                         f"got {energy.shape} for x of shape {x.shape}")
    return energy, grad


def _sum_with_aux(energy: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.sum(energy), energy


def grad_norm(grad: jax.Array, free: jax.Array | None) -> jax.Array:
    """Per-chain L2 norm of the gradient over the free coordinates: `(B,)`."""
    return jnp.sqrt(event_sum(jnp.square(keep_frozen(grad, 0.0, free))))


def force(grad: jax.Array, config, free: jax.Array | None) -> jax.Array:
    """Drift direction `-clip(grad E) / T`, zero on frozen coordinates.

    Elementwise clipping (`config.grad_clip_value`) comes first, then per-chain norm clipping
    (`config.grad_clip_norm`, the norm over free coordinates). Both act on grad E before the
    division by the temperature. The map x -> force is deterministic, which keeps MALA/HMC exact.
    """
    grad = keep_frozen(grad, 0.0, free)
    if config.grad_clip_value is not None:
        grad = jnp.clip(grad, -config.grad_clip_value, config.grad_clip_value)
    if config.grad_clip_norm is not None:
        norm = grad_norm(grad, None)
        scale = jnp.minimum(1.0, config.grad_clip_norm / jnp.maximum(norm, 1e-30))
        grad = grad * scale.reshape((-1,) + (1,) * (grad.ndim - 1))
    return -grad / config.temperature


def step_and_noise(config, count) -> tuple[jax.Array, jax.Array]:
    """Step size and noise scale at step `count`; tied noise (None) is `sqrt(2 * step_size)`."""
    step_size = schedules.value_at(config.step_size, count)
    if config.noise_scale is None:
        return step_size, jnp.sqrt(2.0 * step_size)
    return step_size, schedules.value_at(config.noise_scale, count)


def langevin_mean(x, grad, step_size, config, free) -> jax.Array:
    """Proposal mean `x - step_size * clip(grad E(x)) / T` (frozen coordinates unchanged)."""
    return x + step_size * force(grad, config, free)


def _fold(z: jax.Array, low: float, high: float) -> jax.Array:
    """Reflect `z` into `[low, high]` as many times as needed (mirror at both walls)."""
    width = high - low
    u = jnp.mod(z - low, 2.0 * width)
    return low + width - jnp.abs(u - width)


def apply_bounds(x: jax.Array, config) -> jax.Array:
    """Clamp or reflect into `config.bounds = (low, high)` (None for no bounds)."""
    if config.bounds is None:
        return x
    low, high = config.bounds
    return jnp.clip(x, low, high) if config.bounds_mode == "clamp" else _fold(x, low, high)


def propose(key, x, mean, noise_scale, config, free) -> jax.Array:
    """`mean + noise_scale * eps`, then bounds; frozen coordinates keep `x` bit-identically."""
    eps = jax.random.normal(key, x.shape, x.dtype)
    return keep_frozen(apply_bounds(mean + noise_scale * eps, config), x, free)


def log_q(y, mean, noise_scale, config, free) -> jax.Array:
    """Log proposal density of `y` given `mean`, per chain `(B,)`, over the free coordinates.

    Constants shared by the forward and reverse densities (normalisation) are dropped. With
    `bounds_mode='reflect'` the density is the folded Gaussian: a sum over the mirror images of `y`,
    the nearest image of each family plus `_NUM_IMAGES` periods either side (exact to float precision
    while `noise_scale` is below the box width). With 'clamp' the Gaussian density is used, which
    ignores the point masses at the walls: MH with clamping is not exact.
    """
    inv_var = 0.5 / jnp.square(noise_scale)
    if config.bounds is None or config.bounds_mode == "clamp":
        log_density = -jnp.square(y - mean) * inv_var
    else:
        low, high = config.bounds
        period = 2.0 * (high - low)
        offsets = period * jnp.arange(-_NUM_IMAGES, _NUM_IMAGES + 1, dtype=y.dtype)

        def family(image):  # images image + k * period, k around the one nearest to `mean`
            nearest = image + period * jnp.round((mean - image) / period)
            images = nearest[..., None] + offsets
            return jax.nn.logsumexp(-jnp.square(images - mean[..., None]) * inv_var, axis=-1)

        log_density = jnp.logaddexp(family(y), family(2.0 * low - y))
    return event_sum(keep_frozen(log_density, 0.0, free))


def metropolis(key, log_ratio, proposed: tuple, current: tuple):
    """Per-chain Metropolis-Hastings accept.

    Args:
      log_ratio: `(B,)` log acceptance ratio; NaN rejects.
      proposed, current: tuples of arrays with leading chain axis `B`.
    Returns:
      (selected tuple, acceptance probability `(B,)`, is_accepted `(B,)` bool).
    """
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    is_accepted = jax.random.uniform(key, log_ratio.shape) < accept_prob

    def select(new, old):
        return jnp.where(is_accepted.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    return tuple(map(select, proposed, current)), accept_prob, is_accepted
