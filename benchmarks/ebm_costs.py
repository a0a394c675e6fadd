"""Analytic cost model of the transformer energy: FLOPs and device-memory bytes per jet and step.

FLOP convention (the one of /work/shared/GPU_NOTES.md: ~0.22 GFLOP forward + ~0.22 GFLOP input
gradient per jet at the paper size): 2 FLOPs per multiply-add of the matrix products only, i.e. the
embedding, the QKV and output projections, the attention scores ``q k^T`` and weighted sum ``w v``,
the feed-forward pair and the projector. Elementwise work (biases, ReLU, softmax, Swish, masks,
residual adds, the Langevin update) is left out; XLA's cost analysis counts it, which is why its
figure comes out a few percent higher.

Input gradient (what one Langevin step needs besides the forward pass; no parameter gradient):
a product ``C = A W`` with a parameter matrix needs one product of the same size, ``dA = dC W^T``;
a product of two activations (``q k^T``, ``w v``) needs two, ``dA`` and ``dB``. So a Langevin step is
about twice the forward pass. The CD train step adds a forward and a full backward (``dA`` and
``dW``, about twice the forward) on the ``2B`` data and chain-end jets.

Device-memory traffic (an estimate, for the roofline only; cross-checked against XLA's
``bytes accessed``): every product reads its operands once and writes its result once; a parameter
matrix is read once per pass for the whole batch; elementwise work is fused into the neighbouring
products except the softmax, a separate pass over the scores forward (read scores, write weights)
and backward (read weights and their gradient, write the score gradient). The backward pass of a
product reads ``dC`` and the saved operands it needs and writes the operand gradients.
"""
from __future__ import annotations

from dataclasses import dataclass

from jaxebm.models.transformer import TransformerConfig

__all__ = ["Product", "energy_products", "forward_flops", "input_grad_flops", "langevin_step_flops",
           "train_step_flops", "parameter_count", "hbm_bytes_per_jet_step", "paper_schedule_iterations"]

NUM_CONSTITUENTS = 40


@dataclass(frozen=True)
class Product:
    """One matrix product per jet: ``count`` products ``(rows x inner) @ (inner x cols)``.

    weight: True when the right operand is a parameter matrix (shared by the batch), False when both
    operands are activations (attention).
    """

    name: str
    rows: int
    inner: int
    cols: int
    count: int
    weight: bool

    @property
    def flops(self) -> int:
        """Forward FLOPs per jet (2 per multiply-add)."""
        return 2 * self.rows * self.inner * self.cols * self.count

    @property
    def input_grad_flops(self) -> int:
        """FLOPs per jet of the backward products towards the inputs (dA; dA and dB for two activations)."""
        return self.flops if self.weight else 2 * self.flops


def energy_products(config: TransformerConfig, num_constituents: int = NUM_CONSTITUENTS) -> list[Product]:
    """The matrix products of one energy evaluation of one jet of ``num_constituents`` slots."""
    n, d, heads = num_constituents, config.d_model, config.num_heads
    head_dim = d // heads
    products = [Product("embed", n, config.num_features, d, 1, True)]
    for layer in range(config.num_layers):
        products += [
            Product(f"block_{layer}.qkv", n, d, 3 * d, 1, True),
            Product(f"block_{layer}.scores", n, head_dim, n, heads, False),
            Product(f"block_{layer}.weighted_sum", n, n, head_dim, heads, False),
            Product(f"block_{layer}.out", n, d, d, 1, True),
            Product(f"block_{layer}.ff_in", n, d, config.ff_dim, 1, True),
            Product(f"block_{layer}.ff_out", n, config.ff_dim, d, 1, True),
        ]
    widths = (d,) + tuple(config.projector_sizes) + (1,)
    products += [Product(f"projector_{i}", 1, fan_in, fan_out, 1, True)
                 for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]))]
    return products


def forward_flops(config: TransformerConfig, num_constituents: int = NUM_CONSTITUENTS) -> int:
    """FLOPs of one forward pass per jet."""
    return sum(p.flops for p in energy_products(config, num_constituents))


def input_grad_flops(config: TransformerConfig, num_constituents: int = NUM_CONSTITUENTS) -> int:
    """FLOPs of the gradient of the energy with respect to the input, per jet (after the forward)."""
    return sum(p.input_grad_flops for p in energy_products(config, num_constituents))


def langevin_step_flops(config: TransformerConfig, num_constituents: int = NUM_CONSTITUENTS) -> int:
    """FLOPs per jet of one Langevin step: forward plus input gradient."""
    return forward_flops(config, num_constituents) + input_grad_flops(config, num_constituents)


def train_step_flops(config: TransformerConfig, batch_size: int, num_langevin_steps: int,
                     num_constituents: int = NUM_CONSTITUENTS) -> int:
    """FLOPs of one CD iteration: ``K`` chain steps on ``B`` jets, then forward + full backward
    (``dA`` and ``dW`` products, twice the forward) on the ``2B`` data and chain-end jets."""
    chains = num_langevin_steps * batch_size * langevin_step_flops(config, num_constituents)
    loss = 2 * batch_size * 3 * forward_flops(config, num_constituents)
    return chains + loss


def parameter_count(config: TransformerConfig) -> int:
    """Weights and biases of the energy network."""
    return sum(p.inner * p.cols + p.cols for p in energy_products(config) if p.weight)


def _softmax_elements(config: TransformerConfig, num_constituents: int) -> int:
    """Score elements per jet over all layers and heads."""
    return config.num_layers * config.num_heads * num_constituents ** 2


def hbm_bytes_per_jet_step(config: TransformerConfig, batch_size: int, bytes_per_element: int,
                           num_constituents: int = NUM_CONSTITUENTS) -> float:
    """Estimated device-memory bytes per jet of one Langevin step (module doc for the model).

    Activations and parameters take ``bytes_per_element`` (2 for bf16, 4 for f32); the chain state,
    its gradient, the noise and the update stay float32 (read x, write gradient, read both and write
    the new x). Parameter reads are shared by the ``batch_size`` jets.
    """
    activations, weights = 0, 0
    for p in energy_products(config, num_constituents):
        a, c, b = p.rows * p.inner * p.count, p.rows * p.cols * p.count, p.inner * p.cols * p.count
        if p.weight:
            activations += (a + c) + (c + a)          # forward: read A, write C; backward: read dC, write dA
            weights += 2 * b                            # W read once in each pass
        else:
            activations += (a + b + c) + (c + a + b + a + b)  # backward: read dC, A, B; write dA, dB
    activations += 2 * _softmax_elements(config, num_constituents) + 3 * _softmax_elements(config, num_constituents)
    chain_state = 4 * num_constituents * config.num_features * 4
    return bytes_per_element * (activations + weights / batch_size) + chain_state


def paper_schedule_iterations(num_jets: int = 300_000, batch_size: int = 128, epochs: int = 50) -> int:
    """CD iterations of the paper's schedule (table 4): whole batches per epoch times epochs."""
    return (num_jets // batch_size) * epochs
