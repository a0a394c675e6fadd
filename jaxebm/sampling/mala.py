"""Metropolis-adjusted Langevin (MALA), batched over chains, exact for the proposal actually used.

Proposal over the free coordinates (target exp(-E/T)):

    q(x' | x) = N(x' ; m(x), noise_scale**2 I),   m(x) = x - step_size * clip(grad E(x)) / T
    log alpha = -(E(x') - E(x)) / T + log q(x | x') - log q(x' | x)        (NaN -> reject)

Exactness (the chain leaves exp(-E/T) invariant) holds for: decoupled or tied noise, any
temperature, frozen coordinates (the density runs over free ones only), gradient clipping of
either kind (m is still a deterministic function of x, and the reverse density uses m(x') with the
same clipping), step/noise schedules (each step is a valid MH kernel), and `bounds_mode='reflect'`
(folded-Gaussian density, see `proposal.log_q`; samples the target truncated to the box).
Not exact: `bounds_mode='clamp'` (point masses at the walls) and `project_fn` (the density ignores
the projection); use `jaxebm.sampling.sphere` for an exact sphere kernel.

Settings come from `LangevinConfig` (shared with ULA).
"""
from __future__ import annotations

from typing import Callable

import jax

from jaxebm.sampling import chain, proposal
from jaxebm.sampling.langevin import LangevinConfig

__all__ = ["LangevinConfig", "init", "step", "run_chain"]


init = chain.init  # cache energies (B,) and gradients at position (B, *event)


def step(key, state: chain.ChainState, energy_fn: Callable, config: LangevinConfig, *,
         frozen_mask=None, project_fn: Callable | None = None) -> tuple[chain.ChainState, chain.ChainInfo]:
    """One MALA step for every chain (one batched energy+gradient evaluation).

    `frozen_mask` and `project_fn` as in `langevin.step` (projection makes the test inexact).
    Returns the new state and a `ChainInfo` at the post-step position.
    """
    x, temperature = state.position, config.temperature
    free = proposal.free_mask(frozen_mask, x)
    step_size, noise_scale = proposal.step_and_noise(config, state.count)
    key_move, key_accept = jax.random.split(key)

    forward_mean = proposal.langevin_mean(x, state.energy_grad, step_size, config, free)
    new_x = proposal.propose(key_move, x, forward_mean, noise_scale, config, free)
    if project_fn is not None:
        new_x = proposal.keep_frozen(project_fn(new_x), x, free)
    new_energy, new_grad = proposal.energy_and_grad(energy_fn, new_x)
    reverse_mean = proposal.langevin_mean(new_x, new_grad, step_size, config, free)

    log_ratio = (-(new_energy - state.energy) / temperature
                 + proposal.log_q(x, reverse_mean, noise_scale, config, free)
                 - proposal.log_q(new_x, forward_mean, noise_scale, config, free))
    return chain.accept(key_accept, log_ratio, state, new_x, new_energy, new_grad,
                        lambda _, grad: proposal.grad_norm(grad, free))


def run_chain(key, x0: jax.Array, energy_fn: Callable, config: LangevinConfig, num_steps: int, *,
              frozen_mask=None, project_fn: Callable | None = None, trace: bool = False,
              thin: int = 1) -> tuple[jax.Array, chain.ChainInfo]:
    """Run `num_steps` MALA steps from `x0 (B, *event)` under `lax.scan` (`num_steps + 1`
    energy evaluations). Returns final positions and a `ChainInfo` as in `langevin.run_chain`."""
    def step_fn(k, s):
        return step(k, s, energy_fn, config, frozen_mask=frozen_mask, project_fn=project_fn)

    state, info = chain.run(step_fn, key, init(x0, energy_fn), num_steps, thin=thin, trace=trace)
    return state.position, info
