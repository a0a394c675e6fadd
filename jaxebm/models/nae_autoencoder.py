"""Convolutional autoencoder of the normalized autoencoder (NAE, seed 002 Table 2) for jet images.

    x (B, P, P) in [0, 1] --encoder(c x)--> z on S^(D_z - 1) (B, D_z) --decoder / c--> x_hat (B, P, P) in (0, 1/c)
    energy E(x) = mean over pixels of (x - x_hat)^2                                   (B,)

Intensity scale ``c`` (``intensity_scale``, default 1): the network sees ``c x`` and its sigmoid output is
divided by ``c``, so images, reconstructions and energies stay in the units of the raw images (pixel pT /
jet pT) while the network works at pixel values of order 1. In the network's units the energy is
``E' = c^2 E``; chains run on ``E`` with the paper's constants are the paper's dynamics (module doc of
`jaxebm.train.nae`). With c = 1 / (largest training pixel) a jet image's brightest pixels sit near 1 for the
network, where the sigmoid decoder can reach them (at c = 1 the AE collapses to the average jet).

Encoder: Conv(1->c, 3x3) PReLU, Conv(c->c) PReLU, MaxPool 2, Conv(c->c) PReLU, Conv(c->c) PReLU,
Conv(c->1) PReLU, flatten (P/2)^2, Dense(hidden) PReLU, Dense(D_z), z / ||z||.
Decoder: Dense(hidden) PReLU, Dense((P/2)^2) PReLU, reshape (P/2, P/2, 1), ConvT(1->c) PReLU,
ConvT(c->c) PReLU, bilinear upsample x2, ConvT(c->c) PReLU, ConvT(c->1), sigmoid.
All convolutions are 3x3, stride 1, 'SAME' padding (the paper's padding 1). Defaults: P = 40, c = 8,
hidden = 100, D_z = 3, the paper's network.

Spectral normalisation (`nn.SpectralNorm`) wraps every Conv, ConvTranspose and Dense layer: each
kernel, reshaped to a matrix as PyTorch's ``spectral_norm`` does (``weight.reshape(size(0), -1)``), is
divided by its largest singular value estimated by power iteration: ``(out, in*k*k)`` for Conv and Dense
(Flax's ``(k*k*in, out)``, the transpose), ``(in, out*k*k)`` for ConvTranspose (PyTorch's weight is
``(in, out, k, k)``; our transposed kernels are stored ``(k, k, out, in)`` so that Flax's reshape gives
the transpose of that matrix). The iteration vector ``u`` and the estimate ``sigma`` live in the ``batch_stats``
collection. Every call runs ``num_power_iterations`` iterations from the stored ``u``; only calls
with ``update_stats=True`` (and ``mutable=['batch_stats']``) store the result. The NAE step does that
once per training iteration; its samplers use the stored vectors without updating them.

Example::

    model = ConvAE(ConvAEConfig())
    variables = model.init(jax.random.key(0), images)                  # images (B, 40, 40)
    energies = model.apply(variables, images, method="energy")         # (B,)
    energies, updated = model.apply(variables, images, update_stats=True, method="energy",
                                    mutable=["batch_stats"])            # training: stats advance
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.models.common import INITS, torch_bias_init
from jaxebm.models.precision import check_compute_dtype, dense_dot_general

__all__ = ["ConvAEConfig", "ConvAE", "ImageInputError", "check_images"]

_EPS = 1e-12  # guards z / ||z|| at z = 0


class ImageInputError(ValueError):
    """Images that the autoencoder cannot take (shape, NaN, pixels outside [0, 1])."""


@dataclass(frozen=True)
class ConvAEConfig:
    """Autoencoder settings; frozen and hashable. Defaults are the paper's (Table 2).

    image_size: P, pixels per side (even; the encoder pools by 2). latent_dim: D_z, latent vectors
    lie on S^(D_z - 1). channels: c, feature maps of the convolutions. hidden_dim: the Dense layer
    between flatten and latent. spectral_norm: wrap every Conv/ConvTranspose/Dense layer.
    num_power_iterations: power iterations per call (PyTorch's default 1). prelu_init: initial PReLU
    slope (PyTorch's 0.25). init: "torch" (kernel and bias U(+-1/sqrt(fan_in)), PyTorch's default,
    which the public code inherits) or "lecun" (Flax's default). output_bias_init: initial bias of the
    output layer (None: the init's). intensity_scale: c > 0, the network sees ``c x`` (module doc).
    compute_dtype: precision policy of the Dense products (`jaxebm.models.precision`): "float32" (default) or
    "bfloat16"; the convolutions stay float32 (no faster in bf16 on this CPU, precision module doc).
    """

    image_size: int = 40
    latent_dim: int = 3
    channels: int = 8
    hidden_dim: int = 100
    spectral_norm: bool = True
    num_power_iterations: int = 1
    prelu_init: float = 0.25
    init: str = "torch"
    output_bias_init: float | None = None
    intensity_scale: float = 1.0
    compute_dtype: str = "float32"

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype)
        if self.image_size < 2 or self.image_size % 2:
            raise ValueError(f"image_size must be even and >= 2, got {self.image_size}")
        for name in ("latent_dim", "channels", "hidden_dim", "num_power_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.latent_dim < 2:
            raise ValueError(f"latent_dim must be >= 2 (a sphere S^(D_z-1)), got {self.latent_dim}")
        if not (np.isfinite(self.intensity_scale) and self.intensity_scale > 0):
            raise ValueError(f"intensity_scale must be a positive finite number, got {self.intensity_scale}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")


def check_images(images, image_size: int = 40) -> np.ndarray:
    """Validate host images before they enter a jitted step; returns them as float32 ``(B, P, P)``.

    Raises `ImageInputError` naming the problem: not ``(B, image_size, image_size)``, non-finite
    pixels, or pixels outside [0, 1] (jet images are pT fractions, so each pixel is in [0, 1]).
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or images.shape[1:] != (image_size, image_size) or images.shape[0] < 1:
        raise ImageInputError(f"images must be (B, {image_size}, {image_size}) with B >= 1, got {images.shape}")
    if not np.all(np.isfinite(images)):
        bad = np.unique(np.nonzero(~np.isfinite(images))[0])
        raise ImageInputError(f"{bad.size} image(s) hold non-finite pixels, first at index {bad[0]}")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ImageInputError(f"pixels must lie in [0, 1]; got min {low:.3g}, max {high:.3g}")
    return images


def _initialisers(config: ConvAEConfig, fan_in: int, in_axis: int = -2):
    """Kernel and bias initialisers of a layer with ``fan_in`` inputs; the kernel's input-channel axis is
    ``in_axis`` (-2 for ``(..., in, out)``, -1 for the transposed convolutions' ``(k, k, out, in)``)."""
    out_axis = -1 if in_axis == -2 else -2
    if config.init == "torch":
        return (nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=in_axis, out_axis=out_axis),
                torch_bias_init(fan_in))
    return nn.initializers.lecun_normal(in_axis=in_axis, out_axis=out_axis), nn.initializers.zeros


class _ConvTranspose(nn.Module):
    """3x3 stride-1 'SAME' transposed convolution ``(B, H, W, in) -> (B, H, W, features)`` whose kernel is
    stored ``(3, 3, features, in)``: spectral norm's ``(-1, last axis)`` reshape is then PyTorch's
    ConvTranspose matrix ``(in, out*k*k)``, transposed (module doc)."""

    features: int
    kernel_init: Callable
    bias_init: Callable

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (3, 3, self.features, x.shape[-1]))
        bias = self.param("bias", self.bias_init, (self.features,))
        y = jax.lax.conv_transpose(x, jnp.swapaxes(kernel, -1, -2), (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias


class _Layers(nn.Module):
    """Base of the encoder and decoder: layer constructors with the config's init and spectral norm."""

    config: ConvAEConfig

    def _apply(self, layer: nn.Module, x: jax.Array, update_stats: bool) -> jax.Array:
        if not self.config.spectral_norm:
            return layer(x)
        return nn.SpectralNorm(layer, n_steps=self.config.num_power_iterations)(x, update_stats=update_stats)

    def dense(self, x, features: int, update_stats: bool) -> jax.Array:
        """Dense on ``x (B, fan_in)``."""
        kernel_init, bias_init = _initialisers(self.config, x.shape[-1])
        layer = nn.Dense(features, kernel_init=kernel_init, bias_init=bias_init,
                         dot_general=dense_dot_general(self.config.compute_dtype))
        return self._apply(layer, x, update_stats)

    def conv(self, x, features: int, update_stats: bool, *, transpose: bool = False,
             bias_value: float | None = None) -> jax.Array:
        """3x3 stride-1 'SAME' (transposed) convolution on ``x (B, H, W, C)``; ``bias_value``
        overrides the initial bias."""
        kernel_init, bias_init = _initialisers(self.config, 9 * x.shape[-1], in_axis=-1 if transpose else -2)
        if bias_value is not None:
            bias_init = nn.initializers.constant(bias_value)
        if transpose:
            layer = _ConvTranspose(features, kernel_init, bias_init)
        else:
            layer = nn.Conv(features, (3, 3), padding="SAME", kernel_init=kernel_init, bias_init=bias_init)
        return self._apply(layer, x, update_stats)

    def prelu(self, x) -> jax.Array:
        return nn.PReLU(negative_slope_init=self.config.prelu_init)(x)


class _Encoder(_Layers):
    @nn.compact
    def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
        """``x (B, P, P, 1)`` -> ``z (B, D_z)`` with ``||z|| = 1``."""
        c = self.config
        for features in (c.channels, c.channels):
            x = self.prelu(self.conv(x, features, update_stats))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        for features in (c.channels, c.channels, 1):
            x = self.prelu(self.conv(x, features, update_stats))
        x = self.prelu(self.dense(x.reshape(x.shape[0], -1), c.hidden_dim, update_stats))
        z = self.dense(x, c.latent_dim, update_stats)
        return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), _EPS)


class _Decoder(_Layers):
    @nn.compact
    def __call__(self, z: jax.Array, update_stats: bool) -> jax.Array:
        """``z (B, D_z)`` -> images ``(B, P, P)`` in (0, 1)."""
        c = self.config
        half = c.image_size // 2
        x = self.prelu(self.dense(z, c.hidden_dim, update_stats))
        x = self.prelu(self.dense(x, half * half, update_stats)).reshape(z.shape[0], half, half, 1)
        for features in (c.channels, c.channels):
            x = self.prelu(self.conv(x, features, update_stats, transpose=True))
        x = jax.image.resize(x, (x.shape[0], c.image_size, c.image_size, x.shape[-1]), "bilinear")
        x = self.prelu(self.conv(x, c.channels, update_stats, transpose=True))
        logits = self.conv(x, 1, update_stats, transpose=True, bias_value=c.output_bias_init)
        return nn.sigmoid(logits)[..., 0]


class ConvAE(nn.Module):
    """The NAE's autoencoder (module doc). Every method takes ``update_stats`` (default False): True
    advances the spectral-norm power iteration (apply with ``mutable=['batch_stats']``)."""

    config: ConvAEConfig = ConvAEConfig()

    def setup(self):
        self.encoder = _Encoder(self.config)
        self.decoder = _Decoder(self.config)

    def _check_shape(self, x: jax.Array) -> None:
        size = self.config.image_size
        if x.ndim != 3 or x.shape[1:] != (size, size):
            raise ImageInputError(f"images must be (B, {size}, {size}), got {x.shape}")

    def encode(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
        """Images ``(B, P, P)`` (raw units) -> latent points ``(B, D_z)`` on the unit sphere."""
        self._check_shape(x)
        return self.encoder(self.config.intensity_scale * x[..., None], update_stats)

    def decode(self, z: jax.Array, update_stats: bool = False) -> jax.Array:
        """Latent ``z (B, D_z)`` -> images ``(B, P, P)`` in (0, 1/c), raw units. ``z`` is used as given
        (the samplers keep it on the sphere)."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"z must be (B, {self.config.latent_dim}), got {z.shape}")
        return self.decoder(z, update_stats) / self.config.intensity_scale

    def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
        """Reconstruction ``(B, P, P)`` of images ``x (B, P, P)``."""
        return self.decode(self.encode(x, update_stats), update_stats)

    def energy(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
        """Per-pixel mean squared reconstruction error ``(B,)`` of images ``x (B, P, P)``."""
        return jnp.mean(jnp.square(x - self(x, update_stats)), axis=(1, 2))

    def latent_energy(self, z: jax.Array, update_stats: bool = False) -> jax.Array:
        """``H(z) = E(decode(z))`` ``(B,)`` for latent ``z (B, D_z)``: the latent chain's energy."""
        return self.energy(self.decode(z, update_stats), update_stats)
