"""RealNVP normalizing flow (Dinh et al. 2017) as used by the ConVAE + NF jet generator (seed 004).

``forward`` maps data ``x (B, D)`` to base samples ``z`` through ``num_couplings`` affine coupling
layers; layer ``l`` keeps the features where ``mask_l`` is 1 and transforms the rest::

    y = m * x + (1 - m) * (x * exp(s) + t),   s = tanh(S_l(m * x)),  t = T_l(m * x),
    log|det dy/dx| = sum((1 - m) * s)

with alternating checkerboard masks ``m_l[j] = (l + j) % 2`` (feature parity swaps every layer;
for D = 1 every other layer is a plain affine map). ``S_l`` and ``T_l`` are separate MLPs
``D -> hidden_sizes -> D`` with ReLU (the paper's choice, tanh on s), following the PyTorch demo the
paper built on (ispamm/realnvp-demo-pytorch): input and output width D, masked as above.
The base is a standard normal, ``log p(x) = log N(z; 0, I) + log|det dz/dx|`` (paper eq. 6).

Parameters of all layers are stacked on a leading layer axis and the layers run in one
``lax.scan``, so compile time does not grow with ``num_couplings``. Hidden layers start with
LeCun-normal kernels, the last layer of every S and T with zeros, so an untrained flow is the identity.

Example:
    >>> flow = RealNVP(LATENT_FLOW.config)  # doctest: +SKIP
    >>> params = flow.init(key, jnp.zeros((1, 180)))  # doctest: +SKIP
    >>> z, log_det = flow.apply(params, x)  # doctest: +SKIP
    >>> x = flow.apply(params, key, 10_000, method=RealNVP.sample)  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.errors import JetInputError
from jaxebm.models.common import activation
from jaxebm.models.precision import check_compute_dtype, matmul_fn

__all__ = ["LATENT_FLOW", "PARTICLE_FLOW", "FlowPreset", "RealNVP", "RealNVPConfig", "coupling_masks"]

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclasses.dataclass(frozen=True)
class RealNVPConfig:
    """RealNVP settings; frozen and hashable.

    num_features: D. num_couplings: affine coupling layers.
    hidden_sizes: hidden widths of each S and T MLP. activation: after each hidden layer.
    compute_dtype: precision policy of the MLP products (`jaxebm.models.precision`): "float32" (default) or
      "bfloat16" (bf16 operands, float32 accumulation and result; parameters and the flow stay float32).
    """

    num_features: int
    num_couplings: int = 55
    hidden_sizes: tuple[int, ...] = (400, 350, 400, 400)
    activation: str = "relu"
    compute_dtype: str = "float32"

    def __post_init__(self):
        activation(self.activation)  # validates the name
        check_compute_dtype(self.compute_dtype)
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        if min((self.num_features, self.num_couplings) + self.hidden_sizes) < 1:
            raise JetInputError(f"RealNVPConfig sizes must be positive: {self}")


class FlowPreset(NamedTuple):
    """A tuned flow: architecture and Adam learning rate (the paper gives no flow batch size)."""

    config: RealNVPConfig
    learning_rate: float


# Paper Table 6: the flow on the 180 latent means of the reconstruction ConVAE.
LATENT_FLOW = FlowPreset(RealNVPConfig(180, 55, (400, 350, 400, 400)), learning_rate=2.9e-4)
# Paper Table 7: the NF-only baseline on the flattened 3 x 30 scaled momenta.
PARTICLE_FLOW = FlowPreset(RealNVPConfig(90, 65, (150, 200, 350, 150)), learning_rate=3.4e-4)


def coupling_masks(num_couplings: int, num_features: int) -> np.ndarray:
    """Float32 ``(num_couplings, num_features)``; 1 marks the features a layer keeps and conditions on."""
    return ((np.arange(num_couplings)[:, None] + np.arange(num_features)[None, :]) % 2 == 0).astype(np.float32)


def _mlp(weights: tuple[tuple[jax.Array, jax.Array], ...], h: jax.Array, act, matmul=jnp.matmul) -> jax.Array:
    """One layer's MLP: ``weights`` = ((kernel (in, out), bias (out,)), ...), ``h (B, in)``; ``matmul``: the
    policy's product (`jaxebm.models.precision.matmul_fn`)."""
    for kernel, bias in weights[:-1]:
        h = act(matmul(h, kernel) + bias)
    kernel, bias = weights[-1]
    return matmul(h, kernel) + bias


class RealNVP(nn.Module):
    """RealNVP flow on ``(B, D)`` vectors (see the module docstring).

    Methods (``flow.apply(params, ..., method=...)``):
      forward(x) / __call__(x) -> (z (B, D), log|det dz/dx| (B,)).
      inverse(z (B, D)) -> x (B, D).
      log_prob(x (B, D)) -> (B,) nats under the standard-normal base.
      sample(key, num_samples) -> (num_samples, D).
    """

    config: RealNVPConfig

    def setup(self):
        c = self.config
        sizes = (c.num_features,) + c.hidden_sizes + (c.num_features,)
        hidden_init = nn.initializers.lecun_normal(batch_axis=(0,))

        def stacked_mlp(prefix: str):
            weights = []
            for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                last = index == len(sizes) - 2
                kernel = self.param(f"{prefix}_kernel_{index}", nn.initializers.zeros if last else hidden_init,
                                    (c.num_couplings, fan_in, fan_out))
                bias = self.param(f"{prefix}_bias_{index}", nn.initializers.zeros, (c.num_couplings, fan_out))
                weights.append((kernel, bias))
            return tuple(weights)

        self.scale_weights = stacked_mlp("scale")
        self.shift_weights = stacked_mlp("shift")
        self.masks = jnp.asarray(coupling_masks(c.num_couplings, c.num_features))

    def _check(self, name: str, x: jax.Array) -> None:
        if x.ndim != 2 or x.shape[1] != self.config.num_features:
            raise JetInputError(f"{name} must be (B, {self.config.num_features}), got shape {x.shape}")

    def _scale_shift(self, layer, kept: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(s, t)`` of one layer, zero on the kept features; ``kept (B, D)`` is ``mask * x``."""
        mask, scale_weights, shift_weights = layer
        act, matmul = activation(self.config.activation), matmul_fn(self.config.compute_dtype)
        s = jnp.tanh(_mlp(scale_weights, kept, act, matmul)) * (1.0 - mask)
        t = _mlp(shift_weights, kept, act, matmul) * (1.0 - mask)
        return s, t

    def forward(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data ``x (B, D)`` -> base ``z (B, D)`` and ``log|det dz/dx| (B,)``."""
        self._check("x", x)

        def layer_fn(carry, layer):
            h, log_det = carry
            kept = h * layer[0]
            s, t = self._scale_shift(layer, kept)
            return (kept + (1.0 - layer[0]) * (h * jnp.exp(s) + t), log_det + s.sum(axis=-1)), None

        layers = (self.masks, self.scale_weights, self.shift_weights)
        (z, log_det), _ = jax.lax.scan(layer_fn, (x, jnp.zeros(x.shape[:1], x.dtype)), layers)
        return z, log_det

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Same as `forward` (used by ``init``)."""
        return self.forward(x)

    def inverse(self, z: jax.Array) -> jax.Array:
        """Base ``z (B, D)`` -> data ``x (B, D)``, the layers undone in reverse order."""
        self._check("z", z)

        def layer_fn(h, layer):
            kept = h * layer[0]
            s, t = self._scale_shift(layer, kept)
            return kept + (1.0 - layer[0]) * (h - t) * jnp.exp(-s), None

        x, _ = jax.lax.scan(layer_fn, z, (self.masks, self.scale_weights, self.shift_weights), reverse=True)
        return x

    def log_prob(self, x: jax.Array) -> jax.Array:
        """``log p(x)`` in nats, ``(B,)``, for ``x (B, D)``."""
        z, log_det = self.forward(x)
        return -0.5 * jnp.sum(z**2 + _LOG_2PI, axis=-1) + log_det

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """``(num_samples, D)`` draws: standard-normal ``z`` through `inverse`."""
        return self.inverse(jax.random.normal(key, (num_samples, self.config.num_features)))
