"""Contrastive-divergence training of an energy model with persistent Langevin chains (Algorithm 1).

One call of the step returned by `make_cd_step` is one XLA program doing a whole iteration:

  1. chain starts from the replay buffer, each restarting from `noise_fn` with prob. `restart_prob`;
  2. K Langevin steps ``x <- x - step_size * grad_x E(x) + noise_scale * eps`` with the parameters
     held constant (`stop_gradient`) and dropout off;
  3. loss ``mean E(x+) - mean E(x-) + alpha * mean(E(x+)^2 + E(x-)^2)`` on data ``x+`` (plus
     ``N(0, data_noise^2)``) and chain ends ``x-``, energies with dropout on;
  4. optax update (global-norm clip, Adam(b1, b2) with a per-epoch exponential decay), EMA of the
     parameters, chain ends written back to the buffer.

Padding modes:
  "zeros": the paper's. All N slots are constituents for the model (mask all True) and for the
    chains (every slot moves); data slots beyond a jet's multiplicity hold zeros. Buffer samples
    and `noise_fn` outputs are features ``(n, N, F)``.
  "mask": negatives carry masks. `noise_fn` returns ``(features (n, N, F), mask (n, N))`` with
    multiplicities drawn from the training distribution (`make_noise_fn`); padded slots are frozen in
    the chains and ignored by the model; data noise touches real slots only.

Example::

    config = CDConfig(batch_size=128, steps_per_epoch=loader.num_batches_per_epoch)
    noise_fn = make_noise_fn(mean=(2.0, 0.0, 0.0), std=(1.0, 0.1, 0.2), num_constituents=40)
    state = create_train_state(jax.random.key(0), model, config, x[:128], mask[:128], noise_fn)
    step = make_cd_step(model, config, noise_fn)
    state, metrics = step(state, x_batch, mask_batch)   # the old `state` is donated: do not reuse it

Data parallel over all devices (hosts): ``make_cd_step(model, config, noise_fn, mesh=jaxebm.parallel.make_mesh())``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxebm import parallel
from jaxebm.models.common import energy_fn
from jaxebm.sampling import buffer, langevin
from jaxebm.sampling.langevin import LangevinConfig
from jaxebm.train.state import TrainState, make_optimizer

__all__ = ["PADDING_MODES", "CDConfig", "ema_decay_at", "make_cd_step", "make_noise_fn", "multiplicity_distribution"]

PADDING_MODES = ("zeros", "mask")


@dataclass(frozen=True)
class CDConfig:
    """Contrastive-divergence settings; frozen and hashable. Defaults are the paper's (table 4).

    num_langevin_steps: K, chain steps per iteration. step_size: lambda, drift factor on grad_x E.
    noise_scale: std of the chain noise (decoupled from the step). chain_grad_clip_norm: clip each
      chain's input-gradient norm, or None (paper).
    alpha: weight of the squared-energy regulariser. restart_prob: chains restarted from noise.
    buffer_size: replay buffer capacity. batch_size: B, data jets (and chains) per iteration.
    lr: initial learning rate, multiplied by lr_decay after every steps_per_epoch updates.
    adam_b1, adam_b2: Adam moments. grad_clip_norm: global-norm clip of the parameter gradient.
    data_noise: std of the Gaussian noise added to data features. ema_decay: largest decay of the
      parameters' EMA (warmed up, see `ema_decay_at`).
    padding_mode: "zeros" or "mask" (module doc). iterations_per_call: iterations per step call,
      scanned over a stacked batch ``(iterations_per_call, B, N, F)``.
    """

    num_langevin_steps: int = 24
    step_size: float = 0.1
    noise_scale: float = 0.005
    chain_grad_clip_norm: float | None = None
    alpha: float = 0.1
    restart_prob: float = 0.05
    buffer_size: int = 10_000
    batch_size: int = 128
    lr: float = 1e-4
    lr_decay: float = 0.98
    steps_per_epoch: int = 2343  # 300k training jets / 128
    adam_b1: float = 0.0
    adam_b2: float = 0.999
    grad_clip_norm: float = 0.1
    data_noise: float = 0.005
    ema_decay: float = 0.999
    padding_mode: str = "zeros"
    iterations_per_call: int = 1

    def __post_init__(self):
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        for name in ("num_langevin_steps", "buffer_size", "batch_size", "steps_per_epoch", "iterations_per_call"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "grad_clip_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("step_size", "noise_scale", "alpha", "data_noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("restart_prob", "ema_decay"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")

    @property
    def langevin_config(self) -> LangevinConfig:
        """The chain settings as a `jaxebm.sampling.LangevinConfig`."""
        return LangevinConfig(step_size=self.step_size, noise_scale=self.noise_scale,
                              grad_clip_norm=self.chain_grad_clip_norm)


def ema_decay_at(step: jax.Array, max_decay: float) -> jax.Array:
    """Decay of the parameter EMA at update ``step``: ``min(max_decay, (1 + step) / (10 + step))``.

    Without the warm-up an EMA of decay 0.999 still weighs the initial parameters by 0.999^800 = 0.45
    after 800 updates, so a short run would evaluate mostly untrained parameters.
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(max_decay, (1.0 + step) / (10.0 + step))


def multiplicity_distribution(mask: np.ndarray) -> np.ndarray:
    """Empirical distribution of the number of real constituents: ``mask (n_jets, N)`` -> ``(N + 1,)``."""
    mask = np.asarray(mask, bool)
    counts = np.bincount(mask.sum(axis=1), minlength=mask.shape[1] + 1)
    return counts / counts.sum()


def make_noise_fn(mean: Sequence[float], std: Sequence[float], num_constituents: int, *,
                  multiplicity_probs: np.ndarray | None = None) -> Callable:
    """Chain-start sampler ``noise_fn(key, n)``: each feature ``f`` of each slot ~ ``N(mean[f], std[f]^2)``.

    Paper (raw features): mean (2, 0, 0), std (1, 0.1, 0.2) for (log pT, eta, phi); in standardised
    space pass the noise mapped through the same standardisation. Without `multiplicity_probs`
    returns features ``(n, N, F)`` ("zeros" mode). With ``multiplicity_probs (N + 1,)`` returns
    ``(features, mask)``: each jet draws its multiplicity m, slots ``< m`` are real, the others are
    zeroed and masked ("mask" mode); `multiplicity_distribution` of the training masks gives it.
    """
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    if mean.ndim != 1 or mean.shape != std.shape:
        raise ValueError(f"mean and std must both be (F,), got {mean.shape} and {std.shape}")
    if multiplicity_probs is not None:
        probs = np.asarray(multiplicity_probs, np.float64)
        if probs.shape != (num_constituents + 1,) or not np.isclose(probs.sum(), 1.0):
            raise ValueError(f"multiplicity_probs must be ({num_constituents + 1},) summing to 1, got {probs.shape}")
        log_probs = jnp.log(jnp.asarray(probs, jnp.float32))

    def noise_fn(key, num: int):
        key_features, key_multiplicity = jax.random.split(key)
        features = mean + std * jax.random.normal(key_features, (num, num_constituents, mean.shape[0]))
        if multiplicity_probs is None:
            return features
        multiplicity = jax.random.categorical(key_multiplicity, log_probs, shape=(num,))
        mask = jnp.arange(num_constituents)[None, :] < multiplicity[:, None]
        return jnp.where(mask[..., None], features, 0.0), mask

    return noise_fn


def _cd_loss(params, model: nn.Module, config: CDConfig, key, x_pos, mask_pos, x_neg, mask_neg):
    """CD loss and its parts; one forward pass over data and chain ends, dropout on."""
    energies = model.apply(params, jnp.concatenate([x_pos, x_neg]), jnp.concatenate([mask_pos, mask_neg]),
                           deterministic=False, rngs={"dropout": key})
    e_pos, e_neg = jnp.split(energies, 2)
    cd = jnp.mean(e_pos) - jnp.mean(e_neg)
    reg = jnp.mean(jnp.square(e_pos) + jnp.square(e_neg))
    return cd + config.alpha * reg, (cd, reg, e_pos, e_neg)


def _masked_moments(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-feature mean and std ``(F,)`` of ``x (B, N, F)`` over the real slots of ``mask (B, N)``."""
    weight = mask[..., None].astype(x.dtype)
    count = jnp.maximum(jnp.sum(weight, axis=(0, 1)), 1.0)
    mean = jnp.sum(x * weight, axis=(0, 1)) / count
    var = jnp.sum(jnp.square(x - mean) * weight, axis=(0, 1)) / count
    return mean, jnp.sqrt(var)


def _check_batch(config: CDConfig, x_pos, mask_pos) -> None:
    leading = (config.iterations_per_call,) if config.iterations_per_call > 1 else ()
    if (x_pos.ndim != len(leading) + 3 or x_pos.shape[: len(leading) + 1] != leading + (config.batch_size,)
            or mask_pos.shape != x_pos.shape[:-1]):
        raise ValueError(
            f"x_pos must be {leading + (config.batch_size,)} + (N, F) with mask_pos {leading + (config.batch_size,)}"
            f" + (N,); got x_pos {x_pos.shape}, mask_pos {mask_pos.shape}")


def make_cd_step(model: nn.Module, config: CDConfig, noise_fn: Callable, *, mesh: Mesh | None = None) -> Callable:
    """The jitted CD step ``step(state, x_pos, mask_pos) -> (state, metrics)`` (module doc).

    Args:
      model: energy module, ``model.apply(params, x (B, N, F), mask (B, N), deterministic=...) -> (B,)``.
      config: `CDConfig`.
      noise_fn: ``noise_fn(key, n)`` chain starts, the one the buffer was built with (`make_noise_fn`).
      mesh: None: one device. A `jaxebm.parallel.make_mesh` mesh: data parallel (`jaxebm.parallel.distribute`):
        data, chains and buffer split over its devices (``batch_size`` and ``buffer_size`` multiples of
        their number), everything else replicated; the step places its inputs and returns the state
        placed the same way. Same numbers as one device up to the order of reductions.

    The step takes ``x_pos (B, N, F)`` and ``mask_pos (B, N)`` bool (both with a leading
    ``iterations_per_call`` axis when that is > 1) and donates ``state``. In "zeros" mode ``mask_pos``
    is only shape-checked: the model sees every slot. A non-finite loss or gradient leaves params,
    optimiser, EMA and buffer unchanged (``is_finite`` False); ``step`` and ``key`` advance regardless.

    Metrics (scalars unless noted; leading ``iterations_per_call`` axis when > 1): loss, cd, reg,
    e_pos, e_neg (mean energies), gap (= e_neg - e_pos), grad_norm (raw parameter gradient),
    chain_grad_norm (mean |grad_x E| at the last chain step), sample_mean, sample_std ``(F,)`` (chain
    ends, real slots), lr_scale, is_finite.
    """
    optimizer = make_optimizer(config)
    is_mask_mode = config.padding_mode == "mask"

    def negative_phase(state: TrainState, key_buffer, key_chain):
        """Chain ends ``(B, N, F)``, their mask ``(B, N)``, buffer slots ``(B,)`` and the chain info."""
        starts, slots = buffer.sample(key_buffer, state.buffer, config.batch_size, noise_fn, config.restart_prob)
        starts = parallel.constrain_batch(starts, mesh)
        x_start, mask = starts if is_mask_mode else (starts, jnp.ones(starts.shape[:2], bool))
        x_end, chain_info = langevin.run_chain(
            key_chain, x_start, energy_fn(model, state.params, mask), config.langevin_config,
            config.num_langevin_steps, frozen_mask=~mask if is_mask_mode else None)
        return jax.lax.stop_gradient(x_end), mask, slots, chain_info

    def iteration(state: TrainState, batch):
        x_pos, mask_pos = batch
        key, key_buffer, key_chain, key_data, key_dropout = jax.random.split(state.key, 5)
        x_neg, mask_neg, slots, chain_info = negative_phase(state, key_buffer, key_chain)
        mask_pos = mask_pos.astype(bool) if is_mask_mode else jnp.ones(x_pos.shape[:2], bool)
        data_noise = config.data_noise * jax.random.normal(key_data, x_pos.shape, x_pos.dtype)
        x_pos = jnp.where(mask_pos[..., None], x_pos + data_noise, x_pos)

        (loss, (cd, reg, e_pos, e_neg)), grads = jax.value_and_grad(_cd_loss, has_aux=True)(
            state.params, model, config, key_dropout, x_pos, mask_pos, x_neg, mask_neg)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, jax.tree.map(lambda u: u * state.lr_scale, updates))
        ema_params = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay_at(state.step, config.ema_decay))
        new_buffer = buffer.push(state.buffer, (x_neg, mask_neg) if is_mask_mode else x_neg, slots)

        grad_norm = optax.tree.norm(grads)
        is_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        params, opt_state, ema_params, new_buffer = jax.tree.map(
            lambda new, old: jnp.where(is_finite, new, old), (params, opt_state, ema_params, new_buffer),
            (state.params, state.opt_state, state.ema_params, state.buffer))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params,
                                  buffer=new_buffer, key=key)
        sample_mean, sample_std = _masked_moments(x_neg, mask_neg)
        metrics = {
            "loss": loss, "cd": cd, "reg": reg, "e_pos": jnp.mean(e_pos), "e_neg": jnp.mean(e_neg),
            "gap": jnp.mean(e_neg) - jnp.mean(e_pos), "grad_norm": grad_norm,
            "chain_grad_norm": jnp.mean(chain_info.grad_norm), "sample_mean": sample_mean,
            "sample_std": sample_std, "lr_scale": state.lr_scale, "is_finite": is_finite,
        }
        return new_state, metrics

    def step(state: TrainState, x_pos: jax.Array, mask_pos: jax.Array):
        _check_batch(config, x_pos, mask_pos)
        if config.iterations_per_call == 1:
            return iteration(state, (x_pos, mask_pos))
        return jax.lax.scan(iteration, state, (x_pos, mask_pos))

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    parallel.check_divisible(mesh, batch_size=config.batch_size, buffer_size=config.buffer_size)
    return parallel.distribute(step, mesh, batch_axis=0 if config.iterations_per_call == 1 else 1)
