"""Hamiltonian Monte Carlo, batched over chains: leapfrog trajectories and an MH test on the full
Hamiltonian (potential + kinetic energy) per chain.

Target exp(-E/T): potential U = E/T, momentum p ~ N(0, M) with M diagonal (`inverse_mass` is
M^-1, identity by default), H(x, p) = E(x)/T + 0.5 * sum(p**2 * inverse_mass) over free coordinates.
Gradient clipping changes the force field, not the validity: leapfrog with any deterministic
position-dependent force is volume-preserving and reversible, so the test on H stays exact (only
the acceptance drops). Frozen coordinates get no momentum and never move.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp

from jaxebm.sampling import chain, proposal, schedules
from jaxebm.sampling.schedules import ScheduleLike

__all__ = ["HMCConfig", "init", "step", "run_chain"]


@dataclass(frozen=True)
class HMCConfig:
    """HMC settings; frozen and hashable, static under jit.

    step_size: leapfrog step (float or schedule of the HMC step index).
    num_integration_steps: leapfrog steps per trajectory (= energy evaluations per HMC step).
    temperature, grad_clip_norm, grad_clip_value: as in `LangevinConfig`.
    """

    step_size: ScheduleLike = 0.1
    num_integration_steps: int = 10
    temperature: float = 1.0
    grad_clip_norm: float | None = None
    grad_clip_value: float | None = None

    def __post_init__(self):
        if self.num_integration_steps < 1:
            raise ValueError(f"num_integration_steps must be >= 1, got {self.num_integration_steps}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


init = chain.init  # cache energies (B,) and gradients at position (B, *event)


def _kinetic(momentum, inverse_mass, free) -> jax.Array:
    """0.5 * sum(p**2 * inverse_mass) per chain over free coordinates: `(B,)`."""
    return 0.5 * proposal.event_sum(proposal.keep_frozen(jnp.square(momentum) * inverse_mass, 0.0, free))


def _leapfrog(energy_fn, config, step_size, inverse_mass, free, x, momentum, grad):
    """`num_integration_steps` velocity-Verlet steps; returns (x, momentum, energy, grad)."""
    half = 0.5 * step_size

    def one_step(carry, _):
        x, momentum, _, grad = carry
        momentum = momentum + half * proposal.force(grad, config, free)
        x = proposal.keep_frozen(x + step_size * inverse_mass * momentum, x, free)
        energy, grad = proposal.energy_and_grad(energy_fn, x)
        momentum = momentum + half * proposal.force(grad, config, free)
        return (x, momentum, energy, grad), None

    energy = jnp.zeros(x.shape[:1], x.dtype)
    carry, _ = jax.lax.scan(one_step, (x, momentum, energy, grad), None,
                            length=config.num_integration_steps)
    return carry


def step(key, state: chain.ChainState, energy_fn: Callable, config: HMCConfig, *,
         frozen_mask=None, inverse_mass=None) -> tuple[chain.ChainState, chain.ChainInfo]:
    """One HMC trajectory + accept for every chain.

    Args:
      frozen_mask: as in `langevin.step`.
      inverse_mass: diagonal M^-1 broadcastable to `x (B, *event)` (e.g. `event` shaped), or None
        for the identity.
    """
    x = state.position
    free = proposal.free_mask(frozen_mask, x)
    inverse_mass = jnp.ones((), x.dtype) if inverse_mass is None else jnp.asarray(inverse_mass, x.dtype)
    step_size = schedules.value_at(config.step_size, state.count)
    key_momentum, key_accept = jax.random.split(key)

    momentum = jax.random.normal(key_momentum, x.shape, x.dtype) / jnp.sqrt(inverse_mass)
    momentum = proposal.keep_frozen(momentum, 0.0, free)
    new_x, new_momentum, new_energy, new_grad = _leapfrog(
        energy_fn, config, step_size, inverse_mass, free, x, momentum, state.energy_grad)

    log_ratio = ((state.energy - new_energy) / config.temperature
                 + _kinetic(momentum, inverse_mass, free) - _kinetic(new_momentum, inverse_mass, free))
    return chain.accept(key_accept, log_ratio, state, new_x, new_energy, new_grad,
                        lambda _, grad: proposal.grad_norm(grad, free))


def run_chain(key, x0: jax.Array, energy_fn: Callable, config: HMCConfig, num_steps: int, *,
              frozen_mask=None, inverse_mass=None, trace: bool = False,
              thin: int = 1) -> tuple[jax.Array, chain.ChainInfo]:
    """Run `num_steps` HMC steps from `x0 (B, *event)`; returns final positions and `ChainInfo`
    as in `langevin.run_chain` (`num_steps * num_integration_steps + 1` energy evaluations)."""
    def step_fn(k, s):
        return step(k, s, energy_fn, config, frozen_mask=frozen_mask, inverse_mass=inverse_mass)

    state, info = chain.run(step_fn, key, init(x0, energy_fn), num_steps, thin=thin, trace=trace)
    return state.position, info
