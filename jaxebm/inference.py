"""Using a trained energy model: generation by long annealed Langevin chains, and anomaly scores.

Both work in fixed-size batches (the last one padded and trimmed), so each jitted program compiles
once whatever the number of jets.

    gen_config = GenerationConfig()        # the paper's: 200 steps, step 0.1 x0.8 every 40, noise 0.001
    x, mask = generate(jax.random.key(0), model, params, noise_fn, gen_config, num_jets=10_000)
    energy, score_norm = anomaly_scores(model, params, x_test, mask_test)

Both take ``mesh`` (`jaxebm.parallel.make_mesh`) to split each batch over several devices; the
jets are the same as on one device (up to the order of floating-point reductions).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from jaxebm import parallel
from jaxebm.models.common import energy_fn
from jaxebm.sampling import langevin
from jaxebm.sampling.schedules import StepDecay

__all__ = ["GenerationConfig", "generate", "anomaly_scores"]


@dataclass(frozen=True)
class GenerationConfig:
    """Generation chains from noise (defaults: the EBM paper's test-time settings).

    num_steps: chain length. step_size, step_decay, decay_every: step size
      ``step_size * step_decay ** (t // decay_every)``. noise_scale: chain noise std (decoupled).
    temperature: T of exp(-E/T) (< 1 is a colder model). batch_size: chains per jitted call.
    """

    num_steps: int = 200
    step_size: float = 0.1
    step_decay: float = 0.8
    decay_every: int = 40
    noise_scale: float = 0.001
    temperature: float = 1.0
    batch_size: int = 1024

    def __post_init__(self):
        for name in ("num_steps", "decay_every", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"GenerationConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.step_size > 0 and self.noise_scale >= 0 and self.temperature > 0 and 0 < self.step_decay <= 1):
            raise ValueError(f"GenerationConfig needs step_size > 0, noise_scale >= 0, temperature > 0 and "
                             f"0 < step_decay <= 1; got {self.step_size}, {self.noise_scale}, {self.temperature}, "
                             f"{self.step_decay}")

    @property
    def langevin_config(self) -> langevin.LangevinConfig:
        return langevin.LangevinConfig(
            step_size=StepDecay(self.step_size, self.step_decay, self.decay_every),
            noise_scale=self.noise_scale, temperature=self.temperature)


def _split_starts(starts) -> tuple[jax.Array, jax.Array | None]:
    """``noise_fn`` output -> (features, mask or None): "mask" mode returns a pair."""
    if isinstance(starts, tuple):
        return starts
    return starts, None


@partial(jax.jit, static_argnames=("model", "noise_fn", "config", "mesh"))
def _generate_batch(key, params, *, model: nn.Module, noise_fn: Callable, config: GenerationConfig,
                    mesh: Mesh | None):
    key_start, key_chain = jax.random.split(key)
    x0, mask = _split_starts(parallel.constrain_batch(noise_fn(key_start, config.batch_size), mesh))
    model_mask = jnp.ones(x0.shape[:2], bool) if mask is None else mask
    x, _ = langevin.run_chain(
        key_chain, x0, energy_fn(model, params, model_mask), config.langevin_config, config.num_steps,
        frozen_mask=None if mask is None else ~mask)
    return x, model_mask


def generate(key, model: nn.Module, params, noise_fn: Callable, config: GenerationConfig, num_jets: int, *,
             progress: bool = True, mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_jets`` jets by running chains from ``noise_fn`` starts under the model.

    Args:
      key: typed PRNG key. model, params: the energy module and its (EMA) parameters.
      noise_fn: ``noise_fn(key, n)`` -> features ``(n, N, F)`` ("zeros" padding: every slot is a
        constituent) or ``(features, mask (n, N))`` ("mask" padding: padded slots stay frozen).
      config: `GenerationConfig`.
      mesh: None: one device; else each batch's chains split over the mesh's devices
        (``config.batch_size`` a multiple of their number), parameters replicated.
    Returns:
      features ``(num_jets, N, F)`` float32 in the model's feature space and mask ``(num_jets, N)`` bool.
    """
    if num_jets < 1:
        raise ValueError(f"num_jets must be >= 1, got {num_jets}")
    num_batches = -(-num_jets // config.batch_size)
    keys = jax.random.split(key, num_batches)
    if mesh is not None:
        parallel.check_divisible(mesh, batch_size=config.batch_size)
        keys, params = parallel.place((keys, params), parallel.replicated(mesh))
    outputs = [  # fetched batch by batch, so the progress bar follows the computation, not the dispatch
        tuple(parallel.to_host(a) for a in _generate_batch(k, params, model=model, noise_fn=noise_fn,
                                                           config=config, mesh=mesh))
        for k in tqdm(keys, desc="generate", unit="batch", disable=not progress)
    ]
    x, mask = (np.concatenate([o[i] for o in outputs])[:num_jets] for i in range(2))
    return x, mask


@partial(jax.jit, static_argnames=("model",))
def _score_batch(params, x, mask, coordinate_scale, *, model: nn.Module):
    def total_energy(x):
        energies = model.apply(params, x, mask, deterministic=True)
        return jnp.sum(energies), energies

    grad, energies = jax.grad(total_energy, has_aux=True)(x)
    grad = jnp.where(mask[..., None], grad / coordinate_scale, 0.0)
    return energies, jnp.sqrt(jnp.sum(jnp.square(grad), axis=(1, 2)))


def anomaly_scores(model: nn.Module, params, x: np.ndarray, mask: np.ndarray, *, coordinate_scale=None,
                   batch_size: int = 1024, mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Energy ``E(x)`` and score norm ``||grad_u E||`` (over real slots) per jet.

    Args:
      x: ``(n, N, F)`` features in the model's space; mask: ``(n, N)`` bool (all True in "zeros" mode).
      coordinate_scale: ``(F,)`` or None. The score norm is taken in the coordinates
        ``u = x * coordinate_scale + const`` (``grad_u E = grad_x E / coordinate_scale``): None for the
        model's own space, `ConstituentPipeline.raw_scale` for raw ``(log pT, eta, phi)`` (the paper's).
      mesh: None: one device; else each batch split over the mesh's devices (``batch_size`` a
        multiple of their number; ``x`` is the same on every process), parameters replicated.
    Returns:
      energy ``(n,)`` and score_norm ``(n,)``, float64; higher means more anomalous for both.
    """
    x, mask = np.asarray(x, np.float32), np.asarray(mask, bool)
    if x.ndim != 3 or mask.shape != x.shape[:2]:
        raise ValueError(f"x must be (n, N, F) with mask (n, N); got x {x.shape}, mask {mask.shape}")
    num_jets = len(x)
    pad = -num_jets % batch_size
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    mask = np.concatenate([mask, np.ones((pad,) + mask.shape[1:], bool)])
    scale = np.ones(x.shape[-1], np.float32) if coordinate_scale is None else np.asarray(coordinate_scale, np.float32)
    if scale.shape != x.shape[-1:] or not np.all(scale > 0):
        raise ValueError(f"coordinate_scale must be ({x.shape[-1]},) and positive, got {coordinate_scale}")
    if mesh is not None:
        params, scale = parallel.place((params, scale), parallel.replicated(mesh))
    to_devices = (lambda batch: batch) if mesh is None else partial(parallel.shard_batch, mesh=mesh)
    parts = [_score_batch(params, *to_devices((x[i:i + batch_size], mask[i:i + batch_size])), scale, model=model)
             for i in range(0, len(x), batch_size)]
    energy, score_norm = (np.concatenate([parallel.to_host(p[k]).astype(np.float64) for p in parts])[:num_jets]
                          for k in range(2))
    if not np.all(np.isfinite(energy)):
        raise FloatingPointError(f"{np.sum(~np.isfinite(energy))} of {num_jets} energies are not finite")
    return energy, score_norm
