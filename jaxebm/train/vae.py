"""Training and generation of the ConVAE + normalizing-flow jet generator (seed 004), and its baselines.

The paper's three rows (Table 8), each from scaled ``(n, 3, P)`` momentum matrices
(`jaxebm.models.jet_convae.MinMaxScaler`):

- **ConVAE**: `make_vae_step`; generation decodes ``z ~ N(0, 1)`` (`make_convae_sampler`, ``flow=None``).
- **ConVAE + NF** (two steps, `train_convae_flow`): train the reconstruction-tuned ConVAE; encode the
  training jets to their posterior means; train a RealNVP on those means (`make_flow_step`);
  generation = flow sample -> decoder -> inverse scaling (`make_convae_sampler` with the flow).
- **NF only** (`train_particle_flow`): a RealNVP on the flattened scaled matrix (`flatten_momenta`: all
  px, then all py, then all pz, the paper's 1 x 90 vector); generation = flow sample -> unflatten ->
  inverse scaling (`make_particle_flow_sampler`).

Every sampler returns momenta ``(n, 3, P)`` in GeV; `jaxebm.models.jet_convae.momenta_to_constituents`
turns them into jets of the file schema. Steps are jitted with the state donated; the state is a
pytree (`ModelState`, the driver's state protocol) and a run is reproducible from its seed. Optimiser: Adam
(the paper's). Every network trains through the one driver (`jaxebm.train.loop.train_loop`, via
`fit_network`): shuffled epochs, a checkpoint and a log row (epoch means) per epoch, the non-finite guard
and rollback, exact resume; the two steps of ConVAE + NF are two phases, one run directory each.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxebm.errors import JetInputError
from jaxebm.models.jet_convae import ConVAE, ConVAELoss, MinMaxScaler, convae_loss
from jaxebm.models.flows import RealNVP
from jaxebm.train.batches import ArrayBatches
from jaxebm.train.guard import keep_if_finite, scaled_update
from jaxebm.train.loop import LoopConfig, train_loop
from jaxebm.train.monitor import read_metrics

__all__ = [
    "ModelState", "StageConfig", "encode_means", "encode_posterior", "fit_network", "flatten_momenta", "history",
    "init_flow_state", "init_vae_state", "make_convae_sampler", "make_flow_step", "make_particle_flow_sampler",
    "make_vae_step", "posterior_samples", "train_convae_flow", "train_particle_flow", "unflatten_momenta",
]


@flax.struct.dataclass
class ModelState:
    """Training state of one network (a pytree).

    step: int32 scalar, step calls made (skipped non-finite steps count too). params: Flax parameters.
    opt_state: Adam state. key: typed PRNG key, split once per step (the VAE's reparameterisation noise).
    lr_scale: float32 scalar multiplying every update (the driver lowers it on a rollback).
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    key: jax.Array
    lr_scale: jax.Array


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One training stage: Adam learning rate, batch size (jets), epochs over the training set."""

    learning_rate: float
    batch_size: int = 100
    num_epochs: int = 1


def _new_state(key: jax.Array, params: Any, learning_rate: float) -> ModelState:
    return ModelState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optax.adam(learning_rate).init(params), key=key, lr_scale=jnp.ones((), jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def _init_params(model, *args):
    """``model.init(*args)``, compiled once per model configuration (modules hash by their config)."""
    return model.init(*args)


@functools.partial(jax.jit, static_argnums=0)
def _encode(model: ConVAE, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return model.apply(params, x, method=ConVAE.encode)


def init_vae_state(key: jax.Array, model: ConVAE, learning_rate: float) -> ModelState:
    """Fresh ConVAE parameters and Adam state; ``key`` a typed PRNG key."""
    key_params, key_noise, key_state = jax.random.split(key, 3)
    example = jnp.zeros((1, 3, model.config.num_particles), jnp.float32)
    return _new_state(key_state, _init_params(model, key_params, example, key_noise), learning_rate)


def init_flow_state(key: jax.Array, flow: RealNVP, learning_rate: float) -> ModelState:
    """Fresh RealNVP parameters (identity map) and Adam state."""
    key_params, key_state = jax.random.split(key)
    example = jnp.zeros((1, flow.config.num_features), jnp.float32)
    return _new_state(key_state, _init_params(flow, key_params, example), learning_rate)


def _update(state: ModelState, loss: jax.Array, grads: Any, learning_rate: float,
            key: jax.Array) -> tuple[ModelState, dict[str, jax.Array]]:
    """Adam update scaled by ``lr_scale``; a non-finite loss or gradient keeps parameters and optimiser (the
    step count and key advance). Returns the state and the driver's metrics ``is_finite``, ``lr_scale``."""
    params, opt_state = scaled_update(optax.adam(learning_rate), grads, state.opt_state, state.params, state.lr_scale)
    (params, opt_state), is_finite, _ = keep_if_finite(loss, grads, (params, opt_state), (state.params, state.opt_state))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, key=key)
    return new_state, {"is_finite": is_finite, "lr_scale": state.lr_scale}


def make_vae_step(model: ConVAE, loss: ConVAELoss, scaler: MinMaxScaler, learning_rate: float) -> Callable:
    """Jitted ``step(state, x) -> (state, metrics)`` for scaled batches ``x (B, 3, P)``.

    metrics: ``loss`` and the parts of `jaxebm.models.jet_convae.convae_loss` (batch means), ``is_finite``,
    ``lr_scale``.
    """

    def loss_fn(params, x, key):
        reconstruction, mean, logvar = model.apply(params, x, key)
        return convae_loss(x, reconstruction, mean, logvar, scaler, loss)

    def step(state: ModelState, x: jax.Array):
        key, key_noise = jax.random.split(state.key)
        (value, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, key_noise)
        new_state, guard = _update(state, value, grads, learning_rate, key)
        return new_state, {"loss": value, **parts, **guard}

    return jax.jit(step, donate_argnums=0)


def make_flow_step(flow: RealNVP, learning_rate: float) -> Callable:
    """Jitted ``step(state, x) -> (state, {"nll", "is_finite", "lr_scale"})`` maximising ``log p(x)`` of
    ``x (B, D)``."""

    def loss_fn(params, x):
        return -jnp.mean(flow.apply(params, x, method=RealNVP.log_prob))

    def step(state: ModelState, x: jax.Array):
        value, grads = jax.value_and_grad(loss_fn)(state.params, x)
        new_state, guard = _update(state, value, grads, learning_rate, state.key)
        return new_state, {"nll": value, **guard}

    return jax.jit(step, donate_argnums=0)


def fit_network(step_fn: Callable, state: ModelState, data, run_dir: str | os.PathLike, stage: StageConfig, *,
                order_seed: Callable[[int], Any], log_fn: Callable[[int], dict] | None = None,
                progress: bool = False) -> ModelState:
    """``stage.num_epochs`` epochs of ``step_fn`` through the driver, resumed from ``run_dir``.

    Args:
      step_fn: a step of `make_vae_step` / `make_flow_step`.
      data: ``(x,)`` with ``x (n, ...)`` the training examples, or ``epoch -> (x,)`` (`ArrayBatches`).
      order_seed: ``epoch -> numpy seed`` of the epoch's shuffle; the last incomplete batch is dropped.
      log_fn: extra columns of each epoch's row (``step -> dict``).
    Writes ``run_dir/metrics.jsonl`` (per epoch: the mean of every metric over its steps) and
    ``run_dir/checkpoints`` (one per epoch, the newest kept). Returns the final state.
    """
    batches = ArrayBatches(data, stage.batch_size, order_seed=order_seed)
    steps = batches.steps_per_epoch
    loop = LoopConfig(num_steps=stage.num_epochs * steps, log_every=steps, checkpoint_every=steps, max_to_keep=1,
                      log_mean=True, progress=progress)
    return train_loop(step_fn, state, batches, run_dir, loop, log_fn=log_fn)


def history(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """The per-epoch rows (metric means) `fit_network` logged in ``run_dir``."""
    return [row for row in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "event" not in row]


def encode_posterior(model: ConVAE, params: Any, x: np.ndarray, *,
                     batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ``q(z|x)`` of scaled matrices ``x (n, 3, P)``, in batches: mean and log-variance, each
    ``(n, latent_dim)``."""
    batches = (jnp.asarray(x[start:start + batch_size], jnp.float32) for start in range(0, len(x), batch_size))
    mean, logvar = zip(*(_encode(model, params, batch) for batch in batches))
    return np.concatenate(mean), np.concatenate(logvar)


def encode_means(model: ConVAE, params: Any, x: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
    """Posterior means ``(n, latent_dim)`` of scaled matrices ``x (n, 3, P)``, in batches."""
    return encode_posterior(model, params, x, batch_size=batch_size)[0]


def posterior_samples(rng: np.random.Generator, mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """One draw ``z = mean + exp(logvar / 2) eps``, ``eps ~ N(0, 1)``, per row of ``mean, logvar (n, D)``:
    float32 ``(n, D)``, samples of the aggregate posterior of the encoded jets."""
    eps = rng.standard_normal(mean.shape)
    return (mean + np.exp(0.5 * logvar) * eps).astype(np.float32)


def flatten_momenta(x: Any) -> Any:
    """``(n, 3, P) -> (n, 3P)``: all px, then all py, then all pz (the paper's NF-only input)."""
    return x.reshape(x.shape[0], -1)


def unflatten_momenta(x: Any) -> Any:
    """Inverse of `flatten_momenta`: ``(n, 3P) -> (n, 3, P)``."""
    return x.reshape(x.shape[0], 3, -1)


def train_convae_flow(run_dir: str | os.PathLike, seed: int, scaled: np.ndarray, scaler: MinMaxScaler, vae: ConVAE,
                      loss: ConVAELoss, vae_stage: StageConfig, flow: RealNVP, flow_stage: StageConfig):
    """The paper's two-step training as two phases of the driver: the ConVAE (``run_dir/convae``), then a flow
    on its training jets' latent means (``run_dir/flow``).

    Args:
      seed: reproduces the run (initialisation, noise, shuffling).
      scaled: ``(n, 3, P)`` training matrices, already scaled by ``scaler``.
      flow: a RealNVP with ``num_features = vae.config.latent_dim``.

    Returns:
      ``(vae_params, flow_params, history)``; history: ``{"vae": [...], "flow": [...]}`` per-epoch metrics.
    """
    if flow.config.num_features != vae.config.latent_dim:
        raise JetInputError(f"flow has {flow.config.num_features} features, the latent space "
                            f"{vae.config.latent_dim} dimensions")
    run_dir = Path(run_dir)
    key_vae, key_flow = jax.random.split(jax.random.key(seed))
    vae_state = fit_network(make_vae_step(vae, loss, scaler, vae_stage.learning_rate),
                            init_vae_state(key_vae, vae, vae_stage.learning_rate), (_examples(scaled, vae_stage),),
                            run_dir / "convae", vae_stage, order_seed=lambda epoch: (seed, epoch))
    means = encode_means(vae, vae_state.params, scaled)
    flow_state = fit_network(make_flow_step(flow, flow_stage.learning_rate),
                             init_flow_state(key_flow, flow, flow_stage.learning_rate), (_examples(means, flow_stage),),
                             run_dir / "flow", flow_stage, order_seed=lambda epoch: (seed + 1, epoch))
    return vae_state.params, flow_state.params, {"vae": history(run_dir / "convae"), "flow": history(run_dir / "flow")}


def train_particle_flow(run_dir: str | os.PathLike, seed: int, scaled: np.ndarray, flow: RealNVP, stage: StageConfig):
    """The NF-only baseline: a flow on flattened scaled matrices ``(n, 3, P)``, trained in ``run_dir``.

    Returns ``(flow_params, history)`` (per-epoch metrics).
    """
    if flow.config.num_features != scaled[0].size:
        raise JetInputError(f"flow has {flow.config.num_features} features, a flattened jet {scaled[0].size}")
    state = fit_network(make_flow_step(flow, stage.learning_rate),
                        init_flow_state(jax.random.key(seed), flow, stage.learning_rate),
                        (_examples(flatten_momenta(scaled), stage),), run_dir, stage,
                        order_seed=lambda epoch: (seed, epoch))
    return state.params, history(run_dir)


def _examples(data: np.ndarray, stage: StageConfig) -> np.ndarray:
    """``data`` as float32 training examples, `JetInputError` when a batch is larger than all of them."""
    if len(data) < stage.batch_size:
        raise JetInputError(f"data holds {len(data)} examples, fewer than batch_size = {stage.batch_size}")
    return np.asarray(data, np.float32)


def make_convae_sampler(vae: ConVAE, scaler: MinMaxScaler, flow: RealNVP | None = None) -> Callable:
    """Jitted ``sample(key, num_jets, vae_params, flow_params=None) -> (num_jets, 3, P)`` GeV momenta.

    Latents come from the flow (ConVAE + NF) or, with ``flow=None``, from the N(0, 1) prior (ConVAE).
    ``num_jets`` is static (one compilation per value).
    """

    def sample(key, num_jets, vae_params, flow_params=None):
        if flow is None:
            z = jax.random.normal(key, (num_jets, vae.config.latent_dim))
        else:
            z = flow.apply(flow_params, key, num_jets, method=RealNVP.sample)
        return scaler.invert(vae.apply(vae_params, z, method=ConVAE.decode))

    return jax.jit(sample, static_argnums=1)


def make_particle_flow_sampler(flow: RealNVP, scaler: MinMaxScaler) -> Callable:
    """Jitted ``sample(key, num_jets, flow_params) -> (num_jets, 3, P)`` GeV momenta (NF-only row)."""

    def sample(key, num_jets, flow_params):
        flat = flow.apply(flow_params, key, num_jets, method=RealNVP.sample)
        return scaler.invert(unflatten_momenta(flat))

    return jax.jit(sample, static_argnums=1)
