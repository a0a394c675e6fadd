"""Flax modules of the four systems; nothing here reads files or imports the data package.

Constituent energies map ``x (B, N, F)`` and ``mask (B, N)`` bool to ``E(x) (B,)``, lower = more probable;
`energy_fn` / `class_energy_fn` turn one into the closure the samplers take.

Modules:
  transformer      `TransformerEnergy`, the paper's masked set transformer (`TransformerConfig`); with
                   ``num_classes = K`` the hybrid EBM-classifier (``method="logits"`` -> ``(B, K)``).
  mlp              `MLPEnergy`, the flattened-MLP ablation (`MLPConfig`).
  nae_autoencoder  `ConvAE`, the NAE's spectrally normalised convolutional autoencoder on jet images
                   ``(B, P, P)``: ``method="encode" / "decode" / "energy" / "latent_energy"``.
  jet_convae       `ConVAE` (seed 004's convolutional VAE on ``(B, 3, P)`` momentum matrices), its loss and
                   `MinMaxScaler`; training and sampling in `jaxebm.train.vae`.
  flows            `RealNVP`: ``forward``, ``inverse``, ``log_prob``, ``sample``.
  common           initialisers ("torch" / "lecun"), activations, `dense`, `energy_fn`, `class_energy_fn`.
  precision        bfloat16 matmuls for the transformer (``compute_dtype``), off by default.
"""
from jaxebm.models import common, flows, jet_convae, mlp, nae_autoencoder, transformer
from jaxebm.models.common import class_energy_fn, energy_fn
from jaxebm.models.flows import RealNVP, RealNVPConfig
from jaxebm.models.jet_convae import ConVAE, ConVAEConfig, ConVAELoss, MinMaxScaler
from jaxebm.models.mlp import MLPConfig, MLPEnergy
from jaxebm.models.nae_autoencoder import ConvAE, ConvAEConfig
from jaxebm.models.transformer import TransformerConfig, TransformerEnergy

__all__ = [
    "common", "flows", "jet_convae", "mlp", "nae_autoencoder", "transformer",
    "class_energy_fn", "energy_fn", "ConvAE", "ConvAEConfig", "ConVAE", "ConVAEConfig", "ConVAELoss", "MinMaxScaler",
    "MLPConfig", "MLPEnergy", "RealNVP", "RealNVPConfig", "TransformerConfig", "TransformerEnergy",
]
