"""Chains on the unit sphere S^(d-1) for latent vectors `z (B, d)` (the NAE's on-manifold start:
latent Langevin on the sphere, then decode).

- `uniform`: exact uniform draws; `project`: `z / ||z||`.
- `run_langevin`: ULA with projection after each step (the NAE's latent chain).
  MALA with projection (`mala.run_chain(..., project_fn=project)`) is NOT exact: its MH density
  ignores the projection.
- `init` / `step` / `run_chain`: an exact tangent-space MALA. From z, the move is a Gaussian
  tangent vector v ~ N(m(z), noise^2 I) restricted to the tangent plane, with
  m(z) = -step_size * P_z clip(grad E(z)) / T and P_z = I - z z^T, mapped back by the central
  (gnomonic) projection z' = (z + v) / ||z + v||. That map is invertible, v = z'/(z.z') - z, with
  Jacobian (1 + |v|^2)^(d/2) relative to surface measure, so
      log q(z'|z) = -|v - m(z)|^2 / (2 noise^2) + (d/2) log(1 + |v|^2) + const.
  The reverse tangent vector v' = z/(z.z') - z' has |v'| = |v|, so the Jacobian terms cancel in the
  ratio, and the MH test for exp(-E/T) w.r.t. the uniform measure on the sphere is exact.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxebm.sampling import chain, langevin, proposal
from jaxebm.sampling.langevin import LangevinConfig

__all__ = ["project", "uniform", "run_langevin", "init", "step", "run_chain"]


def project(z: jax.Array) -> jax.Array:
    """Normalise the last axis: `(..., d) -> (..., d)` on the unit sphere."""
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True)


def uniform(key, num: int, dim: int, dtype=jnp.float32) -> jax.Array:
    """`num` uniform points on S^(dim-1): `(num, dim)`."""
    return project(jax.random.normal(key, (num, dim), dtype))


def run_langevin(key, z0: jax.Array, energy_fn: Callable, config: LangevinConfig, num_steps: int, *,
                 trace: bool = False, thin: int = 1) -> tuple[jax.Array, chain.ChainInfo]:
    """Projected ULA from `z0 (B, d)`: a Langevin step in R^d, then `project` (NAE latent chains)."""
    return langevin.run_chain(key, z0, energy_fn, config, num_steps, project_fn=project,
                              trace=trace, thin=thin)


def _tangent(z, v):
    """Component of `v (B, d)` orthogonal to `z (B, d)`."""
    return v - jnp.sum(v * z, axis=-1, keepdims=True) * z


def _log_q(z, new_z, mean, noise_scale):
    """log q(new_z | z) without the terms that cancel between both directions: `(B,)`."""
    v = new_z / jnp.sum(z * new_z, axis=-1, keepdims=True) - z
    return -jnp.sum(jnp.square(v - mean), axis=-1) / (2.0 * jnp.square(noise_scale))


def _mean(z, grad, step_size, config):
    return step_size * _tangent(z, proposal.force(grad, config, None))


init = chain.init  # cache energies (B,) and gradients at z (B, d), points on the sphere


def step(key, state: chain.ChainState, energy_fn: Callable,
         config: LangevinConfig) -> tuple[chain.ChainState, chain.ChainInfo]:
    """One exact tangent-space MALA step on the sphere (bounds in `config` are ignored)."""
    z = state.position
    step_size, noise_scale = proposal.step_and_noise(config, state.count)
    key_move, key_accept = jax.random.split(key)

    forward_mean = _mean(z, state.energy_grad, step_size, config)
    v = forward_mean + noise_scale * _tangent(z, jax.random.normal(key_move, z.shape, z.dtype))
    new_z = project(z + v)
    new_energy, new_grad = proposal.energy_and_grad(energy_fn, new_z)
    reverse_mean = _mean(new_z, new_grad, step_size, config)

    log_ratio = (-(new_energy - state.energy) / config.temperature
                 + _log_q(new_z, z, reverse_mean, noise_scale)
                 - _log_q(z, new_z, forward_mean, noise_scale))
    return chain.accept(key_accept, log_ratio, state, new_z, new_energy, new_grad,
                        lambda z, grad: jnp.linalg.norm(_tangent(z, grad), axis=-1))


def run_chain(key, z0: jax.Array, energy_fn: Callable, config: LangevinConfig, num_steps: int, *,
              trace: bool = False, thin: int = 1) -> tuple[jax.Array, chain.ChainInfo]:
    """Tangent-space MALA from `z0 (B, d)` on the sphere; returns final points and `ChainInfo`
    (grad_norm is the norm of the tangent gradient)."""
    def step_fn(k, s):
        return step(k, s, energy_fn, config)

    state, info = chain.run(step_fn, key, init(project(z0), energy_fn), num_steps, thin=thin,
                            trace=trace)
    return state.position, info
