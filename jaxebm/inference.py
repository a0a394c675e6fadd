"""Using a trained energy model: generation by long annealed Langevin chains, and anomaly scores.

Both work in fixed-size batches (the last one padded and trimmed), so each jitted program compiles
once whatever the number of jets.

    gen_config = GenerationConfig()        # the paper's: 200 steps, step 0.1 x0.8 every 40, noise 0.001
    x, mask = generate(jax.random.key(0), model, params, noise_fn, gen_config, num_jets=10_000)
    scores = anomaly_scores(model_outputs_fn(model), params, x_test, mask_test)  # {"energy": (n,), "score_norm": ...}
    scores = anomaly_scores(outputs_fn, params, images)             # any model: outputs_fn(params, x, mask)

Anomaly scores: `anomaly_scores` is the one score API for every system: it takes a model function giving
energies ``(B,)`` or class logits ``(B, K)`` and returns named scores, each larger = more anomalous
(`SCORE_NAMES`: energy, score norm, and for a hybrid classifier -log p(QCD|x), the negated QCD logit
and min_y E(x, y)).

Both take ``mesh`` (`jaxebm.parallel.make_mesh`) to split each batch over several devices; the
jets are the same as on one device (up to the order of floating-point reductions).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from jaxebm import parallel
from jaxebm.models.common import class_energy_fn, energy_fn
from jaxebm.sampling import langevin
from jaxebm.sampling.schedules import StepDecay

__all__ = ["SCORE_NAMES", "GenerationConfig", "anomaly_scores", "generate", "generate_from", "model_outputs_fn"]


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


@partial(jax.jit, static_argnames=("model", "noise_fn", "config", "mesh", "class_id"))
def _generate_batch(key, params, *, model: nn.Module, noise_fn: Callable, config: GenerationConfig,
                    mesh: Mesh | None, class_id: int | None = None):
    key_start, key_chain = jax.random.split(key)
    x0, mask = _split_starts(parallel.constrain_batch(noise_fn(key_start, config.batch_size), mesh))
    model_mask = jnp.ones(x0.shape[:2], bool) if mask is None else mask
    chain_energy_fn = (energy_fn(model, params, model_mask) if class_id is None else
                       class_energy_fn(model, params, model_mask, jnp.full((len(x0),), class_id, jnp.int32)))
    x, _ = langevin.run_chain(
        key_chain, x0, chain_energy_fn, config.langevin_config, config.num_steps,
        frozen_mask=None if mask is None else ~mask)
    return x, model_mask


def generate(key, model: nn.Module, params, noise_fn: Callable, config: GenerationConfig, num_jets: int, *,
             progress: bool = True, mesh: Mesh | None = None, class_id: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_jets`` jets by running chains from ``noise_fn`` starts under the model.

    Args:
      key: typed PRNG key. model, params: the energy module and its (EMA) parameters.
      noise_fn: ``noise_fn(key, n)`` -> features ``(n, N, F)`` ("zeros" padding: every slot is a
        constituent) or ``(features, mask (n, N))`` ("mask" padding: padded slots stay frozen).
      config: `GenerationConfig`.
      class_id: None: chains on E(x). y: a hybrid model's class-conditional chains on ``E(x, y) = -g(x)_y``.
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
                                                           config=config, mesh=mesh, class_id=class_id))
        for k in tqdm(keys, desc="generate", unit="batch", disable=not progress)
    ]
    x, mask = (np.concatenate([o[i] for o in outputs])[:num_jets] for i in range(2))
    return x, mask


@partial(jax.jit, static_argnames=("model", "config"))
def _chain_batch(key, params, x0, mask, *, model: nn.Module, config: GenerationConfig):
    x, _ = langevin.run_chain(key, x0, energy_fn(model, params, mask), config.langevin_config, config.num_steps,
                              frozen_mask=~mask)
    return x


def generate_from(key, model: nn.Module, params, x0: np.ndarray, mask: np.ndarray, config: GenerationConfig
                  ) -> np.ndarray:
    """Run ``config``'s chains from given starts (e.g. a proposal model's jets) instead of noise.

    Args:
      x0: ``(n, N, F)`` starts in the model's feature space; mask: ``(n, N)`` bool, padded slots stay frozen.
      config: `GenerationConfig` (``num_steps`` = gradient evaluations per jet; chains in ``batch_size``
        batches, the last padded with copies of the first start and trimmed).
    Returns:
      ``(n, N, F)`` float32 end positions.
    """
    x0, mask = np.asarray(x0, np.float32), np.asarray(mask, bool)
    if x0.ndim != 3 or mask.shape != x0.shape[:2] or len(x0) == 0:
        raise ValueError(f"x0 must be (n, N, F) with n >= 1 and mask (n, N); got {x0.shape}, {mask.shape}")
    num_jets, size = len(x0), config.batch_size
    pad = -num_jets % size
    x0 = np.concatenate([x0, np.repeat(x0[:1], pad, axis=0)])
    mask = np.concatenate([mask, np.repeat(mask[:1], pad, axis=0)])
    keys = jax.random.split(key, len(x0) // size)
    parts = [np.asarray(_chain_batch(k, params, x0[i * size:(i + 1) * size], mask[i * size:(i + 1) * size],
                                     model=model, config=config)) for i, k in enumerate(keys)]
    return np.concatenate(parts)[:num_jets]


SCORE_NAMES = ("energy", "score_norm", "class_nll", "class_energy", "min_class_energy")


def _energy_and_class_scores(outputs: jax.Array, background_class: int) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``outputs`` ``(B,)`` energies or ``(B, K)`` logits -> E(x) ``(B,)`` and the class scores (logits only)."""
    if outputs.ndim == 1:
        return outputs, {}
    if not 0 <= background_class < outputs.shape[1]:
        raise ValueError(f"background_class must be in [0, {outputs.shape[1]}), got {background_class}")
    log_norm = jax.nn.logsumexp(outputs, axis=-1)
    background_logit = outputs[:, background_class]
    return -log_norm, {"class_nll": log_norm - background_logit, "class_energy": -background_logit,
                       "min_class_energy": -jnp.max(outputs, axis=-1)}


@lru_cache(maxsize=64)
def _compiled_scores(outputs_fn: Callable, background_class: int) -> Callable:
    """One jitted scorer per (model function, background class): ``(params, x, mask, scale) -> dict``."""
    def scores(params, x, mask, coordinate_scale):
        def total_energy(x):
            energy, class_scores = _energy_and_class_scores(outputs_fn(params, x, mask), background_class)
            return jnp.sum(energy), (energy, class_scores)

        grad, (energy, class_scores) = jax.grad(total_energy, has_aux=True)(x)
        grad = grad / coordinate_scale
        if mask is not None:
            grad = jnp.where(mask[..., None], grad, 0.0)
        score_norm = jnp.sqrt(jnp.sum(jnp.square(grad).reshape(len(x), -1), axis=1))
        return {"energy": energy, "score_norm": score_norm, **class_scores}

    return jax.jit(scores)


def anomaly_scores(outputs_fn: Callable, params, x: np.ndarray, mask: np.ndarray | None = None, *,
                  background_class: int = 0, coordinate_scale=None, batch_size: int = 1024,
                  mesh: Mesh | None = None) -> dict[str, np.ndarray]:
    """Named anomaly scores of any energy model, each ``(n,)`` float64 and oriented so that larger means
    more anomalous (the one score API of the project).

    Args:
      outputs_fn: ``outputs_fn(params, x (B, ...), mask (B, N) or None) -> (B,)`` energies E(x) (a plain
        EBM; the normalized autoencoder's reconstruction error) or ``(B, K)`` class logits g(x) (a hybrid
        EBM-classifier, ``E(x) = -logsumexp_y g(x)_y``). Keep the same function object between calls
        (one compilation each). `model_outputs_fn` gives it for a `TransformerEnergy`.
      x: ``(n, ...)`` model inputs: constituent features ``(n, N, F)`` with ``mask (n, N)`` bool, or
        images ``(n, P, P)`` with ``mask=None``.
      background_class: index of the known background class (QCD) among the logits.
      coordinate_scale: ``(F,)`` or None: the score norm is taken in ``u = x * coordinate_scale + const``
        (``grad_u E = grad_x E / coordinate_scale``, last axis); None: the model's own coordinates.
      mesh: None: one device; else each batch split over the mesh's devices (``batch_size`` a multiple
        of their number), parameters replicated.
    Returns:
      ``energy``: E(x). ``score_norm``: ``||grad_x E(x)||`` over the real slots (every element without a
      mask). Hybrid models also: ``class_nll``: ``-log p(background | x)``; ``class_energy``:
      ``E(x, background) = -g(x)_background`` (the negated background logit); ``min_class_energy``:
      ``min_y E(x, y) = -max_y g(x)_y``.
    """
    x = np.asarray(x, np.float32)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if x.ndim != 3 or mask.shape != x.shape[:2]:
            raise ValueError(f"x must be (n, N, F) with mask (n, N); got x {x.shape}, mask {mask.shape}")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch (n, ...), got shape {x.shape}")
    scale = np.ones(x.shape[-1], np.float32) if coordinate_scale is None else np.asarray(coordinate_scale, np.float32)
    if scale.shape != x.shape[-1:] or not np.all(scale > 0):
        raise ValueError(f"coordinate_scale must be ({x.shape[-1]},) and positive, got {coordinate_scale}")
    num_jets, pad = len(x), -len(x) % batch_size
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    if mask is not None:
        mask = np.concatenate([mask, np.ones((pad,) + mask.shape[1:], bool)])
    if mesh is not None:
        params, scale = parallel.place((params, scale), parallel.replicated(mesh))
    to_devices = (lambda batch: batch) if mesh is None else partial(parallel.shard_batch, mesh=mesh)
    scorer = _compiled_scores(outputs_fn, int(background_class))
    parts = [scorer(params, to_devices(x[i:i + batch_size]),
                    None if mask is None else to_devices(mask[i:i + batch_size]), scale)
             for i in range(0, len(x), batch_size)]
    scores = {name: np.concatenate([parallel.to_host(p[name]).astype(np.float64) for p in parts])[:num_jets]
              for name in parts[0]}
    if not np.all(np.isfinite(scores["energy"])):
        raise FloatingPointError(f"{np.sum(~np.isfinite(scores['energy']))} of {num_jets} energies are not finite")
    return scores


@lru_cache(maxsize=64)
def model_outputs_fn(model: nn.Module) -> Callable:
    """`anomaly_scores`' ``outputs_fn`` of a constituent energy module (dropout off): its logits when it is
    a hybrid (``model.config.num_classes`` set), else its energies."""
    is_hybrid = getattr(getattr(model, "config", None), "num_classes", None) is not None

    def outputs(params, x, mask):
        if is_hybrid:
            return model.apply(params, x, mask, deterministic=True, method="logits")
        return model.apply(params, x, mask, deterministic=True)

    return outputs
