"""Flax energy networks. Every model maps ``x (B, N, F)`` and ``mask (B, N)`` bool to ``E(x) (B,)``,
lower = more probable; `energy_fn` turns one into the closure the samplers take.

Modules:
  transformer  `TransformerEnergy`, the paper's masked set transformer (`TransformerConfig`).
  mlp          `MLPEnergy`, the flattened-MLP ablation (`MLPConfig`).
  common       initialisers ("torch" / "lecun"), activations, `dense`, `energy_fn`.
"""
from jaxebm.models import common, mlp, transformer
from jaxebm.models.common import energy_fn
from jaxebm.models.mlp import MLPConfig, MLPEnergy
from jaxebm.models.transformer import TransformerConfig, TransformerEnergy

__all__ = [
    "common", "mlp", "transformer",
    "energy_fn", "MLPConfig", "MLPEnergy", "TransformerConfig", "TransformerEnergy",
]
