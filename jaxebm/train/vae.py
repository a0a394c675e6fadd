"""Training and generation of the ConVAE + normalizing-flow jet generator (seed 004), and its baselines.

The paper's three rows (Table 8), each from scaled ``(n, 3, P)`` momentum matrices
(`jaxebm.models.convae.MinMaxScaler`):

- **ConVAE**: `make_vae_step`; generation decodes ``z ~ N(0, 1)`` (`make_convae_sampler`, ``flow=None``).
- **ConVAE + NF** (two steps, `train_convae_flow`): train the reconstruction-tuned ConVAE; encode the
  training jets to their posterior means; train a RealNVP on those means (`make_flow_step`);
  generation = flow sample -> decoder -> inverse scaling (`make_convae_sampler` with the flow).
- **NF only** (`train_particle_flow`): a RealNVP on the flattened scaled matrix (`flatten_momenta`: all
  px, then all py, then all pz, the paper's 1 x 90 vector); generation = flow sample -> unflatten ->
  inverse scaling (`make_particle_flow_sampler`).

Every sampler returns momenta ``(n, 3, P)`` in GeV; `jaxebm.models.convae.momenta_to_constituents`
turns them into jets of the file schema. Steps are jitted with the state donated; the state is a
pytree (`ModelState`) and a run is reproducible from its seed. Optimiser: Adam (the paper's).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxebm.errors import JetInputError
from jaxebm.models.convae import ConVAE, ConVAELoss, MinMaxScaler, convae_loss
from jaxebm.models.flows import RealNVP

__all__ = [
    "ModelState", "StageConfig", "encode_means", "encode_posterior", "fit", "flatten_momenta", "init_flow_state",
    "init_vae_state", "make_convae_sampler", "make_flow_step", "make_particle_flow_sampler",
    "make_vae_step", "posterior_samples", "train_convae_flow", "train_particle_flow", "unflatten_momenta",
]


@flax.struct.dataclass
class ModelState:
    """Training state of one network (a pytree).

    step: int32 scalar, updates made. params: Flax parameters. opt_state: Adam state.
    key: typed PRNG key, split once per step (the VAE's reparameterisation noise).
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One training stage: Adam learning rate, batch size (jets), epochs over the training set."""

    learning_rate: float
    batch_size: int = 100
    num_epochs: int = 1


def _new_state(key: jax.Array, params: Any, learning_rate: float) -> ModelState:
    return ModelState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optax.adam(learning_rate).init(params), key=key)


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


def _update(state: ModelState, grads: Any, learning_rate: float, key: jax.Array) -> ModelState:
    updates, opt_state = optax.adam(learning_rate).update(grads, state.opt_state, state.params)
    return ModelState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state, key=key)


def make_vae_step(model: ConVAE, loss: ConVAELoss, scaler: MinMaxScaler, learning_rate: float) -> Callable:
    """Jitted ``step(state, x) -> (state, metrics)`` for scaled batches ``x (B, 3, P)``.

    metrics: ``loss`` and the parts of `jaxebm.models.convae.convae_loss` (batch means).
    """

    def loss_fn(params, x, key):
        reconstruction, mean, logvar = model.apply(params, x, key)
        return convae_loss(x, reconstruction, mean, logvar, scaler, loss)

    def step(state: ModelState, x: jax.Array):
        key, key_noise = jax.random.split(state.key)
        (value, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, key_noise)
        return _update(state, grads, learning_rate, key), {"loss": value, **parts}

    return jax.jit(step, donate_argnums=0)


def make_flow_step(flow: RealNVP, learning_rate: float) -> Callable:
    """Jitted ``step(state, x) -> (state, {"nll": ...})`` maximising ``log p(x)`` of ``x (B, D)``."""

    def loss_fn(params, x):
        return -jnp.mean(flow.apply(params, x, method=RealNVP.log_prob))

    def step(state: ModelState, x: jax.Array):
        value, grads = jax.value_and_grad(loss_fn)(state.params, x)
        return _update(state, grads, learning_rate, state.key), {"nll": value}

    return jax.jit(step, donate_argnums=0)


def fit(step_fn: Callable, state: ModelState, data: np.ndarray, *, batch_size: int, num_epochs: int,
        seed: int) -> tuple[ModelState, list[dict[str, float]]]:
    """Epochs of shuffled mini-batches (the last incomplete batch dropped, so shapes never change).

    Args:
      step_fn: a step of `make_vae_step` / `make_flow_step`. data: ``(n, ...)`` training examples.
      seed: shuffling seed (numpy).

    Returns:
      The final state and, per epoch, the mean of every metric over its steps.
    """
    data = np.asarray(data, np.float32)
    if len(data) < batch_size:
        raise JetInputError(f"data holds {len(data)} examples, fewer than batch_size = {batch_size}")
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(num_epochs):
        order = rng.permutation(len(data))
        epoch = []
        for start in range(0, len(data) - batch_size + 1, batch_size):
            state, metrics = step_fn(state, jnp.asarray(data[order[start:start + batch_size]]))
            epoch.append(metrics)
        history.append({name: float(np.mean([m[name] for m in epoch])) for name in epoch[0]})
    return state, history


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


def train_convae_flow(seed: int, scaled: np.ndarray, scaler: MinMaxScaler, vae: ConVAE, loss: ConVAELoss,
                      vae_stage: StageConfig, flow: RealNVP, flow_stage: StageConfig):
    """The paper's two-step training: the ConVAE, then a flow on its training jets' latent means.

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
    key_vae, key_flow = jax.random.split(jax.random.key(seed))
    vae_state = init_vae_state(key_vae, vae, vae_stage.learning_rate)
    vae_step = make_vae_step(vae, loss, scaler, vae_stage.learning_rate)
    vae_state, vae_history = fit(vae_step, vae_state, scaled, batch_size=vae_stage.batch_size,
                                 num_epochs=vae_stage.num_epochs, seed=seed)
    means = encode_means(vae, vae_state.params, scaled)
    flow_state = init_flow_state(key_flow, flow, flow_stage.learning_rate)
    flow_step = make_flow_step(flow, flow_stage.learning_rate)
    flow_state, flow_history = fit(flow_step, flow_state, means, batch_size=flow_stage.batch_size,
                                   num_epochs=flow_stage.num_epochs, seed=seed + 1)
    return vae_state.params, flow_state.params, {"vae": vae_history, "flow": flow_history}


def train_particle_flow(seed: int, scaled: np.ndarray, flow: RealNVP, stage: StageConfig):
    """The NF-only baseline: a flow on flattened scaled matrices ``(n, 3, P)``.

    Returns ``(flow_params, history)`` (per-epoch metrics).
    """
    if flow.config.num_features != scaled[0].size:
        raise JetInputError(f"flow has {flow.config.num_features} features, a flattened jet {scaled[0].size}")
    state = init_flow_state(jax.random.key(seed), flow, stage.learning_rate)
    state, history = fit(make_flow_step(flow, stage.learning_rate), state, flatten_momenta(scaled),
                         batch_size=stage.batch_size, num_epochs=stage.num_epochs, seed=seed)
    return state.params, history


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
