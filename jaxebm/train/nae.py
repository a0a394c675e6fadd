"""Normalized autoencoder (NAE, seed 002): AE pre-training, then contrastive divergence with
on-manifold initialisation, each phase one jitted step over one state pytree.

Phase 1 (`make_ae_step`): minimise the mean per-pixel MSE with Adam(``ae_lr``).
Phase 2 (`make_nae_step`), one XLA program per iteration:
  1. latent starts ``z0 (B, D_z)``: a latent replay buffer entry, or uniform on S^(D_z-1) with
     probability ``restart_prob``;
  2. ``z_num_steps`` latent Langevin steps on ``H(z) = E(decoder(z)) / T`` on the sphere;
  3. decode, then ``x_num_steps`` data-space Langevin steps on ``E(x) / T`` inside ``x_bounds``;
  4. loss ``c^2 [(mean E(x+) - mean E(x-)) / T + gamma * mean(E^2)] + l2_weight * sum(theta^2)``, one
     forward over data and chain ends that advances the spectral-norm power iteration once;
  5. Adam update; the latent chain ends are written back to the buffer.

Chains (both follow the paper's Eq. 6, ``x <- x - lambda * grad E + sigma * eps``, with per-chain
gradient-norm clipping):
  * without Metropolis: the engine's ULA (`jaxebm.sampling.langevin`; the latent chain projected
    back to the sphere after every step, `sphere.run_langevin`), the public code's chains.
  * with Metropolis: exact MH kernels for the proposal actually used. The drift ``lambda * grad E``
    with noise ``sigma`` is the tied Langevin proposal of exp(-E / T_c) with the paper's implied
    temperature ``T_c = sigma^2 / (2 lambda)`` (Eq. 7; ``*_mh_temperature`` overrides it), so the
    chains are MALA for that target: `jaxebm.sampling.mala` in data space (bounds by reflection,
    which keeps MH exact; clamping would not) and the tangent-space MALA of `jaxebm.sampling.sphere`
    in latent space. With annealing the noise shrinks along the chain while the target stays
    exp(-E / T_c): every step remains an exact MH step.

Units: the model's intensity scale ``c`` (`ConvAEConfig.intensity_scale`, 1 by default) lets the network
see ``c x`` while images, chains and energies stay in the raw images' units (pixel pT / jet pT). The chains
run on the raw energy ``E`` with the paper's constants, which is the paper's dynamics in the paper's units;
in the network's units ``E' = c^2 E`` the same chains read lambda_z / c^2, sigma_x * c, data-chain clip * c,
bounds * c and gamma / c^2. The losses of both phases are taken in the network's units (``c^2`` times the
raw-unit CD, penalty and MSE terms; the L2 term unscaled), so Adam sees the gradients of a network trained on
``c x`` (with its eps of 1e-8 against raw-unit gradients of ~1e-8 the AE would barely move). Metrics
``e_pos``, ``e_neg``, ``cd``, ``penalty`` are raw units; ``loss`` is the network-unit loss.

Where the public code differs from the paper (`PUBLIC_CODE` holds its values; use
``dataclasses.replace(NAEConfig(), **PUBLIC_CODE)``): latent step 0.1 and noise 0.05, data step 100,
gradient-norm clip 0.01 on the data chain, data samples clamped to [0, 1], ULA (its Metropolis test
assumes sigma^2 = 2 lambda, so it is no valid correction of its decoupled chains), the squared-energy
penalty on negatives, and a FIFO latent buffer.

Example::

    model = ConvAE(ConvAEConfig())
    config = NAEConfig()
    state = create_state(jax.random.key(0), model, config, images[:8])
    ae_step = make_ae_step(model, config)
    for batch in ae_batches:                       # (ae_batch_size, 40, 40), check_images'd
        state, metrics = ae_step(state, batch)
    state = start_nae_phase(state, config)
    nae_step = make_nae_step(model, config)
    for batch in nae_batches:                      # (batch_size, 40, 40)
        state, metrics = nae_step(state, batch)    # the old state is donated: do not reuse it
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxebm.sampling import buffer, langevin, mala, sphere
from jaxebm.sampling.buffer import BufferState
from jaxebm.sampling.langevin import LangevinConfig
from jaxebm.sampling.schedules import InverseTime
from jaxebm.train.guard import keep_if_finite, scaled_update

__all__ = ["PUBLIC_CODE", "NAEConfig", "NAEState", "NegativeSamples", "create_state", "start_nae_phase",
           "make_ae_step", "make_nae_step", "energy_fn", "latent_energy_fn", "sample_negatives", "latent_chain_paths"]

ANNEALING = ("none", "inverse_time")
PENALTY_TARGETS = ("positive", "negative", "both")

PUBLIC_CODE = dict(z_step_size=0.1, z_noise_scale=0.05, x_step_size=100.0, x_grad_clip_norm=0.01,
                   x_bounds_mode="clamp", z_metropolis=False, x_metropolis=False, gamma_on="negative",
                   buffer_replacement="fifo")


@dataclass(frozen=True)
class NAEConfig:
    """NAE settings; frozen and hashable. Defaults are the paper's (Table 1, section 2, appendix A)
    where it gives a value; otherwise the public code's (marked "public").

    ae_lr, ae_batch_size, ae_num_iterations: AE pre-training, 1e-3, 2048, 15k.
    lr, batch_size, num_iterations: NAE phase, 1e-5, 128, 40k. adam_b1, adam_b2: PyTorch's Adam.
    grad_clip_norm: global-norm clip of the parameter gradient in both phases, or None (paper).
    z_num_steps, z_step_size, z_noise_scale: latent chain, 30 steps, lambda 100, sigma 1e-2
      (public: 0.1, 0.05). z_grad_clip_norm: per-chain clip of |grad_z H| (public: None).
    z_metropolis: exact tangent-space MALA on the sphere (paper: Metropolis) or projected ULA.
    z_mh_temperature: MH target temperature, None for sigma^2 / (2 lambda) (module doc).
    buffer_size, restart_prob, buffer_replacement: latent replay buffer, 10k, reuse prob. 0.95,
      "fifo" (chain ends replace the oldest entries; public) or "random" (the drawn entries).
    x_num_steps, x_step_size, x_noise_scale: data chain, 30 steps, lambda 50, sigma 1e-4 (public
      lambda 100). x_noise_anneal: "inverse_time" (sigma / (1 + t), the public code's; the paper
      anneals without a formula) or "none". x_grad_clip_norm: per-chain clip of |grad_x E|, 0.01
      (public; the paper clips without a value). x_metropolis, x_mh_temperature: as for z.
    x_bounds, x_bounds_mode: pixel range (0, 1); "reflect" (exact under MH) or "clamp" (public).
    temperature: T dividing the energy in the chains and the CD term. gamma: squared-energy penalty
      weight (public 1; paper: no value). gamma_on: "positive" (the paper: "the average squared
      energy of the training batch"), "negative" (public) or "both" (mean over both batches).
    l2_weight: L2 of all parameters (raw, before spectral normalisation), 1e-8.
    """

    ae_lr: float = 1e-3
    ae_batch_size: int = 2048
    ae_num_iterations: int = 15_000
    lr: float = 1e-5
    batch_size: int = 128
    num_iterations: int = 40_000
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    grad_clip_norm: float | None = None
    z_num_steps: int = 30
    z_step_size: float = 100.0
    z_noise_scale: float = 1e-2
    z_grad_clip_norm: float | None = None
    z_metropolis: bool = True
    z_mh_temperature: float | None = None
    buffer_size: int = 10_000
    restart_prob: float = 0.05
    buffer_replacement: str = "fifo"
    x_num_steps: int = 30
    x_step_size: float = 50.0
    x_noise_scale: float = 1e-4
    x_noise_anneal: str = "inverse_time"
    x_grad_clip_norm: float | None = 0.01
    x_metropolis: bool = True
    x_mh_temperature: float | None = None
    x_bounds: tuple[float, float] = (0.0, 1.0)
    x_bounds_mode: str = "reflect"
    temperature: float = 1.0
    gamma: float = 1.0
    gamma_on: str = "positive"
    l2_weight: float = 1e-8

    def __post_init__(self):
        for name in ("ae_batch_size", "ae_num_iterations", "batch_size", "num_iterations", "z_num_steps",
                     "buffer_size", "x_num_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        choices = {"x_noise_anneal": ANNEALING, "gamma_on": PENALTY_TARGETS,
                   "buffer_replacement": ("random", "fifo"), "x_bounds_mode": ("clamp", "reflect")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.x_metropolis and self.x_bounds_mode == "clamp":
            raise ValueError("x_metropolis with x_bounds_mode='clamp' is not an exact MH kernel "
                             "(point masses at the walls): use 'reflect'")
        if not 0.0 <= self.restart_prob <= 1.0 or self.temperature <= 0:
            raise ValueError(f"need 0 <= restart_prob <= 1 and temperature > 0, got {self.restart_prob}, "
                             f"{self.temperature}")
        object.__setattr__(self, "x_bounds", tuple(self.x_bounds))
        for chain_config in ("latent_chain_config", "data_chain_config"):
            getattr(self, chain_config)  # building it validates the chain settings

    @property
    def latent_chain_config(self) -> LangevinConfig:
        """The latent chain as a `LangevinConfig` (module doc)."""
        return _chain_config(self.z_step_size, self.z_noise_scale, self.z_metropolis, self.z_mh_temperature,
                             self.z_grad_clip_norm)

    @property
    def data_chain_config(self) -> LangevinConfig:
        """The data-space chain as a `LangevinConfig` (module doc)."""
        noise = InverseTime(self.x_noise_scale) if self.x_noise_anneal == "inverse_time" else self.x_noise_scale
        return _chain_config(self.x_step_size, noise, self.x_metropolis, self.x_mh_temperature,
                             self.x_grad_clip_norm, bounds=self.x_bounds, bounds_mode=self.x_bounds_mode)


def _chain_config(step_size: float, noise, metropolis: bool, mh_temperature: float | None,
                  grad_clip_norm: float | None, **bounds) -> LangevinConfig:
    """Engine config whose drift is ``-step_size * clip(grad E)`` and noise ``noise`` (float or
    schedule). Under MH the target is exp(-E / T_c) with ``T_c = sigma_0^2 / (2 step_size)`` unless
    given; the engine's drift ``-s * grad / T_c`` then needs ``s = step_size * T_c``."""
    if not metropolis:
        return LangevinConfig(step_size, noise, grad_clip_norm=grad_clip_norm, **bounds)
    sigma_0 = noise.init_value if isinstance(noise, InverseTime) else noise
    if mh_temperature is not None:
        chain_temperature = mh_temperature
    else:
        chain_temperature = sigma_0**2 / (2.0 * step_size) if step_size > 0 else 0.0
    if not chain_temperature > 0:
        raise ValueError(f"Metropolis chains need a positive target temperature; step {step_size}, "
                         f"noise {sigma_0}, mh_temperature {mh_temperature}")
    return LangevinConfig(step_size * chain_temperature, noise, temperature=chain_temperature,
                          grad_clip_norm=grad_clip_norm, **bounds)


@flax.struct.dataclass
class NAEState:
    """Everything a resumed NAE run needs (a pytree; no static fields).

    step: int32 scalar, step calls so far (AE phase, then NAE phase). params: the 'params' collection.
    spectral: the other collections of `model.init` (spectral norm's ``batch_stats``: vectors ``u``
      and estimates ``sigma``), ``{}`` without spectral norm. opt_state: optax state of the phase's
      optimiser. buffer: latent replay buffer, samples ``(buffer_size, D_z)`` on the sphere.
    key: typed PRNG key, split once per step. lr_scale: float32 multiplier of every update (the
      training loop halves it on a rollback).
    """

    step: jax.Array
    params: Any
    spectral: Any
    opt_state: optax.OptState
    buffer: BufferState
    key: jax.Array
    lr_scale: jax.Array


class NegativeSamples(NamedTuple):
    """One iteration's chains: z_start, z_end ``(B, D_z)``; x_init (decoded z_end), x_end
    ``(B, P, P)``; slots ``(B,)`` int32 buffer entries written with z_end."""

    z_start: jax.Array
    z_end: jax.Array
    x_init: jax.Array
    x_end: jax.Array
    slots: jax.Array


def _optimizer(config: NAEConfig, lr: float) -> optax.GradientTransformation:
    adam = optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2)
    return adam if config.grad_clip_norm is None else optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adam)


def _latent_noise_fn(latent_dim: int) -> Callable:
    return lambda key, num: sphere.uniform(key, num, latent_dim)


def create_state(key, model: nn.Module, config: NAEConfig, example_images: jax.Array) -> NAEState:
    """Phase-1 state: ``model.init`` on ``example_images (B, P, P)``, an Adam(``ae_lr``) state, and
    a latent buffer of ``buffer_size`` uniform points on the sphere."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    key_params, key_buffer, key_train = jax.random.split(key, 3)
    variables = dict(jax.jit(model.init)(key_params, example_images))
    params = variables.pop("params")
    return NAEState(
        step=jnp.zeros((), jnp.int32), params=params, spectral=variables,
        opt_state=_optimizer(config, config.ae_lr).init(params),
        buffer=buffer.init(key_buffer, _latent_noise_fn(model.config.latent_dim), config.buffer_size),
        key=key_train, lr_scale=jnp.ones((), jnp.float32))


def start_nae_phase(state: NAEState, config: NAEConfig) -> NAEState:
    """The pre-trained state with a fresh Adam(``lr``) and the lr scale reset to 1. The step count
    goes on (one checkpoint sequence over both phases); applying it twice gives the same state."""
    return state.replace(opt_state=_optimizer(config, config.lr).init(state.params), lr_scale=jnp.ones((), jnp.float32))


def energy_fn(model: nn.Module, params, spectral, temperature: float = 1.0) -> Callable:
    """Sampler closure ``x (B, P, P) -> E(x) / T (B,)``: stop-gradient parameters, stored spectral
    stats (not advanced)."""
    variables = jax.lax.stop_gradient({"params": params, **spectral})
    return lambda x: model.apply(variables, x, method="energy") / temperature


def latent_energy_fn(model: nn.Module, params, spectral, temperature: float = 1.0) -> Callable:
    """Sampler closure ``z (B, D_z) -> H(z) / T = E(decode(z)) / T (B,)``, as `energy_fn`."""
    variables = jax.lax.stop_gradient({"params": params, **spectral})
    return lambda z: model.apply(variables, z, method="latent_energy") / temperature


def sample_negatives(key, model: nn.Module, config: NAEConfig, state: NAEState):
    """On-manifold negatives: buffer/uniform latent starts, latent chain, decode, data chain.

    Returns `NegativeSamples` (``B = config.batch_size``) and per-chain infos
    ``(latent ChainInfo, data ChainInfo)`` with leaves ``(num_steps, B)``.
    """
    key_buffer, key_z, key_x = jax.random.split(key, 3)
    z_start, slots = buffer.sample(key_buffer, state.buffer, config.batch_size,
                                   _latent_noise_fn(model.config.latent_dim), config.restart_prob,
                                   replacement=config.buffer_replacement)
    h_fn = latent_energy_fn(model, state.params, state.spectral, config.temperature)
    run_z = sphere.run_chain if config.z_metropolis else sphere.run_langevin
    z_end, z_info = run_z(key_z, z_start, h_fn, config.latent_chain_config, config.z_num_steps, trace=True)
    variables = jax.lax.stop_gradient({"params": state.params, **state.spectral})
    x_init = model.apply(variables, z_end, method="decode")
    e_fn = energy_fn(model, state.params, state.spectral, config.temperature)
    run_x = mala.run_chain if config.x_metropolis else langevin.run_chain
    x_end, x_info = run_x(key_x, x_init, e_fn, config.data_chain_config, config.x_num_steps, trace=True)
    samples = NegativeSamples(z_start, z_end, x_init, x_end, slots)
    return jax.tree.map(jax.lax.stop_gradient, samples), (z_info, x_info)


def latent_chain_paths(key, model: nn.Module, config: NAEConfig, state: NAEState, z_start: jax.Array) -> jax.Array:
    """Positions ``(z_num_steps + 1, B, D_z)`` of latent chains from ``z_start (B, D_z)`` with the
    training chain's kernel (for plots of the latent landscape); the first row is ``z_start``."""
    h_fn = latent_energy_fn(model, state.params, state.spectral, config.temperature)
    chain_config = config.latent_chain_config
    if config.z_metropolis:
        chain_state = sphere.init(sphere.project(z_start), h_fn)
        step_fn = lambda k, s: sphere.step(k, s, h_fn, chain_config)  # noqa: E731
    else:
        chain_state = langevin.init(z_start)
        step_fn = lambda k, s: langevin.step(k, s, h_fn, chain_config, project_fn=sphere.project)  # noqa: E731

    def body(chain_state, step_key):
        chain_state, _ = step_fn(step_key, chain_state)
        return chain_state, chain_state.position

    _, positions = jax.lax.scan(body, chain_state, jax.random.split(key, config.z_num_steps))
    return jnp.concatenate([z_start[None], positions])


def _energies_updating(model: nn.Module, params, spectral, x: jax.Array):
    """Energies ``(B,)`` of ``x`` with the power iteration advanced once: ``(energies, new spectral)``."""
    energies, updated = model.apply({"params": params, **spectral}, x, update_stats=True, method="energy",
                                    mutable=list(spectral))
    return energies, dict(updated)


def _l2(params) -> jax.Array:
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params))


def _loss_scale(model: nn.Module) -> float:
    """``c^2``: raw-unit energies times this are the network's units (module doc)."""
    return model.config.intensity_scale ** 2


def _nae_loss(params, model: nn.Module, config: NAEConfig, spectral, x_pos, x_neg):
    """NAE loss (network units) and its parts (raw units); one forward over ``concat(x_pos, x_neg)``."""
    energies, new_spectral = _energies_updating(model, params, spectral, jnp.concatenate([x_pos, x_neg]))
    e_pos, e_neg = jnp.split(energies, 2)
    cd = (jnp.mean(e_pos) - jnp.mean(e_neg)) / config.temperature
    squared = {"positive": e_pos, "negative": e_neg, "both": energies}[config.gamma_on]
    penalty = jnp.mean(jnp.square(squared))
    l2 = _l2(params)
    loss = _loss_scale(model) * (cd + config.gamma * penalty) + config.l2_weight * l2
    return loss, (new_spectral, {"cd": cd, "penalty": penalty, "l2": l2, "e_pos": jnp.mean(e_pos),
                                 "e_neg": jnp.mean(e_neg)})


def _ae_loss(params, model: nn.Module, spectral, x):
    """Mean MSE, network units (``c^2`` times ``e_pos``, the raw-unit mean). Phase 1 has no negatives:
    ``e_neg`` repeats ``e_pos`` and ``gap`` is 0, so the health monitor's energy checks read the data
    energy only."""
    energies, new_spectral = _energies_updating(model, params, spectral, x)
    e_pos = jnp.mean(energies)
    return _loss_scale(model) * e_pos, (new_spectral, {"e_pos": e_pos, "e_neg": e_pos, "gap": jnp.zeros_like(e_pos)})


def _apply_update(state: NAEState, optimizer, loss, grads, new_spectral, new_buffer=None):
    """Optax update scaled by ``lr_scale``; a non-finite loss or gradient keeps params, optimiser,
    spectral stats and buffer. Returns the new state (step and key advance elsewhere) and metrics."""
    params, opt_state = scaled_update(optimizer, grads, state.opt_state, state.params, state.lr_scale)
    new = (params, opt_state, new_spectral, state.buffer if new_buffer is None else new_buffer)
    old = (state.params, state.opt_state, state.spectral, state.buffer)
    (params, opt_state, spectral, buffer_state), is_finite, grad_norm = keep_if_finite(loss, grads, new, old)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, spectral=spectral,
                              buffer=buffer_state)
    return new_state, {"loss": loss, "grad_norm": grad_norm, "lr_scale": state.lr_scale, "is_finite": is_finite}


def _check_images_shape(images: jax.Array, model: nn.Module, batch_size: int) -> None:
    """Shape check at trace time (shapes are static): ``(batch_size, P, P)``."""
    size = model.config.image_size
    if images.shape != (batch_size, size, size):
        raise ValueError(f"images must be ({batch_size}, {size}, {size}), got {images.shape}")


def make_ae_step(model: nn.Module, config: NAEConfig) -> Callable:
    """Jitted phase-1 step ``step(state, images (ae_batch_size, P, P)) -> (state, metrics)``
    (donates ``state``). Metrics: loss (c^2 e_pos), e_pos (the mean MSE, raw units; e_neg = e_pos, gap = 0),
    grad_norm, lr_scale, is_finite."""
    optimizer = _optimizer(config, config.ae_lr)

    def step(state: NAEState, images):
        _check_images_shape(images, model, config.ae_batch_size)
        (loss, (new_spectral, parts)), grads = jax.value_and_grad(_ae_loss, has_aux=True)(
            state.params, model, state.spectral, images)
        new_state, metrics = _apply_update(state, optimizer, loss, grads, new_spectral)
        return new_state, {**metrics, **parts}

    return jax.jit(step, donate_argnums=0)


def make_nae_step(model: nn.Module, config: NAEConfig, *, with_samples: bool = False) -> Callable:
    """Jitted NAE step ``step(state, images (batch_size, P, P)) -> (state, metrics)`` (module doc),
    or ``(state, metrics, NegativeSamples)`` with ``with_samples``; donates ``state``.

    Metrics (scalars): loss (network units, module doc), cd (= (e_pos - e_neg) / T), penalty (mean squared energy), l2, e_pos,
    e_neg (mean energies), gap (= e_neg - e_pos), z_energy, x_energy (mean chain energies H / T and
    E / T at the last step, as the kernels' `ChainInfo` reports them),
    z_acceptance, x_acceptance (mean MH acceptance probability over steps and chains; 1 for ULA),
    z_grad_norm, x_grad_norm (mean chain gradient norms at the last step), grad_norm (parameter
    gradient), x_neg_mean (mean pixel of the negatives), lr_scale, is_finite.
    """
    optimizer = _optimizer(config, config.lr)

    def step(state: NAEState, images):
        _check_images_shape(images, model, config.batch_size)
        key, key_chains = jax.random.split(state.key)
        samples, (z_info, x_info) = sample_negatives(key_chains, model, config, state)
        (loss, (new_spectral, parts)), grads = jax.value_and_grad(_nae_loss, has_aux=True)(
            state.params, model, config, state.spectral, images, samples.x_end)
        new_buffer = buffer.push(state.buffer, samples.z_end, samples.slots)
        new_state, metrics = _apply_update(state, optimizer, loss, grads, new_spectral, new_buffer)
        metrics.update(parts, gap=parts["e_neg"] - parts["e_pos"], z_energy=jnp.mean(z_info.energy[-1]),
                       x_energy=jnp.mean(x_info.energy[-1]),
                       z_acceptance=jnp.mean(z_info.acceptance_rate), x_acceptance=jnp.mean(x_info.acceptance_rate),
                       z_grad_norm=jnp.mean(z_info.grad_norm[-1]), x_grad_norm=jnp.mean(x_info.grad_norm[-1]),
                       x_neg_mean=jnp.mean(samples.x_end))
        new_state = new_state.replace(key=key)
        return (new_state, metrics, samples) if with_samples else (new_state, metrics)

    return jax.jit(step, donate_argnums=0)
