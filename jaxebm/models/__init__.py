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

# ConVAE + normalizing-flow jet generator (seed 004): `convae` (ConVAE, loss, min-max scaling, momentum
# matrices) and `flows` (RealNVP); training and sampling live in `jaxebm.train.vae`.
from jaxebm.models import convae, flows  # noqa: E402
from jaxebm.models.convae import ConVAE, ConVAEConfig, ConVAELoss, MinMaxScaler  # noqa: E402
from jaxebm.models.flows import RealNVP, RealNVPConfig  # noqa: E402

__all__ += ["convae", "flows", "ConVAE", "ConVAEConfig", "ConVAELoss", "MinMaxScaler", "RealNVP", "RealNVPConfig"]
