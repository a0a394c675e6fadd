"""Where the float32 paper-size energy + input-gradient step spends its time (issue 25, item 3).

    python -m benchmarks.profile_step [--repeats R] [--out-dir DIR]

At the paper size (8 x 128 transformer, 16 heads of width 8, N = 40, batch 128), each part of the step is
its own jitted program at the exact shapes of one self-attention block, forward and input-gradient backward
(the Langevin step's work): the four Dense products (qkv, out, ff_in, ff_out), the attention core (scores,
key mask, softmax, weighted sum) and the block's elementwise rest (ReLU, residual adds) by difference; then
the whole energy + gradient, the ULA step and the optimised-HLO op counts of the gradient program. Times
are the minimum over repeats of the process CPU time (all threads) and of the wall time: on a shared
machine the CPU time moves much less with the load than the wall time. The f32 matrix-product rate at
the block's largest shape and the load average are measured in the same run.
Writes ``benchmarks/results/precision_profile_<platform>.{json,md}``.
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import RESULTS_DIR, machine_info, markdown_table, write_json
from benchmarks.ebm_plan import CHAIN, SIZES, N
from benchmarks.ebm_runners import init_params, jet_batch
from jaxebm.models.common import energy_fn
from jaxebm.models.transformer import TransformerEnergy
from jaxebm.sampling import langevin

BATCH = 128
_OP = re.compile(r"= \S+ (\w[\w-]*)\(")


def cost(run, repeats: int) -> dict:
    """Min over ``repeats`` calls of ``run()`` (already compiled) of CPU and wall milliseconds."""
    jax.block_until_ready(run())
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(run())
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {"cpu_ms": 1e3 * min(cpu), "wall_ms": 1e3 * min(wall), "wall_median_ms": 1e3 * float(np.median(wall))}


def hlo_ops(jitted, *args) -> dict[str, int]:
    """Counts of the optimised HLO's dot, transpose, copy, fusion and reduce instructions."""
    ops = collections.Counter(_OP.findall(jitted.lower(*args).compile().as_text()))
    return {name: ops.get(name, 0) for name in ("dot", "transpose", "copy", "fusion", "reduce", "select")}


def _input_grad(fn):
    """jit of ``x, *rest -> (sum fn(x, *rest), its gradient in x)``: the forward and the backward pass a
    Langevin step needs (the value keeps the forward products of a linear chain in the program)."""
    return jax.jit(jax.value_and_grad(lambda x, *rest: jnp.sum(fn(x, *rest))))


def block_parts(config, repeats: int) -> dict:
    """One block's parts at the paper shapes, forward + input gradient, each its own program."""
    keys = iter(jax.random.split(jax.random.key(0), 16))
    rows, width, heads = BATCH * N, config.d_model, config.num_heads
    h = jax.random.normal(next(keys), (rows, width))
    weights = {name: 0.05 * jax.random.normal(next(keys), shape) for name, shape in (
        ("qkv", (width, 3 * width)), ("out", (width, width)), ("ff_in", (width, config.ff_dim)),
        ("ff_out", (config.ff_dim, width)))}

    def qkv_sum(h, w):  # all of the qkv product used (XLA would drop unused columns)
        qkv = h @ w["qkv"]
        return qkv[:, :width] + qkv[:, width:2 * width] + qkv[:, 2 * width:]

    def products(h, w):  # the four Dense products of a block, nothing between them but the qkv sum
        return qkv_sum(h, w) @ w["out"] @ w["ff_in"] @ w["ff_out"]

    def elementwise(h, w):  # the same products with the block's ReLU and residual adds
        a = h + qkv_sum(h, w) @ w["out"]
        return a + jax.nn.relu(a @ w["ff_in"]) @ w["ff_out"]

    q = jax.random.normal(next(keys), (BATCH, N, heads, width // heads))
    mask = jnp.arange(N)[None] < jax.random.randint(next(keys), (BATCH, 1), 20, N + 1)

    def masked_softmax(scores, mask):  # the model's: padded keys get weight 0, an all-padded row 0
        real = mask[:, None, None, :]
        return jnp.where(real, jax.nn.softmax(jnp.where(real, scores, jnp.finfo(scores.dtype).min), -1), 0.0)

    def attention(q, k, v, mask):  # the model's attention core, (B, N, heads, width) operands
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(float(q.shape[-1]))
        return jnp.einsum("bhqk,bkhd->bqhd", masked_softmax(scores, mask), v)

    def attention_head_major(q, k, v, mask):  # tried: explicit (B, heads, N, width) operands
        q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(float(q.shape[-1]))
        return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", masked_softmax(scores, mask), v), 1, 2)

    def attention_products(q, k, v):  # the two batched products alone, forward and backward
        return jnp.einsum("bhqk,bkhd->bqhd", jnp.einsum("bqhd,bkhd->bhqk", q, k), v)

    scores = jax.random.normal(next(keys), (BATCH, heads, N, N))
    qkv = (q, 0.5 * q, 0.3 * q)
    runs = {"dense_products": (_input_grad(products), (h, weights)),
            "dense_products_relu_residual": (_input_grad(elementwise), (h, weights)),
            "attention_core": (_input_grad(attention), (*qkv, mask)),
            "attention_products_only": (_input_grad(attention_products), qkv),
            "attention_softmax_mask_only": (_input_grad(masked_softmax), (scores, mask)),
            "attention_core_head_major_tried": (_input_grad(attention_head_major), (*qkv, mask))}
    out = {name: cost(lambda f=f, a=a: f(*a), repeats) for name, (f, a) in runs.items()}
    flops = 2 * 2 * rows * sum(int(np.prod(w.shape)) for w in weights.values())  # forward + input gradient
    out["dense_products"]["gflops_per_s"] = flops / out["dense_products"]["wall_ms"] / 1e6
    out["attention_core"]["hlo_ops"] = hlo_ops(runs["attention_core"][0], *runs["attention_core"][1])
    reference, tried = (runs[name][0](*runs[name][1])[1]
                        for name in ("attention_core", "attention_core_head_major_tried"))
    out["attention_core_head_major_tried"]["max_relative_difference"] = float(
        jnp.max(jnp.abs(tried - reference)) / jnp.max(jnp.abs(reference)))
    return out


def whole_step(config, repeats: int) -> dict:
    """The whole energy + input gradient and one ULA step at batch 128, with the gradient program's HLO ops."""
    model = TransformerEnergy(config)
    x, mask = jet_batch(BATCH, seed=1)
    params = init_params(model, x, mask)
    grad = jax.jit(lambda p, x, m: jax.grad(lambda x: energy_fn(model, p, m)(x).sum())(x))
    chain = jax.jit(lambda p, k, x, m: langevin.run_chain(k, x, energy_fn(model, p, m), CHAIN, 1)[0])
    return {"energy_input_grad": cost(lambda: grad(params, x, mask), repeats) | {"hlo_ops": hlo_ops(grad, params, x,
                                                                                                      mask)},
            "langevin_step": cost(lambda: chain(params, jax.random.key(2), x, mask), repeats)}


def matmul_rate(shape: tuple[int, int, int], repeats: int) -> float:
    """f32 GFLOP/s of a jitted ``(m x k) @ (k x n)`` product (best wall time)."""
    m, k, n = shape
    a, b = jax.random.normal(jax.random.key(3), (m, k)), jax.random.normal(jax.random.key(4), (k, n))
    return 2 * m * k * n / cost(lambda: jnp.dot(a, b), 5 * repeats)["wall_ms"] / 1e6


def markdown(payload: dict) -> str:
    """The report table: each part's CPU and wall milliseconds, eight blocks' worth where it is a block part."""
    meta, parts, whole = payload["meta"], payload["block_parts"], payload["whole"]
    layers = payload["num_layers"]
    rows = [[f"{name} (x{layers} blocks)", layers * p["cpu_ms"], layers * p["wall_ms"]] for name, p in parts.items()]
    rows += [[name, p["cpu_ms"], p["wall_ms"]] for name, p in whole.items()]
    total = whole["energy_input_grad"]["cpu_ms"]
    share = {name: layers * p["cpu_ms"] / total for name, p in parts.items()}
    elementwise = share["dense_products_relu_residual"] - share["dense_products"]
    dense = parts["dense_products"]
    dense_rate = dense["gflops_per_s"] * dense["wall_ms"] / dense["cpu_ms"]
    shares = (f"Shares of the whole energy + input gradient by CPU time: Dense products "
              f"{share['dense_products']:.0%} ({dense_rate:.0f} GFLOP per CPU second), "
              f"ReLU + residual adds {elementwise:.0%}, attention core {share['attention_core']:.0%} (its two "
              f"batched products {share['attention_products_only']:.0%}, masked softmax "
              f"{share['attention_softmax_mask_only']:.0%}, the rest layout copies and the scale); the sum of "
              f"the parts is {share['dense_products_relu_residual'] + share['attention_core']:.0%} of the whole. "
              "Tried: head-major (B, heads, N, width) attention operands, "
              f"{parts['attention_core_head_major_tried']['cpu_ms'] / parts['attention_core']['cpu_ms']:.2f}x the "
              "attention core's CPU time.")
    return "\n".join([
        "# Profile of the float32 paper-size step (`python -m benchmarks.profile_step`)", "",
        f"{meta['date']}, {meta['cpu']} ({meta['cpu_count']} cores), jax {meta['versions']['jax']}, "
        f"load average {payload['load_average_1min'][0]} -> {payload['load_average_1min'][1]}; "
        f"f32 product rate {payload['matmul_f32_gflops_per_s']:.0f} GFLOP/s at {payload['matmul_shape']}.", "",
        *markdown_table(["part (forward + input gradient)", "CPU ms", "wall ms"], rows), "", shares, ""])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out-dir", type=pathlib.Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    config = SIZES["paper"]
    loads = [round(float(np.loadtxt("/proc/loadavg", usecols=0)), 2)]
    payload = {"meta": machine_info(), "num_layers": config.num_layers, "batch": BATCH, "num_constituents": N,
               "matmul_shape": [BATCH * N, config.d_model, config.ff_dim],
               "matmul_f32_gflops_per_s": matmul_rate((BATCH * N, config.d_model, config.ff_dim), args.repeats),
               "block_parts": block_parts(config, args.repeats), "whole": whole_step(config, args.repeats)}
    payload["load_average_1min"] = loads + [round(float(np.loadtxt("/proc/loadavg", usecols=0)), 2)]
    stem = args.out_dir / f"precision_profile_{jax.devices()[0].platform}"
    write_json(stem.with_suffix(".json"), payload)
    stem.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))
    return payload


if __name__ == "__main__":
    main()
