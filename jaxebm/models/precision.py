"""Compute-precision policy of the energy networks' matrix products (issue 25).

Policies (``compute_dtype`` of `TransformerConfig`, `ConvAEConfig`, `ConVAEConfig` and `RealNVPConfig`):
  "float32" (default): every product in float32, the code path of the models without a policy
    (bit-identical numbers).
  "bfloat16": every Dense layer's product takes bfloat16 operands and accumulates and returns
    float32 -- the fast product on CPUs with AVX512-BF16 (and on GPUs). Its backward products (input
    and parameter gradients) do the same. Everything else stays float32: parameters, optimiser state,
    EMA, activations between products, softmax, Langevin positions and noise, summed energies,
    Metropolis accepts -- and the attention products (scores, weighted sum; ~3% of the matrix FLOPs
    at the paper size): XLA:CPU (jax 0.10.2) runs a batched product whose lhs contraction is not its
    minor dimension, as in their backward pass, on a fallback kernel that has no bf16 x bf16 -> f32
    ("Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32").

Convolutions (the NAE's conv autoencoder, the ConVAE) stay float32 under both policies: on this CPU (AMD
EPYC, AVX512-BF16, jax 0.10.2) ``lax.conv_general_dilated`` with bfloat16 operands and
``preferred_element_type=float32`` runs, but no faster than float32 (e.g. 12.3 against 11.6 ms forward at
(128, 40, 40, 8) -> 16 channels, 3x3), and its autodiff backward convolutions are float32 x float32; the
policy covers those networks' Dense layers (and the flows' MLPs, all their products).

Why a custom VJP: with plain casts (``a.astype(bf16)`` before ``lax.dot_general(...,
preferred_element_type=f32)``), JAX's transpose rule multiplies the float32 cotangent by the upcast
bfloat16 operand -- a float32 product -- and rounds the operand gradient to bfloat16. `bf16_einsum`
writes the two backward products itself, both bfloat16 x bfloat16 -> float32.
"""
from __future__ import annotations

import functools
import string
from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["COMPUTE_DTYPES", "check_compute_dtype", "bf16_einsum", "bf16_dot_general", "dense_dot_general",
           "matmul_fn"]

COMPUTE_DTYPES = ("float32", "bfloat16")


def check_compute_dtype(name: str) -> str:
    """``name`` if it is a policy of `COMPUTE_DTYPES`, else ValueError naming the choices."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {name!r}")
    return name


def _backward_specs(spec: str) -> tuple[str, str]:
    """Einsum specs of the two operand gradients of a two-operand ``spec`` ("ab,bc->ac": "ac,bc->ab", "ac,ab->bc")."""
    inputs, out = spec.replace(" ", "").split("->")
    lhs, rhs = inputs.split(",")
    for name, operand, other in (("lhs", lhs, rhs), ("rhs", rhs, lhs)):
        if set(operand) - set(out) - set(other) or len(set(operand)) != len(operand):
            raise ValueError(f"bf16_einsum needs a product spec (every {name} index in the output or the other "
                             f"operand, none repeated), got {spec!r}")
    return f"{out},{rhs}->{lhs}", f"{out},{lhs}->{rhs}"


def _product(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """``einsum(spec, a, b)`` with bfloat16 operands, float32 accumulation and result."""
    return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def bf16_einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """Two-operand ``einsum(spec, a, b)``: bfloat16 operands, float32 result, backward products alike.

    ``a``, ``b`` float32 (the policy keeps every array float32); returns float32, and float32 cotangents.
    """
    return _product(spec, a, b)


def _bf16_einsum_fwd(spec, a, b):
    a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    return _product(spec, a16, b16), (a16, b16)


def _bf16_einsum_bwd(spec, residuals, g):
    a16, b16 = residuals
    lhs_spec, rhs_spec = _backward_specs(spec)
    return _product(lhs_spec, g, b16), _product(rhs_spec, g, a16)


bf16_einsum.defvjp(_bf16_einsum_fwd, _bf16_einsum_bwd)


def _spec_of(dimension_numbers, lhs_ndim: int, rhs_ndim: int) -> str:
    """The einsum spec of ``lax.dot_general`` dimension numbers (output: batch, lhs free, rhs free)."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    letters = iter(string.ascii_letters)
    lhs = [next(letters) for _ in range(lhs_ndim)]
    rhs = [next(letters) for _ in range(rhs_ndim)]
    for l, r in zip(tuple(lhs_contract) + tuple(lhs_batch), tuple(rhs_contract) + tuple(rhs_batch)):
        rhs[r] = lhs[l]
    batch = [lhs[i] for i in lhs_batch]
    free_lhs = [c for i, c in enumerate(lhs) if i not in lhs_contract and i not in lhs_batch]
    free_rhs = [c for i, c in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    return f"{''.join(lhs)},{''.join(rhs)}->{''.join(batch + free_lhs + free_rhs)}"


def bf16_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                     preferred_element_type=None, **_) -> jax.Array:
    """Drop-in ``lax.dot_general`` for ``flax.linen.Dense(dot_general=...)``: `bf16_einsum` semantics
    (bfloat16 operands, float32 result); ``precision`` and ``preferred_element_type`` are ignored."""
    del precision, preferred_element_type
    return bf16_einsum(_spec_of(dimension_numbers, lhs.ndim, rhs.ndim), lhs, rhs)


def dense_dot_general(compute_dtype: str) -> Callable | None:
    """The ``dot_general`` a Dense layer uses under the policy: None (Flax's default) or `bf16_dot_general`."""
    return None if check_compute_dtype(compute_dtype) == "float32" else bf16_dot_general


def _bf16_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return bf16_einsum("bi,io->bo", a, b)


def matmul_fn(compute_dtype: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``a (B, in) @ b (in, out)`` under the policy: `jnp.matmul` (float32) or `bf16_einsum` semantics."""
    return jnp.matmul if check_compute_dtype(compute_dtype) == "float32" else _bf16_matmul
