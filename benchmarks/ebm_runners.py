"""The EBM benchmark suite's inputs and runners: jets, parameters, keys, precisions, JAX chains, the
machine's ceilings and achieved rates, and the PyTorch peer's runners timed against JAX."""
from __future__ import annotations

import contextlib
import itertools
import traceback
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import device_memory_stats, host_peak_memory_mb, time_alternating, timed_first_call
from benchmarks.ebm_plan import CHAIN, NOISE_MEAN, NOISE_STD, PEAK_CLASS, N, Plan
from jaxebm.models.common import energy_fn
from jaxebm.models.transformer import TransformerEnergy
from jaxebm.sampling import langevin


# ---------------------------------------------------------------- inputs and JAX runners

def jet_batch(batch: int, seed: int) -> tuple[jax.Array, jax.Array]:
    """Chain-start-like jets ``(B, N, 3)`` float32 (every feature ~ the paper's noise) and an all-True
    mask ``(B, N)`` ("zeros" padding, the paper's): random data, never zeros."""
    rng = np.random.default_rng(seed)
    x = np.asarray(NOISE_MEAN, np.float32) + np.asarray(NOISE_STD, np.float32) * rng.standard_normal(
        (batch, N, len(NOISE_MEAN)), np.float32)
    return jnp.asarray(x), jnp.ones((batch, N), bool)


def init_params(model: TransformerEnergy, x: jax.Array, mask: jax.Array):
    """Parameters from ``model.init`` (the paper's PyTorch-like initialisation)."""
    return jax.jit(model.init)(jax.random.key(0), x[:2], mask[:2])


def key_stream(seed: int, count: int = 16) -> Callable[[], jax.Array]:
    """A callable returning ``count`` pre-made keys in a cycle (no key work inside the timed region)."""
    keys = itertools.cycle([jax.random.key(seed * count + i) for i in range(count)])
    return lambda: next(keys)


def precision_context(precision: str):
    """The matmul-precision context a precision runs under (traced and called inside it)."""
    if precision == "f32_bf16dot":
        return jax.default_matmul_precision("BF16_BF16_F32")
    return contextlib.nullcontext()


def jax_energy(model: TransformerEnergy, params, mask: jax.Array, precision: str) -> Callable:
    """Frozen energy closure ``x (B, N, F) float32 -> (B,) float32`` in ``precision``.

    TransformerConfig has no dtype option, so 'bf16' casts the frozen parameters and the input to
    bfloat16 here, which for frozen parameters computes what dtype=bf16, param_dtype=f32 would.
    """
    if precision != "bf16":
        return energy_fn(model, params, mask)
    params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), jax.lax.stop_gradient(params))
    return lambda x: model.apply(params16, x.astype(jnp.bfloat16), mask).astype(jnp.float32)


def jax_langevin(model: TransformerEnergy, params, x0: jax.Array, mask: jax.Array, steps: int,
                 precision: str) -> tuple[Callable, Callable[[], jax.Array], Callable]:
    """(jitted chain, no-argument runner, AOT-compile function) of ``steps`` ULA steps (one scan)."""
    def chain(params, key, x0, mask):
        x, _ = langevin.run_chain(key, x0, jax_energy(model, params, mask, precision), CHAIN, steps)
        return x

    jitted, next_key = jax.jit(chain), key_stream(1)

    def run():
        with precision_context(precision):
            return jitted(params, next_key(), x0, mask)

    def compiled():
        with precision_context(precision):
            return jitted.lower(params, next_key(), x0, mask).compile()

    return jitted, run, compiled


# ---------------------------------------------------------------- ceilings

def jax_matmul_rate(size: int, dtype, repeats: int, warmup: int) -> float:
    """Median FLOP/s of a jitted ``size x size`` product on random data."""
    a, b = (jax.random.normal(k, (size, size), dtype) for k in jax.random.split(jax.random.key(3)))
    product = jax.jit(jnp.matmul)
    product(a, b).block_until_ready()
    seconds = time_alternating({"matmul": lambda: product(a, b)}, repeats, warmup=warmup)["matmul"]["median_s"]
    return 2 * size ** 3 / seconds


def jax_copy_bandwidth(mib: int, repeats: int, warmup: int) -> float:
    """Median bytes/s (read + write) of a jitted elementwise pass ``2 * a`` over ``mib`` MiB of float32."""
    a = jax.random.normal(jax.random.key(4), (mib * 2**18,), jnp.float32)
    scale = jax.jit(lambda a: 2.0 * a)
    scale(a).block_until_ready()
    seconds = time_alternating({"copy": lambda: scale(a)}, repeats, warmup=warmup)["copy"]["median_s"]
    return 2 * a.nbytes / seconds


def measure_ceilings(plan: Plan, peer, torch_device) -> dict:
    """Measured dense-product rates (JAX and torch, per precision class) and copy bandwidth."""
    reps = plan.repeats + 2
    out = {"jax_matmul_f32_flops": jax_matmul_rate(plan.matmul_size, jnp.float32, reps, plan.warmup),
           "jax_copy_bytes_per_s": jax_copy_bandwidth(plan.copy_mib, reps, plan.warmup)}
    if jax.devices()[0].platform == "gpu":
        out["jax_matmul_bf16_flops"] = jax_matmul_rate(plan.matmul_size, jnp.bfloat16, reps, plan.warmup)
    if peer is not None:
        out["torch_matmul_f32_flops"] = peer.matmul_rate(plan.matmul_size, torch_device, reps)
        if torch_device.type == "cuda":
            out["torch_matmul_bf16_flops"] = peer.matmul_rate(plan.matmul_size, torch_device, reps, "bf16")
    for dtype in ("f32", "bf16"):
        rates = [v for k, v in out.items() if k.endswith(f"matmul_{dtype}_flops")]
        if rates:
            out[f"matmul_{dtype}_flops"] = max(rates)
    return out


def rate_fields(flops: float, hbm_bytes: float | None, seconds: float, precision: str, ceilings: dict,
                peak: dict | None) -> dict:
    """Achieved FLOP rate against the measured product rate; on a known GPU also MFU and roofline."""
    achieved = flops / seconds
    ceiling = ceilings.get(f"matmul_{'f32' if precision == 'f32' else 'bf16'}_flops")
    out = {"gflops_per_s": achieved / 1e9, "fraction_of_measured_matmul": achieved / ceiling if ceiling else None}
    if peak is not None:
        peak_flops = peak["flops"][PEAK_CLASS[precision]]
        out["mfu"] = achieved / peak_flops
        bandwidth = ceilings.get("jax_copy_bytes_per_s")
        if hbm_bytes is not None and bandwidth:
            out["achieved_bandwidth_gb_per_s"] = hbm_bytes / seconds / 1e9
            out["fraction_of_measured_bandwidth"] = hbm_bytes / seconds / bandwidth
            out["roofline_gflops_per_s"] = min(peak_flops, flops / hbm_bytes * bandwidth) / 1e9
            out["fraction_of_roofline"] = achieved / 1e9 / out["roofline_gflops_per_s"]
    return out


def cache_size(jitted) -> int | None:
    """Number of programs a ``jax.jit`` function holds (private JAX API: None if it is gone)."""
    size = getattr(jitted, "_cache_size", None)
    return size() if size is not None else None


def memory_fields() -> dict:
    """Process peak host memory and device memory so far (peaks are cumulative over the run)."""
    return {"host_peak_mb": host_peak_memory_mb(), "device_memory": device_memory_stats()}


def error_string(error: BaseException) -> str:
    """One line naming the exception (the traceback goes to stdout)."""
    traceback.print_exception(error)
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:400]


# ---------------------------------------------------------------- torch peer runners

def torch_inputs(x: jax.Array, mask: jax.Array, device):
    """The same arrays as torch tensors on ``device``."""
    import torch
    return torch.from_numpy(np.array(x)).to(device), torch.from_numpy(np.array(mask)).to(device)


def torch_runners(peer, make_run: Callable[[Callable], Callable[[], object]], build: Callable,
                  device) -> tuple[dict, dict, dict]:
    """Eager and ``torch.compile`` runners; returns (runs, first-call info, errors).

    ``build(compiled)`` returns the energy module to use (a fresh model, compiled or not);
    ``make_run(energy)`` the no-argument runner using it.
    """
    runs, first, errors = {}, {}, {}
    sync = lambda _: peer.sync(device)  # noqa: E731
    for name, compiled in (("torch_eager", False), ("torch_compile", True)):
        try:
            run = make_run(build(compiled))
            first[name], _ = timed_first_call(run, sync=sync)
            runs[name] = run
        except Exception as error:  # torch.compile raises at the first call
            errors[name] = error_string(error)
    return runs, first, errors


def time_against_peer(runs: dict, first: dict, peer, make_run: Callable, build: Callable, device, repeats: int,
                      warmup: int) -> tuple[dict, dict]:
    """Add the peer's runners (`torch_runners`; none when ``peer`` is None) to ``runs`` and ``first``, time
    all runners alternating, free the peer's memory; returns (timings, the peer's errors)."""
    errors, syncs = {}, {}
    if peer is not None:
        torch_runs, torch_first, errors = torch_runners(peer, make_run, build, device)
        runs.update(torch_runs)
        first.update(torch_first)
        syncs = {name: (lambda _: peer.sync(device)) for name in torch_runs}
    timings = time_alternating(runs, repeats, warmup=warmup, syncs=syncs)
    if peer is not None:
        peer.release_memory(device)
    return timings, errors
