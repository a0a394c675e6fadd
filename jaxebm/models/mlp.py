"""MLP energy over flattened constituents: the paper's ablation (seed 000, appendix B.1).

    x (B, N, F), padded slots zeroed via mask --flatten--> (B, N*F) --MLP--> E(x) (B,)

Not permutation invariant (slot order matters, as in the ablation). Same sign convention and call
signature as `TransformerEnergy`: lower energy = more probable.
"""
from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax

from jaxebm.models.common import INITS, activation, dense, padded_to_zero

__all__ = ["MLPConfig", "MLPEnergy"]


@dataclass(frozen=True)
class MLPConfig:
    """MLP energy settings; frozen and hashable.

    hidden_sizes: widths of the hidden layers (output width 1 is added).
    hidden_activation: activation after each hidden layer (`jaxebm.models.common.ACTIVATIONS`).
    dropout_rate: dropout after each hidden activation (training only).
    init: "torch" or "lecun" (see `jaxebm.models.common`).
    """

    hidden_sizes: tuple[int, ...] = (512, 512, 512)
    hidden_activation: str = "swish"
    dropout_rate: float = 0.0
    init: str = "torch"

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        activation(self.hidden_activation)  # validate the name
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))


class MLPEnergy(nn.Module):
    """Energy ``E(x)`` of flattened, mask-zeroed constituents."""

    config: MLPConfig = MLPConfig()

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """Energies of ``x (B, N, F)`` with ``mask (B, N)`` bool (True = real): returns ``(B,)``."""
        c = self.config
        if x.ndim != 3 or mask.shape != x.shape[:2]:
            raise ValueError(f"x must be (B, N, F) with mask (B, N); got x {x.shape}, mask {mask.shape}")
        h = padded_to_zero(x, mask.astype(bool)).reshape(x.shape[0], -1)
        for index, width in enumerate(c.hidden_sizes):
            h = activation(c.hidden_activation)(dense(h, width, c.init, f"hidden_{index}"))
            h = nn.Dropout(c.dropout_rate)(h, deterministic=deterministic)
        return dense(h, 1, c.init, "energy")[:, 0]
