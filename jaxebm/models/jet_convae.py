"""Convolutional VAE of the ConVAE + normalizing-flow jet generator (Orzari et al. 2023, seed 004).

Representation: the ``P = 30`` hardest particles of a jet as a ``(3, P)`` matrix of ``(px, py, pz)``
in GeV (rows: features, columns: particles), zero columns for padding (`jets_to_momenta`), min-max
scaled per feature to [0, 1] (`MinMaxScaler`). Particles are massless: ``E = |p|``.

Architecture (paper section 3.1, layer sizes of its public code ``borzari/ConVAE_Jet``)::

    x (B, 3, P) --Conv(3 x k, F)--Conv(1 x k, 2F)-- ... --Conv(1 x k, 2^(L-1) F)-- (B, 1, P - L(k-1), 2^(L-1) F)
      --flatten--Dense(N_linear)--Dense(2 latent) -> (mean, logvar)
    z (B, latent) --Dense(N_linear)--Dense(flat)--reshape--ConvT(1 x k, 2^(L-2) F) ... ConvT(1 x k, F)
      --ConvT(3 x k, 1)--sigmoid -> (B, 3, P) in (0, 1)

Stride 1, no padding; the activation follows every layer except the encoder's last Dense, and the
decoder ends in a sigmoid. Parameters use Flax's default initialisers (the paper does not say).

Loss (paper eqs. 2-5), averaged over the jets of a batch::

    L = (1 - beta) [alpha * Chamfer + gamma * (g_pT (pT - pT^)^2 + g_m (m - m^)^2)] + beta * KL

- Chamfer (`chamfer_distance`): over all ``P`` slots, unmasked, as in the paper: padded slots are
  particles at zero momentum, which is how the decoder learns the multiplicity. Distances are
  squared Euclidean by default (the public code; the paper's text says Euclidean: ``squared_chamfer``).
- Chamfer, jet pT and jet mass are all computed from the unscaled momenta in GeV, so every term of
  ``L_rec`` is in GeV^2; only this makes the paper's weights consistent (``g_m ~ <pT> / <m>``,
  ``beta`` near 1 for generation, near 0 for reconstruction).
- KL of the diagonal Gaussian posterior to N(0, 1), summed over latent dimensions.

Generated matrices go back to jets with `momenta_to_constituents`: a slot is a particle when its pT
exceeds ``min_pt`` (0.25 GeV, the public code's cut).

Example:
    >>> preset = RECONSTRUCTION  # doctest: +SKIP
    >>> model = ConVAE(preset.model)  # doctest: +SKIP
    >>> recon, mean, logvar = model.apply(params, scaler.apply(momenta), key)  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.errors import JetInputError
from jaxebm.models.common import activation
from jaxebm.models.precision import check_compute_dtype, dense_dot_general

__all__ = [
    "GENERATION", "RECONSTRUCTION", "ConVAE", "ConVAEConfig", "ConVAELoss", "ConVAEPreset", "MinMaxScaler",
    "chamfer_distance", "convae_loss", "jet_pt_mass", "jets_to_momenta", "kl_divergence",
    "momenta_to_constituents",
]

NUM_FEATURES = 3  # (px, py, pz)


@dataclasses.dataclass(frozen=True)
class ConVAEConfig:
    """ConVAE architecture; frozen and hashable.

    num_particles: P, columns of the input matrix. latent_dim: dimension of z.
    num_filters: F, filters of the first convolution (layer l has ``2^l F``).
    kernel_size: k, particles a convolution spans. num_linear: width of the Dense layer beside the latent.
    num_conv_layers: L, convolutions in the encoder (transposed ones in the decoder).
    activation: name in `jaxebm.models.common.ACTIVATIONS`.
    compute_dtype: precision policy of the Dense products (`jaxebm.models.precision`): "float32" (default) or
      "bfloat16"; the convolutions stay float32 (no faster in bf16 on this CPU, precision module doc).
    """

    num_particles: int = 30
    latent_dim: int = 180
    num_filters: int = 50
    kernel_size: int = 2
    num_linear: int = 3000
    num_conv_layers: int = 4
    activation: str = "relu"
    compute_dtype: str = "float32"

    def __post_init__(self):
        activation(self.activation)  # validates the name
        check_compute_dtype(self.compute_dtype)
        if min(self.num_particles, self.latent_dim, self.num_filters, self.kernel_size,
               self.num_linear, self.num_conv_layers) < 1:
            raise JetInputError(f"ConVAEConfig sizes must be positive: {self}")
        if self.conv_width < 1:
            raise JetInputError(
                f"{self.num_conv_layers} convolutions of kernel {self.kernel_size} do not fit "
                f"{self.num_particles} particles")

    @property
    def conv_width(self) -> int:
        """Particle axis after the encoder's convolutions, ``P - L (k - 1)``."""
        return self.num_particles - self.num_conv_layers * (self.kernel_size - 1)


@dataclasses.dataclass(frozen=True)
class ConVAELoss:
    """Loss weights of ``(1 - beta) [alpha Chamfer + gamma (g_pT MSE_pT + g_m MSE_m)] + beta KL``."""

    alpha: float
    beta: float
    gamma: float
    gamma_pt: float
    gamma_mass: float
    squared_chamfer: bool = True

    def __post_init__(self):
        if not 0.0 <= self.beta <= 1.0:
            raise JetInputError(f"beta must be in [0, 1], got {self.beta}")


class ConVAEPreset(NamedTuple):
    """A tuned ConVAE: architecture, loss weights, Adam learning rate, batch size (paper: 100)."""

    model: ConVAEConfig
    loss: ConVAELoss
    learning_rate: float
    batch_size: int = 100


# Paper Table 4: the ConVAE tuned for generation (sampled from the N(0, 1) prior).
GENERATION = ConVAEPreset(
    ConVAEConfig(latent_dim=190, num_filters=75, kernel_size=3, num_linear=1100, num_conv_layers=4),
    ConVAELoss(alpha=0.449, beta=0.998, gamma=0.118, gamma_pt=0.817, gamma_mass=11.7),
    learning_rate=6.1e-4)
# Paper Table 5: the ConVAE tuned for reconstruction, whose latent means the flow learns.
RECONSTRUCTION = ConVAEPreset(
    ConVAEConfig(latent_dim=180, num_filters=50, kernel_size=2, num_linear=3000, num_conv_layers=4),
    ConVAELoss(alpha=0.425, beta=0.046, gamma=0.121, gamma_pt=1.15, gamma_mass=11.8),
    learning_rate=5.3e-4)


def _check_momenta(name: str, momenta: Any, num_particles: int | None = None) -> None:
    """Shape check of a ``(..., 3, P)`` momentum matrix (traceable: shapes only)."""
    shape = np.shape(momenta)
    if len(shape) < 2 or shape[-2] != NUM_FEATURES or (num_particles is not None and shape[-1] != num_particles):
        expected = "P" if num_particles is None else num_particles
        raise JetInputError(f"{name} must be (..., 3, {expected}) (px, py, pz) x particles, got shape {shape}")


def jets_to_momenta(constituents: Any, mask: Any, num_particles: int = 30) -> np.ndarray:
    """The ``(px, py, pz)`` matrices of the ``num_particles`` hardest particles of each jet.

    Args:
      constituents: ``(n_jets, N, 4)`` four-momenta ``(E, px, py, pz)`` in GeV (the file schema).
      mask: bool ``(n_jets, N)``; padded slots must hold zero momentum, real ones non-zero momentum.
      num_particles: P; jets with fewer real particles get zero columns.

    Returns:
      float32 ``(n_jets, 3, P)`` in GeV, columns ordered by decreasing pT.
    """
    constituents = np.asarray(constituents, np.float64)
    mask = np.asarray(mask)
    if constituents.ndim != 3 or constituents.shape[2] != 4:
        raise JetInputError(f"constituents must be (n_jets, N, 4), got shape {constituents.shape}")
    if mask.dtype != bool or mask.shape != constituents.shape[:2]:
        raise JetInputError(f"mask must be bool {constituents.shape[:2]}, got {mask.dtype} {mask.shape}")
    if not np.isfinite(constituents).all():
        raise JetInputError("constituents contain NaN or inf values")
    momenta = constituents[..., 1:]
    is_zero = ~momenta.any(axis=-1)
    if np.any(~mask & ~is_zero):
        raise JetInputError("mask is inconsistent with the constituents: a padded slot has non-zero momentum")
    if np.any(mask & is_zero):
        raise JetInputError("mask is inconsistent with the constituents: a real particle has zero momentum")
    pt = np.where(mask, np.hypot(momenta[..., 0], momenta[..., 1]), -1.0)
    order = np.argsort(-pt, axis=1, kind="stable")[:, :num_particles]
    hardest = np.take_along_axis(np.where(mask[..., None], momenta, 0.0), order[..., None], axis=1)
    missing = num_particles - hardest.shape[1]
    hardest = np.pad(hardest, ((0, 0), (0, max(missing, 0)), (0, 0)))
    return np.transpose(hardest, (0, 2, 1)).astype(np.float32)


def momenta_to_constituents(momenta: Any, *, min_pt: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Jets in the file schema from ``(n_jets, 3, P)`` momenta in GeV (e.g. decoded samples).

    A slot is a particle when its pT exceeds ``min_pt`` (GeV); others become padding.

    Returns:
      ``constituents`` float32 ``(n_jets, P, 4)`` massless ``(E = |p|, px, py, pz)``, pT-ordered and
      zero-padded, and ``mask`` bool ``(n_jets, P)``.
    """
    momenta = np.asarray(momenta, np.float64)
    _check_momenta("momenta", momenta)
    particles = np.transpose(momenta, (0, 2, 1))
    pt = np.hypot(particles[..., 0], particles[..., 1])
    order = np.argsort(-pt, axis=1, kind="stable")
    particles = np.take_along_axis(particles, order[..., None], axis=1)
    mask = np.take_along_axis(pt, order, axis=1) > min_pt
    four = np.concatenate([np.linalg.norm(particles, axis=-1, keepdims=True), particles], axis=-1)
    return np.where(mask[..., None], four, 0.0).astype(np.float32), mask


@dataclasses.dataclass(frozen=True, eq=False)
class MinMaxScaler:
    """Per-feature map of ``(px, py, pz)`` onto [0, 1]: ``(p - minimum) / (maximum - minimum)``.

    Fitted over every slot of the training matrices, padded zeros included (as the public code).
    `apply` / `invert` take numpy or jax ``(..., 3, P)`` arrays (jittable) and keep their dtype.

    Attributes:
      minimum, maximum: float64 ``(3,)`` in GeV.
    """

    minimum: np.ndarray
    maximum: np.ndarray

    def __post_init__(self):
        minimum, maximum = np.array(self.minimum, np.float64), np.array(self.maximum, np.float64)
        if minimum.shape != (NUM_FEATURES,) or maximum.shape != (NUM_FEATURES,):
            raise JetInputError(f"minimum and maximum must be (3,), got {minimum.shape} and {maximum.shape}")
        if not np.all(maximum > minimum):
            raise JetInputError(f"maximum must exceed minimum per feature, got {minimum} and {maximum}")
        minimum.flags.writeable = maximum.flags.writeable = False
        object.__setattr__(self, "minimum", minimum)
        object.__setattr__(self, "maximum", maximum)

    @classmethod
    def fit(cls, momenta: Any) -> MinMaxScaler:
        """Per-feature extremes of training matrices ``(n_jets, 3, P)`` in GeV (finite values only)."""
        momenta = np.asarray(momenta, np.float64)
        _check_momenta("momenta", momenta)
        if not np.isfinite(momenta).all():
            raise JetInputError("momenta contain NaN or inf values: cannot fit a MinMaxScaler")
        features = np.moveaxis(momenta, -2, 0).reshape(NUM_FEATURES, -1)
        return cls(minimum=features.min(axis=1), maximum=features.max(axis=1))

    def apply(self, momenta: Any) -> Any:
        """``(..., 3, P)`` GeV -> scaled; training data lands in [0, 1]."""
        _check_momenta("momenta", momenta)
        scaled = (momenta - self.minimum[:, None]) / (self.maximum - self.minimum)[:, None]
        return scaled.astype(momenta.dtype)

    def invert(self, scaled: Any) -> Any:
        """``(..., 3, P)`` scaled -> GeV."""
        _check_momenta("scaled", scaled)
        momenta = scaled * (self.maximum - self.minimum)[:, None] + self.minimum[:, None]
        return momenta.astype(scaled.dtype)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"minimum": [...], "maximum": [...]}`` (JSON-serialisable)."""
        return {"minimum": self.minimum.tolist(), "maximum": self.maximum.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MinMaxScaler:
        """Inverse of `to_dict`."""
        missing = {"minimum", "maximum"} - set(data)
        if missing:
            raise JetInputError(f"MinMaxScaler dict lacks keys {sorted(missing)}")
        return cls(minimum=np.asarray(data["minimum"]), maximum=np.asarray(data["maximum"]))


class _Encoder(nn.Module):
    config: ConVAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        c, act = self.config, activation(self.config.activation)
        h = act(nn.Conv(c.num_filters, (NUM_FEATURES, c.kernel_size), padding="VALID")(x[..., None]))
        for layer in range(1, c.num_conv_layers):
            h = act(nn.Conv(2**layer * c.num_filters, (1, c.kernel_size), padding="VALID")(h))
        product = dense_dot_general(c.compute_dtype)
        h = act(nn.Dense(c.num_linear, dot_general=product)(h.reshape(h.shape[0], -1)))
        mean, logvar = jnp.split(nn.Dense(2 * c.latent_dim, dot_general=product)(h), 2, axis=-1)
        return mean, logvar


class _Decoder(nn.Module):
    config: ConVAEConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        c, act = self.config, activation(self.config.activation)
        channels = 2 ** (c.num_conv_layers - 1) * c.num_filters
        product = dense_dot_general(c.compute_dtype)
        h = act(nn.Dense(c.num_linear, dot_general=product)(z))
        h = act(nn.Dense(c.conv_width * channels, dot_general=product)(h)).reshape(z.shape[0], 1, c.conv_width,
                                                                                  channels)
        for layer in reversed(range(c.num_conv_layers - 1)):
            h = act(nn.ConvTranspose(2**layer * c.num_filters, (1, c.kernel_size), padding="VALID")(h))
        h = nn.ConvTranspose(1, (NUM_FEATURES, c.kernel_size), padding="VALID")(h)
        return nn.sigmoid(h[..., 0])


class ConVAE(nn.Module):
    """Convolutional VAE over scaled ``(B, 3, P)`` momentum matrices (see the module docstring).

    Methods (``model.apply(params, ..., method=...)``):
      encode(x (B, 3, P)) -> (mean, logvar), each ``(B, latent_dim)``.
      decode(z (B, latent_dim)) -> ``(B, 3, P)`` in (0, 1).
      __call__(x, key) -> (reconstruction (B, 3, P), mean, logvar), z drawn with ``key``.
    """

    config: ConVAEConfig = ConVAEConfig()

    def setup(self):
        self.encoder = _Encoder(self.config)
        self.decoder = _Decoder(self.config)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Posterior mean and log-variance of scaled matrices ``x (B, 3, P)``."""
        _check_momenta("x", x, self.config.num_particles)
        if x.ndim != 3:
            raise JetInputError(f"x must be (B, 3, {self.config.num_particles}), got shape {x.shape}")
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """Scaled matrices ``(B, 3, P)`` in (0, 1) from latents ``z (B, latent_dim)``."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise JetInputError(f"z must be (B, {self.config.latent_dim}), got shape {z.shape}")
        return self.decoder(z)

    def __call__(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Reconstruction through one reparameterised sample ``z = mean + exp(logvar / 2) eps``."""
        mean, logvar = self.encode(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
        return self.decode(z), mean, logvar


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(max(x, 0))`` with a zero (not NaN) gradient where ``x <= 0``."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def chamfer_distance(a: jax.Array, b: jax.Array, *, squared: bool = True) -> jax.Array:
    """Symmetric Chamfer (nearest-neighbour) distance between particle sets, per jet (paper eq. 3).

    ``sum_i min_j D(a_i, b_j) + sum_j min_i D(a_i, b_j)``, D the (squared) Euclidean distance.

    Args:
      a: ``(B, Pa, F)``, b: ``(B, Pb, F)`` particles (rows) of each jet, every row counted.
      squared: squared distances (default) or plain Euclidean ones.

    Returns:
      ``(B,)`` in the units of ``a`` (squared when ``squared``).
    """
    distance = jnp.sum((a[:, :, None, :] - b[:, None, :, :]) ** 2, axis=-1)
    if not squared:
        distance = _safe_sqrt(distance)
    return distance.min(axis=2).sum(axis=1) + distance.min(axis=1).sum(axis=1)


def jet_pt_mass(momenta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Differentiable jet pT and mass of massless particles ``(B, 3, P)`` ``(px, py, pz)`` in GeV.

    Returns ``(pt, mass)``, each ``(B,)`` in GeV; ``mass = sqrt(max(E^2 - |p|^2, 0))``, ``E = sum |p_i|``.
    Zero columns (padding) contribute nothing.
    """
    energy = _safe_sqrt(jnp.sum(momenta**2, axis=-2)).sum(axis=-1)
    total = momenta.sum(axis=-1)
    pt = _safe_sqrt(total[..., 0] ** 2 + total[..., 1] ** 2)
    return pt, _safe_sqrt(energy**2 - jnp.sum(total**2, axis=-1))


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """``KL(N(mean, exp(logvar)) || N(0, 1))`` summed over the latent axis: ``(B, D) -> (B,)`` nats."""
    return 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - logvar - 1.0, axis=-1)


def convae_loss(x: jax.Array, reconstruction: jax.Array, mean: jax.Array, logvar: jax.Array,
                scaler: MinMaxScaler, loss: ConVAELoss) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The ConVAE loss (module docstring), averaged over the batch.

    Args:
      x, reconstruction: scaled ``(B, 3, P)`` input and decoder output.
      mean, logvar: ``(B, latent_dim)`` posterior parameters.
      scaler: maps both back to GeV for the reconstruction terms.

    Returns:
      ``(loss, parts)``; parts: batch means of ``chamfer`` (GeV^2, or GeV), ``pt_mse``, ``mass_mse``
      (GeV^2), ``reconstruction`` (the weighted ``L_rec``) and ``kl`` (nats).
    """
    truth, output = scaler.invert(x), scaler.invert(reconstruction)
    chamfer = chamfer_distance(jnp.swapaxes(truth, -1, -2), jnp.swapaxes(output, -1, -2),
                               squared=loss.squared_chamfer)
    (pt, mass), (pt_hat, mass_hat) = jet_pt_mass(truth), jet_pt_mass(output)
    pt_mse, mass_mse = (pt - pt_hat) ** 2, (mass - mass_hat) ** 2
    rec = loss.alpha * chamfer + loss.gamma * (loss.gamma_pt * pt_mse + loss.gamma_mass * mass_mse)
    kl = kl_divergence(mean, logvar)
    total = jnp.mean((1.0 - loss.beta) * rec + loss.beta * kl)
    parts = {"chamfer": chamfer, "pt_mse": pt_mse, "mass_mse": mass_mse, "reconstruction": rec, "kl": kl}
    return total, {name: jnp.mean(value) for name, value in parts.items()}
