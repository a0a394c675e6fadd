"""Samplers for energy-based models: pure, batched, jittable by the caller.

`energy_fn(x) -> (B,)` takes chains on the leading axis of `x (B, *event)`; the target density is
exp(-E/T). Kernels follow `state = kernel.init(x, energy_fn)`,
`state, info = kernel.step(key, state, energy_fn, config)`, and `kernel.run_chain(key, x0, energy_fn,
config, num_steps)` scans them. Configs are frozen dataclasses (static under `jax.jit`).

Example (runs as is)::

    import jax
    import jax.numpy as jnp
    from jaxebm import sampling

    energy_fn = lambda x: 0.5 * jnp.sum(x**2, axis=-1)            # N(0, I) in 2-D, batched
    config = sampling.LangevinConfig(step_size=0.3, noise_scale=0.5)  # decoupled; MALA keeps it exact
    run = jax.jit(lambda key, x0: sampling.mala.run_chain(key, x0, energy_fn, config, 500, trace=True))
    x, info = run(jax.random.key(0), jnp.zeros((1024, 2)))
    print(x.var(axis=0), info.acceptance_rate.mean())              # ~[1, 1] (+-5%), ~0.75

    # Replay buffer for persistent chains (ULA in the EBM form: step 0.1, noise 0.005)
    noise_fn = lambda key, n: jax.random.normal(key, (n, 2))
    buf = sampling.buffer.init(jax.random.key(1), noise_fn, capacity=10_000)
    starts, idx = sampling.buffer.sample(jax.random.key(2), buf, 128, noise_fn)
    ends, _ = sampling.langevin.run_chain(
        jax.random.key(3), starts, energy_fn, sampling.LangevinConfig(0.1, 0.005), 24)
    buf = sampling.buffer.push(buf, ends, idx)

Modules: `langevin` (ULA), `mala`, `hmc`, `chain` (scan driver, state/info types), `proposal`
(shared proposal and Metropolis-Hastings parts), `schedules`, `buffer`, `sphere`, `ais`.
"""
from jaxebm.sampling import ais, buffer, chain, hmc, langevin, mala, proposal, schedules, sphere
from jaxebm.sampling.ais import AISConfig, AISResult
from jaxebm.sampling.buffer import BufferState
from jaxebm.sampling.chain import ChainInfo, ChainState
from jaxebm.sampling.hmc import HMCConfig
from jaxebm.sampling.langevin import LangevinConfig, LangevinState

__all__ = [
    "ais", "buffer", "chain", "hmc", "langevin", "mala", "proposal", "schedules", "sphere",
    "AISConfig", "AISResult", "BufferState", "ChainInfo", "ChainState", "HMCConfig",
    "LangevinConfig", "LangevinState",
]
