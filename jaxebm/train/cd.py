"""Contrastive-divergence training of an energy model with persistent Langevin chains (Algorithm 1).

One call of the step returned by `make_cd_step` is one XLA program doing a whole iteration:

  1. chain starts from the replay buffer, each restarting from `noise_fn` with prob. `restart_prob`;
  2. K Langevin steps ``x <- x - step_size * grad_x E(x) + noise_scale * eps`` with the parameters
     held constant (`stop_gradient`) and dropout off;
  3. loss ``mean E(x+) - mean E(x-) + alpha * mean(E(x+)^2 + E(x-)^2)`` on data ``x+`` (plus
     ``N(0, data_noise^2)``) and chain ends ``x-``, energies with dropout on;
  4. optax update (global-norm clip, Adam(b1, b2) with a per-epoch exponential decay), EMA of the
     parameters, chain ends written back to the buffer.

Hybrid EBM-classifier (seed 000, Eq. 5 and 7; the model has ``num_classes = K`` logits g(x), and its
energy is ``E(x) = -logsumexp_y g(x)_y``): the loss is ``cd_weight * (CD loss above) + classifier_weight
* cross-entropy(g(x+), y+)``, and the step takes the labels ``y+ (B,)`` of the data jets.
``classifier_weight`` is the paper's kappa; ``cd_weight = 0`` is the supervised-only baseline of the same
backbone (no chains run at all); ``classifier_weight = 0`` is the plain EBM. With ``class_conditional``
the chains run on ``E(x, y) = -g(x)_y`` with ``y`` the labels of the batch, from a buffer split into K
class partitions (`jaxebm.sampling.buffer`), so chain ends of one class never start chains of another;
the CD term still uses the marginal ``E(x)`` (its negatives are then a sample of
``sum_y p_data(y) p(x|y)``, equal to p(x) when the model's class prior matches the data's).

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

    hybrid = CDConfig(classifier_weight=1.0)            # EBM-CLF, kappa = 1; model with num_classes = 3
    state, metrics = make_cd_step(model, hybrid, noise_fn)(state, x_batch, mask_batch, labels)

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
from jaxebm.models.common import class_energy_fn, energy_fn
from jaxebm.sampling import buffer, langevin
from jaxebm.sampling.langevin import LangevinConfig
from jaxebm.train.guard import keep_if_finite, scaled_update
from jaxebm.train.state import TrainState, make_optimizer

__all__ = ["PADDING_MODES", "CDConfig", "check_labels", "ema_decay_at", "make_cd_step", "make_noise_fn",
           "multiplicity_distribution"]

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
    cd_weight: weight of the CD loss (1; 0: supervised-only, no chains). classifier_weight: kappa, weight
      of the cross-entropy of a hybrid model (0: plain EBM). class_conditional: chains on E(x, y) from a
      class-partitioned buffer (hybrid only). See the module doc.
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
    cd_weight: float = 1.0
    classifier_weight: float = 0.0
    class_conditional: bool = False

    def __post_init__(self):
        if not (self.cd_weight >= 0 and self.classifier_weight >= 0 and self.cd_weight + self.classifier_weight > 0):
            raise ValueError(f"cd_weight and classifier_weight must be >= 0 and not both 0, got {self.cd_weight} "
                             f"and {self.classifier_weight}")
        if self.class_conditional and self.cd_weight == 0:
            raise ValueError("class_conditional chains need cd_weight > 0 (no chains run without the CD term)")
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
    def is_hybrid(self) -> bool:
        """Whether the step needs labels (a cross-entropy term or class-conditional chains)."""
        return self.classifier_weight > 0 or self.class_conditional

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


def _cd_loss(params, model: nn.Module, config: CDConfig, key, x_pos, mask_pos, x_neg, mask_neg, labels=None):
    """Weighted CD and cross-entropy losses and their parts; one forward pass, dropout on.

    ``x_neg``, ``mask_neg``: chain ends, or None (``cd_weight = 0``). ``labels (B,)`` or None (plain EBM).
    """
    x, mask = (x_pos, mask_pos) if x_neg is None else (jnp.concatenate([x_pos, x_neg]),
                                                         jnp.concatenate([mask_pos, mask_neg]))
    if hasattr(model, "outputs"):  # `TransformerEnergy`: (B, 1) energies or (B, K) logits
        outputs = model.apply(params, x, mask, deterministic=False, rngs={"dropout": key}, method="outputs")
    else:  # any other energy module: (B,) energies
        outputs = model.apply(params, x, mask, deterministic=False, rngs={"dropout": key})[:, None]
    energies = outputs[:, 0] if outputs.shape[1] == 1 else -jax.nn.logsumexp(outputs, axis=-1)
    num_pos = x_pos.shape[0]
    e_pos = energies[:num_pos]
    e_neg = e_pos if x_neg is None else energies[num_pos:]
    cd = jnp.mean(e_pos) - jnp.mean(e_neg)
    reg = jnp.mean(jnp.square(e_pos) + jnp.square(e_neg))
    loss = config.cd_weight * (cd + config.alpha * reg) if x_neg is not None else 0.0
    ce, accuracy = jnp.zeros(()), jnp.zeros(())
    if labels is not None:
        logits = outputs[:num_pos]
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
        loss = loss + config.classifier_weight * ce
    return loss, {"cd": cd, "reg": reg, "ce": ce, "accuracy": accuracy, "e_pos": e_pos, "e_neg": e_neg}


def check_labels(labels, batch_shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    """``labels`` as int32 of shape ``batch_shape``; ValueError naming the problem (shape, dtype, range)."""
    labels = np.asarray(labels)
    if labels.shape != batch_shape:
        raise ValueError(f"labels must have shape {batch_shape} (one per data jet), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) for a model with {num_classes} classes, "
                         f"got values in [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int32)


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
    """The jitted CD step ``step(state, x_pos, mask_pos[, labels]) -> (state, metrics)`` (module doc).

    Args:
      model: energy module, ``model.apply(params, x (B, N, F), mask (B, N), deterministic=...) -> (B,)``;
        a hybrid needs an ``outputs`` method giving ``(B, K)`` logits (`TransformerEnergy`).
      config: `CDConfig`.
      noise_fn: ``noise_fn(key, n)`` chain starts, the one the buffer was built with (`make_noise_fn`).
      mesh: None: one device. A `jaxebm.parallel.make_mesh` mesh: data parallel (`jaxebm.parallel.distribute`):
        data, chains and buffer split over its devices (``batch_size`` and ``buffer_size`` multiples of
        their number), everything else replicated; the step places its inputs and returns the state
        placed the same way. Same numbers as one device up to the order of reductions.

    The step takes ``x_pos (B, N, F)`` and ``mask_pos (B, N)`` bool (both with a leading
    ``iterations_per_call`` axis when that is > 1) and donates ``state``. In "zeros" mode ``mask_pos``
    is only shape-checked: the model sees every slot. A hybrid config (``config.is_hybrid``) needs
    ``labels`` int ``(B,)`` in ``[0, K)`` (checked on the host: a wrong length, dtype or value raises
    ValueError); a plain one refuses them. A non-finite loss or gradient leaves params, optimiser,
    EMA and buffer unchanged (``is_finite`` False); ``step`` and ``key`` advance regardless.

    Metrics (scalars unless noted; leading ``iterations_per_call`` axis when > 1): loss, cd, reg,
    e_pos, e_neg (mean energies), gap (= e_neg - e_pos), ce and accuracy (of the data batch; 0 for a
    plain EBM), grad_norm (raw parameter gradient), chain_grad_norm (mean |grad_x E| at the last chain
    step), sample_mean, sample_std ``(F,)`` (chain ends, real slots), lr_scale, is_finite. Without
    chains (``cd_weight = 0``) the chain metrics are those of the data jets (gap 0).
    """
    optimizer = make_optimizer(config)
    is_mask_mode = config.padding_mode == "mask"
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if config.is_hybrid and num_classes is None:
        raise ValueError("classifier_weight > 0 or class_conditional needs a hybrid model (num_classes = K)")
    has_chains = config.cd_weight > 0

    def negative_phase(state: TrainState, key_buffer, key_chain, labels):
        """Chain ends ``(B, N, F)``, their mask ``(B, N)``, buffer slots ``(B,)`` and the chain info."""
        class_ids = labels if config.class_conditional else None
        starts, slots = buffer.sample(key_buffer, state.buffer, config.batch_size, noise_fn, config.restart_prob,
                                      class_ids=class_ids)
        starts = parallel.constrain_batch(starts, mesh)
        x_start, mask = starts if is_mask_mode else (starts, jnp.ones(starts.shape[:2], bool))
        chain_energy_fn = (class_energy_fn(model, state.params, mask, labels) if config.class_conditional
                           else energy_fn(model, state.params, mask))
        x_end, chain_info = langevin.run_chain(
            key_chain, x_start, chain_energy_fn, config.langevin_config,
            config.num_langevin_steps, frozen_mask=~mask if is_mask_mode else None)
        return jax.lax.stop_gradient(x_end), mask, slots, jnp.mean(chain_info.grad_norm)

    def iteration(state: TrainState, batch):
        x_pos, mask_pos, labels = batch if len(batch) == 3 else (*batch, None)
        key, key_buffer, key_chain, key_data, key_dropout = jax.random.split(state.key, 5)
        mask_pos = mask_pos.astype(bool) if is_mask_mode else jnp.ones(x_pos.shape[:2], bool)
        data_noise = config.data_noise * jax.random.normal(key_data, x_pos.shape, x_pos.dtype)
        x_pos = jnp.where(mask_pos[..., None], x_pos + data_noise, x_pos)
        if has_chains:
            x_neg, mask_neg, slots, chain_grad_norm = negative_phase(state, key_buffer, key_chain, labels)
        else:
            x_neg = mask_neg = None
            chain_grad_norm = jnp.zeros(())

        (loss, parts), grads = jax.value_and_grad(_cd_loss, has_aux=True)(
            state.params, model, config, key_dropout, x_pos, mask_pos, x_neg, mask_neg, labels)
        params, opt_state = scaled_update(optimizer, grads, state.opt_state, state.params, state.lr_scale)
        ema_params = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay_at(state.step, config.ema_decay))
        new_buffer = (state.buffer if not has_chains
                      else buffer.push(state.buffer, (x_neg, mask_neg) if is_mask_mode else x_neg, slots))

        (params, opt_state, ema_params, new_buffer), is_finite, grad_norm = keep_if_finite(
            loss, grads, (params, opt_state, ema_params, new_buffer),
            (state.params, state.opt_state, state.ema_params, state.buffer))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params,
                                  buffer=new_buffer, key=key)
        sample_mean, sample_std = (_masked_moments(x_neg, mask_neg) if has_chains
                                   else _masked_moments(x_pos, mask_pos))
        e_pos, e_neg = jnp.mean(parts["e_pos"]), jnp.mean(parts["e_neg"])
        metrics = {
            "loss": loss, "cd": parts["cd"], "reg": parts["reg"], "e_pos": e_pos, "e_neg": e_neg,
            "gap": e_neg - e_pos, "ce": parts["ce"], "accuracy": parts["accuracy"], "grad_norm": grad_norm,
            "chain_grad_norm": chain_grad_norm, "sample_mean": sample_mean,
            "sample_std": sample_std, "lr_scale": state.lr_scale, "is_finite": is_finite,
        }
        return new_state, metrics

    def step(state: TrainState, x_pos: jax.Array, mask_pos: jax.Array, labels: jax.Array | None = None):
        _check_batch(config, x_pos, mask_pos)
        batch = (x_pos, mask_pos) if labels is None else (x_pos, mask_pos, labels)
        if config.iterations_per_call == 1:
            return iteration(state, batch)
        return jax.lax.scan(iteration, state, batch)

    if mesh is None:
        compiled = jax.jit(step, donate_argnums=0)
    else:
        parallel.check_divisible(mesh, batch_size=config.batch_size, buffer_size=config.buffer_size)
        compiled = parallel.distribute(step, mesh, batch_axis=0 if config.iterations_per_call == 1 else 1)
    batch_shape = ((config.iterations_per_call,) if config.iterations_per_call > 1 else ()) + (config.batch_size,)

    def checked_step(state: TrainState, x_pos, mask_pos, labels=None):
        if config.is_hybrid:
            if labels is None:
                raise ValueError("this hybrid CD step (classifier_weight > 0 or class_conditional) needs the "
                                 "labels of the data jets: step(state, x, mask, labels)")
            return compiled(state, x_pos, mask_pos, check_labels(labels, batch_shape, num_classes))
        if labels is not None:
            raise ValueError("labels given to a plain CD step (classifier_weight = 0, class_conditional off)")
        return compiled(state, x_pos, mask_pos)

    checked_step.lower = compiled.lower
    if hasattr(compiled, "_cache_size"):
        checked_step._cache_size = compiled._cache_size  # compilation count, for no-recompile tests
    return checked_step
