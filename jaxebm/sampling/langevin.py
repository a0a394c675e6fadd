"""Unadjusted Langevin (ULA) in the EBM form, batched over chains.

One step, with target density exp(-E/T):

    x <- bounds( x - step_size * clip(grad E(x)) / T + noise_scale * eps ),   eps ~ N(0, I)

`noise_scale=None` ties the noise to the step, `noise_scale = sqrt(2 * step_size)`, the
discretised Langevin diffusion of exp(-E/T) (exact as step_size -> 0). The papers decouple the two
(e.g. step 0.1, noise 0.005); then the chain's small-step limit is exp(-E/T_eff) with
`T_eff = T * noise_scale**2 / (2 * step_size)`, i.e. a much colder target. Use `jaxebm.sampling.mala`
for the Metropolis-adjusted (exact) version of the same proposal.

`energy_fn(x) -> (B,)` is batched: `x (B, *event)`, one energy per chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.sampling import chain, proposal
from jaxebm.sampling.schedules import ScheduleLike

__all__ = ["LangevinConfig", "LangevinState", "init", "step", "run_chain"]


@dataclass(frozen=True)
class LangevinConfig:
    """Langevin proposal settings (shared by ULA and MALA); frozen and hashable, static under jit.

    step_size: float or schedule (`jaxebm.sampling.schedules`) of the step index.
    noise_scale: float, schedule, or None for tied noise `sqrt(2 * step_size)`.
    temperature: T of the target exp(-E/T).
    grad_clip_norm: clip each chain's gradient norm (over free coordinates) to this value, or None.
    grad_clip_value: clip each gradient element to [-v, v], or None.
    bounds: `(low, high)` applied to every coordinate after each move, or None.
    bounds_mode: 'clamp' or 'reflect' (mirror at the walls).
    """

    step_size: ScheduleLike = 0.01
    noise_scale: ScheduleLike | None = None
    temperature: float = 1.0
    grad_clip_norm: float | None = None
    grad_clip_value: float | None = None
    bounds: tuple[float, float] | None = None
    bounds_mode: str = "clamp"

    def __post_init__(self):
        if self.bounds_mode not in ("clamp", "reflect"):
            raise ValueError(f"bounds_mode must be 'clamp' or 'reflect', got {self.bounds_mode!r}")
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"bounds must be (low, high) with low < high, got {self.bounds}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


class LangevinState(NamedTuple):
    """position: `(B, *event)`; count: int32 scalar step index (read by schedules)."""

    position: jax.Array
    count: jax.Array


def init(position: jax.Array, energy_fn: Callable | None = None) -> LangevinState:
    """Start chains at `position (B, *event)`. ULA caches nothing, so `energy_fn` is unused."""
    del energy_fn
    return LangevinState(jnp.asarray(position), jnp.zeros((), jnp.int32))


def step(key, state: LangevinState, energy_fn: Callable, config: LangevinConfig, *,
         frozen_mask=None, project_fn: Callable | None = None) -> tuple[LangevinState, chain.ChainInfo]:
    """One ULA step for every chain.

    Args:
      frozen_mask: bool, `x.shape` or a leading prefix (e.g. `(B, N)` for `x (B, N, F)`); True
        coordinates never move (bit-identical).
      project_fn: applied to the new position after the move and bounds (e.g. onto a sphere);
        frozen coordinates are restored afterwards.
    Returns:
      (new state, ChainInfo with energy and gradient norm at the starting position).
    """
    x = state.position
    free = proposal.free_mask(frozen_mask, x)
    energy, grad = proposal.energy_and_grad(energy_fn, x)
    step_size, noise_scale = proposal.step_and_noise(config, state.count)
    mean = proposal.langevin_mean(x, grad, step_size, config, free)
    new_x = proposal.propose(key, x, mean, noise_scale, config, free)
    if project_fn is not None:
        new_x = proposal.keep_frozen(project_fn(new_x), x, free)
    ones = jnp.ones_like(energy)
    info = chain.ChainInfo(energy, proposal.grad_norm(grad, free), ones, ones.astype(bool))
    return LangevinState(new_x, state.count + 1), info


def run_chain(key, x0: jax.Array, energy_fn: Callable, config: LangevinConfig, num_steps: int, *,
              frozen_mask=None, project_fn: Callable | None = None, trace: bool = False,
              thin: int = 1) -> tuple[jax.Array, chain.ChainInfo]:
    """Run `num_steps` ULA steps from `x0 (B, *event)` under `lax.scan`.

    Returns the final positions `(B, *event)` and a `ChainInfo` (leaves `(num_steps // thin, B)`
    if `trace`, else the last step's `(B,)`). Not jitted: callers jit, with `energy_fn`, `config`,
    `num_steps`, `trace`, `thin` and `project_fn` static.
    """
    def step_fn(k, s):
        return step(k, s, energy_fn, config, frozen_mask=frozen_mask, project_fn=project_fn)

    state, info = chain.run(step_fn, key, init(x0), num_steps, thin=thin, trace=trace)
    return state.position, info
