"""Masked set-transformer energy ``E(x)`` for jet constituents (seed 000, section 3.3, table 4).

    x (B, N, F) --linear--> (B, N, d_model) --N_L self-attention blocks--> sum over real constituents
      --> MLP projector d_model -> 500 -> 500 -> 1 (Swish) --> E(x) (B,)

Hybrid EBM-classifier (seed 000, section 3.2): with ``num_classes = K`` the projector ends in K logits
``g(x) (B, K)`` instead (`TransformerEnergy.logits`), and the same module's energy is the marginal
``E(x) = -logsumexp_y g(x)_y``; ``E(x, y) = -g(x)_y`` and ``p(y|x) = softmax(g(x))_y``. Samplers,
the CD step and the score API call the module exactly as the plain energy.

Sign: the module returns the energy itself, lower = more probable, density ``exp(-E)``. The paper's
public code reads its network output as the negative energy; with a sign-symmetric initialisation of
the last layer the two conventions are the same model family, so no sign flip is applied anywhere.

Precision: ``compute_dtype="bfloat16"`` runs every Dense product with bfloat16 operands and float32
accumulation and result (`jaxebm.models.precision`); parameters, activations, the attention products and
the energies stay float32.

Masks are explicit: ``mask (B, N)`` bool, True for a real constituent. Padded slots are zeroed at the
input, are never attended to (keys), and are left out of the sum pooling, so their values (Langevin
noise, garbage) never change the energy. A jet without real constituents gets the finite energy of
an empty set (the projector applied to a zero vector).

Example::

    import jax, jax.numpy as jnp
    from jaxebm.models import TransformerConfig, TransformerEnergy

    model = TransformerEnergy(TransformerConfig(num_layers=2, d_model=32, num_heads=4, ff_dim=64))
    x, mask = jnp.zeros((5, 40, 3)), jnp.ones((5, 40), bool)
    params = model.init(jax.random.key(0), x, mask)
    energy = model.apply(params, x, mask)                                   # (5,)
    energy = model.apply(params, x, mask, deterministic=False, rngs={"dropout": jax.random.key(1)})

    hybrid = TransformerEnergy(TransformerConfig(num_layers=2, d_model=32, num_heads=4, ff_dim=64, num_classes=3))
    params = hybrid.init(jax.random.key(0), x, mask)
    logits = hybrid.apply(params, x, mask, method="logits")                 # (5, 3)
    energy = hybrid.apply(params, x, mask)                                   # (5,) = -logsumexp(logits)
"""
from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxebm.models.common import INITS, activation, dense, padded_to_zero
from jaxebm.models.precision import check_compute_dtype, dense_dot_general

__all__ = ["TransformerConfig", "TransformerEnergy", "MaskedSelfAttention", "SelfAttentionBlock"]

NORMS = ("none", "layer")


@dataclass(frozen=True)
class TransformerConfig:
    """Transformer energy settings; frozen and hashable. Defaults are the paper's (table 4).

    num_features: F, features per constituent (log pT, eta, phi).
    num_layers: N_L self-attention blocks.
    d_model: embedding width; num_heads must divide it (head width d_model / num_heads).
    ff_dim: hidden width of each block's feed-forward layer.
    dropout_rate: dropout on attention weights and on every residual branch (training only).
    norm: "none" (paper) or "layer" (pre-norm LayerNorm in each branch plus one before pooling).
    ff_activation: feed-forward activation (`jaxebm.models.common.ACTIVATIONS`).
    projector_sizes: hidden widths of the MLP projector after pooling (output width 1 is added).
    projector_activation: activation of the projector's hidden layers.
    init: "torch" (paper: PyTorch default) or "lecun" (Flax default); see `jaxebm.models.common`.
    num_classes: None (plain energy, one output) or K >= 2 (hybrid: K logits, module doc).
    compute_dtype: precision policy of the matrix products (`jaxebm.models.precision`): "float32"
      (default) or "bfloat16" (Dense products: bf16 operands, float32 accumulation and result; parameters,
      activations, attention products and the energy stay float32).
    """

    num_features: int = 3
    num_layers: int = 8
    d_model: int = 128
    num_heads: int = 16
    ff_dim: int = 1024
    dropout_rate: float = 0.1
    norm: str = "none"
    ff_activation: str = "relu"
    projector_sizes: tuple[int, ...] = (500, 500)
    projector_activation: str = "swish"
    init: str = "torch"
    num_classes: int | None = None
    compute_dtype: str = "float32"

    def __post_init__(self):
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"num_classes must be None (plain energy) or >= 2, got {self.num_classes}")
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide d_model ({self.d_model})")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        activation(self.ff_activation), activation(self.projector_activation)  # validate names
        check_compute_dtype(self.compute_dtype)
        object.__setattr__(self, "projector_sizes", tuple(self.projector_sizes))


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention where queries attend to real keys only.

    ``h (B, N, d_model)``, ``mask (B, N)`` -> ``(B, N, d_model)``. Scores are scaled by
    ``1/sqrt(head width)``. Weights on padded keys are exactly zero; a query of a jet with no real
    key gets zero attention output (plus the output bias) instead of a softmax over nothing.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        c = self.config
        batch, num, _ = h.shape
        head_dim = c.d_model // c.num_heads
        product = dense_dot_general(c.compute_dtype)
        qkv = dense(h, 3 * c.d_model, c.init, "qkv", product).reshape(batch, num, 3, c.num_heads, head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / jnp.sqrt(float(head_dim))
        is_real_key = mask[:, None, None, :]
        scores = jnp.where(is_real_key, scores, jnp.finfo(scores.dtype).min)
        weights = jnp.where(is_real_key, jax.nn.softmax(scores, axis=-1), 0.0)
        weights = nn.Dropout(c.dropout_rate)(weights, deterministic=deterministic)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, num, c.d_model)
        return dense(attended, c.d_model, c.init, "out", product)


class SelfAttentionBlock(nn.Module):
    """Residual masked attention then residual feed-forward: ``(B, N, d_model) -> (B, N, d_model)``."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        c = self.config

        def normalise(y, name):
            return nn.LayerNorm(name=name)(y) if c.norm == "layer" else y

        def dropout(y):
            return nn.Dropout(c.dropout_rate)(y, deterministic=deterministic)

        attended = MaskedSelfAttention(c, name="attention")(normalise(h, "norm_attention"), mask, deterministic)
        h = h + dropout(attended)
        product = dense_dot_general(c.compute_dtype)
        hidden = activation(c.ff_activation)(dense(normalise(h, "norm_ff"), c.ff_dim, c.init, "ff_in", product))
        return h + dropout(dense(dropout(hidden), c.d_model, c.init, "ff_out", product))


class TransformerEnergy(nn.Module):
    """Energy ``E(x)`` of constituent sets (see the module doc for the layout, the sign and the hybrid)."""

    config: TransformerConfig = TransformerConfig()

    def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """Energies of ``x (B, N, F)`` with ``mask (B, N)`` bool (True = real): returns ``(B,)``.

        ``deterministic=False`` turns dropout on and needs ``rngs={"dropout": key}``. Hybrid:
        ``E(x) = -logsumexp_y g(x)_y``.
        """
        outputs = self.outputs(x, mask, deterministic=deterministic)
        if self.config.num_classes is None:
            return outputs[:, 0]
        return -jax.nn.logsumexp(outputs, axis=-1)

    def logits(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """Class logits ``g(x) (B, K)`` of a hybrid model (``num_classes = K``); ``E(x, y) = -g(x)_y``."""
        if self.config.num_classes is None:
            raise ValueError("logits need a hybrid model: TransformerConfig(num_classes=K)")
        return self.outputs(x, mask, deterministic=deterministic)

    @nn.compact
    def outputs(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """The last layer: ``(B, 1)`` energy (plain) or ``(B, K)`` logits (hybrid)."""
        c = self.config
        if x.ndim != 3 or x.shape[-1] != c.num_features or mask.shape != x.shape[:2]:
            raise ValueError(
                f"x must be (B, N, {c.num_features}) with mask (B, N); got x {x.shape}, mask {mask.shape}")
        mask = mask.astype(bool)
        product = dense_dot_general(c.compute_dtype)
        h = dense(padded_to_zero(x, mask), c.d_model, c.init, "embed", product)
        for layer in range(c.num_layers):
            h = SelfAttentionBlock(c, name=f"block_{layer}")(h, mask, deterministic)
        if c.norm == "layer":
            h = nn.LayerNorm(name="norm_final")(h)
        pooled = jnp.sum(jnp.where(mask[..., None], h, 0.0), axis=1)
        for index, width in enumerate(c.projector_sizes):
            pooled = activation(c.projector_activation)(dense(pooled, width, c.init, f"projector_{index}", product))
        if c.num_classes is None:
            return dense(pooled, 1, c.init, "energy", product)
        return dense(pooled, c.num_classes, c.init, "logits", product)
