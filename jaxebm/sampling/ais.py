"""Annealed importance sampling (AIS) estimate of log Z, Z = integral of exp(-E(x)) dx.

Geometric path from the normalised base N(0, base_scale^2 I), energy
B(x) = |x|^2 / (2 base_scale^2) + (D/2) log(2 pi base_scale^2), to the target:

    E_beta(x) = beta * E(x) + (1 - beta) * B(x),   0 = beta_0 < beta_1 < ... < beta_K = 1.

Chains start at exact base draws; at each beta_k the log-weight gains -(E_beta_k - E_beta_(k-1))
at the current point, then `num_mcmc_steps` MALA or HMC steps leave exp(-E_beta_k) invariant.
log Z_hat = logsumexp(log w) - log n; its standard error is the delta-method
SE(log Z_hat) = std(w) / (sqrt(n) mean(w)), computed from normalised weights. Each temperature costs
one energy+gradient evaluation to re-cache the state at the new beta, plus the kernel's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.sampling import chain, hmc, mala
from jaxebm.sampling.hmc import HMCConfig
from jaxebm.sampling.langevin import LangevinConfig

__all__ = ["AISConfig", "AISResult", "run", "log_mean_exp_with_se"]


@dataclass(frozen=True)
class AISConfig:
    """AIS settings; frozen and hashable, static under jit.

    transition: `LangevinConfig` (MALA transitions) or `HMCConfig` (HMC); temperature must be 1;
      step-size schedules restart at every temperature.
    num_temperatures: K, intermediate distributions including the target.
    num_mcmc_steps: kernel steps per temperature.
    base_scale: standard deviation of the Gaussian base.
    schedule_power: beta_k = (k / K) ** schedule_power (>1 spends more steps near the base).
    """

    transition: LangevinConfig | HMCConfig = LangevinConfig(step_size=0.05)
    num_temperatures: int = 200
    num_mcmc_steps: int = 1
    base_scale: float = 1.0
    schedule_power: float = 1.0

    def __post_init__(self):
        if self.transition.temperature != 1.0:
            raise ValueError("AISConfig.transition.temperature must be 1 (log Z is for exp(-E))")
        if self.num_temperatures < 1 or self.num_mcmc_steps < 1:
            raise ValueError("num_temperatures and num_mcmc_steps must be >= 1")


class AISResult(NamedTuple):
    """log_z, log_z_se: scalars; log_weights: `(n,)`; samples: final `(n, *event)` (approximate
    target draws, to be weighted by exp(log_weights)); acceptance_rate: mean over all steps, scalar."""

    log_z: jax.Array
    log_z_se: jax.Array
    log_weights: jax.Array
    samples: jax.Array
    acceptance_rate: jax.Array


def log_mean_exp_with_se(log_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log(mean(w)) and its delta-method standard error std(w) / (sqrt(n) mean(w)), from `(n,)` log w."""
    num = log_weights.shape[0]
    log_mean = jax.nn.logsumexp(log_weights) - jnp.log(num)
    ratio = jnp.exp(log_weights - log_mean)  # w / mean(w), mean 1
    return log_mean, jnp.std(ratio, ddof=1) / jnp.sqrt(num)


def _base_energy(x, base_scale):
    dim = x[0].size
    sq_norm = jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=-1)
    return 0.5 * sq_norm / base_scale**2 + 0.5 * dim * jnp.log(2.0 * jnp.pi * base_scale**2)


def run(key, energy_fn: Callable, num_chains: int, event_shape: tuple[int, ...],
        config: AISConfig = AISConfig()) -> AISResult:
    """AIS with `num_chains` independent chains on `energy_fn(x (n, *event)) -> (n,)`.

    Not jitted: jit with `energy_fn`, `num_chains`, `event_shape` and `config` static.
    """
    kernel = hmc if isinstance(config.transition, HMCConfig) else mala
    key_base, key_chain = jax.random.split(key)
    x = config.base_scale * jax.random.normal(key_base, (num_chains, *event_shape))
    betas = (jnp.arange(1, config.num_temperatures + 1) / config.num_temperatures) ** config.schedule_power

    def annealed(beta):
        return lambda y: beta * energy_fn(y) + (1.0 - beta) * _base_energy(y, config.base_scale)

    def temperature_step(carry, inputs):
        x, previous_energy, log_w = carry
        key, beta = inputs
        state = kernel.init(x, annealed(beta))
        log_w = log_w - (state.energy - previous_energy)
        state, info = chain.run(lambda k, s: kernel.step(k, s, annealed(beta), config.transition),
                                key, state, config.num_mcmc_steps, trace=True)
        return (state.position, state.energy, log_w), jnp.mean(info.acceptance_rate)

    keys = jax.random.split(key_chain, config.num_temperatures)
    start = (x, _base_energy(x, config.base_scale), jnp.zeros(num_chains))
    (x, _, log_w), acceptance = jax.lax.scan(temperature_step, start, (keys, betas))
    log_z, log_z_se = log_mean_exp_with_se(log_w)
    return AISResult(log_z, log_z_se, log_w, x, jnp.mean(acceptance))
