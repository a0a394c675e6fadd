"""EBM suite: Langevin, training and generation throughput of the transformer energy, compile cost
and memory, against the machine's measured ceilings and, optionally, an independent PyTorch peer.

    python -m benchmarks.bench_ebm [--quick] [--device-label LABEL] [--peer torch] [--sections ...]

Writes ``benchmarks/results/ebm_<platform>.json`` and ``.md`` (``ebm_<platform>_quick.*`` with
``--quick``; a subset chosen with ``--sections``, ``--sizes`` or ``--precisions`` is named in the
file name), rewritten after every configuration so that a run cut short keeps its finished rows.
`benchmarks/README.md` says what each number means; `benchmarks.ebm_costs` holds the FLOP and byte
model.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import pathlib
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import ebm_costs
from benchmarks.bench_ebm_report import markdown_report
from benchmarks.common import (RESULTS_DIR, device_memory_stats, executable_stats, host_peak_memory_mb,
                               machine_info, time_alternating, timed_first_call, write_json)
from jaxebm.inference import GenerationConfig, generate
from jaxebm.models.common import energy_fn
from jaxebm.models.transformer import TransformerConfig, TransformerEnergy
from jaxebm.sampling import langevin, proposal
from jaxebm.sampling.langevin import LangevinConfig
from jaxebm.train.cd import CDConfig, make_cd_step, make_noise_fn
from jaxebm.train.state import create_train_state

SIZES = {
    "paper": TransformerConfig(),                                                    # 8 x 128, 16 heads, ff 1024
    "small": TransformerConfig(num_layers=2, d_model=64, num_heads=8, ff_dim=256),
    "tiny": TransformerConfig(num_layers=1, d_model=32, num_heads=4, ff_dim=64),    # --quick only
}
N = ebm_costs.NUM_CONSTITUENTS
CD_DEFAULTS = CDConfig()
CHAIN = LangevinConfig(step_size=CD_DEFAULTS.step_size, noise_scale=CD_DEFAULTS.noise_scale)
NOISE_MEAN, NOISE_STD = (2.0, 0.0, 0.0), (1.0, 0.1, 0.2)   # paper's chain starts (log pT, eta, phi)
GENERATION_STEPS = GenerationConfig().num_steps
SECTIONS = ("langevin", "cost", "train", "generation")

PRECISIONS = {
    "f32": "float32 parameters and activations (XLA's default precision: TF32 products on a GPU)",
    "bf16": "parameters and chain input cast to bfloat16 inside the energy; chain state, update, noise float32",
    "f32_bf16dot": "float32 arrays, products with the BF16_BF16_F32 dot algorithm (jax.default_matmul_precision)",
}
BYTES_PER_ELEMENT = {"f32": 4, "bf16": 2, "f32_bf16dot": 4}
PEAK_CLASS = {"f32": "tf32", "bf16": "bf16", "f32_bf16dot": "bf16"}
TORCH_PRECISIONS = ("f32", "bf16")

# Datasheet dense peaks (no sparsity), FLOP/s, and memory bandwidth, bytes/s; first match of device_kind.
DEVICE_PEAKS = (
    ("H200", {"tf32": 494e12, "bf16": 989e12}, 4.8e12),
    ("H100 PCIe", {"tf32": 378e12, "bf16": 756e12}, 2.0e12),
    ("H100", {"tf32": 494e12, "bf16": 989e12}, 3.35e12),
)


@dataclass(frozen=True)
class LangevinCase:
    """One chain configuration: model size name, chains (batch) and Langevin steps per timed call."""

    size: str
    batch: int
    steps: int


@dataclass(frozen=True)
class Plan:
    """What a run measures; `make_plan` picks it from the platform and --quick.

    repeats: timed calls per Langevin case (train_repeats for the CD iteration; generation uses
    repeats). warmup: untimed calls after the first (compiling) call, for Langevin cases and the
    ceilings; heavy_warmup: the same for the CD iteration and generation, which last seconds on a CPU.
    """

    langevin: tuple[LangevinCase, ...]
    precisions: tuple[str, ...]
    repeats: int
    warmup: int
    heavy_warmup: int
    matmul_size: int
    copy_mib: int
    train_size: str
    train_config: CDConfig
    train_repeats: int
    generation_size: str
    generation_batch: int
    generation_steps: int
    notes: tuple[str, ...] = field(default=())


def make_plan(platform: str, quick: bool) -> Plan:
    """Sizes and repetitions: --quick (seconds, tiny model); CPU (estimated 10-15 minutes on 2 quiet cores
    with the peer, the CD iterations taking about half); GPU (run in parts: benchmarks/gpu_suite.sh)."""
    gpu = platform == "gpu"
    precisions = ("f32", "bf16", "f32_bf16dot") if gpu else ("f32",)
    if quick:
        return Plan(langevin=(LangevinCase("tiny", 16, 2), LangevinCase("tiny", 64, 2)), precisions=precisions,
                    repeats=1, warmup=1, heavy_warmup=1, matmul_size=512, copy_mib=16, train_size="tiny",
                    train_config=CDConfig(num_langevin_steps=2, buffer_size=64, batch_size=16),
                    train_repeats=1, generation_size="tiny", generation_batch=32, generation_steps=2,
                    notes=("--quick: tiny model and sizes, 1 repetition; validates the suite, not a result",))
    if gpu:
        cases = tuple(LangevinCase(size, batch, steps) for size in ("paper", "small")
                      for batch, steps in ((128, 50), (1024, 20), (8192, 5 if size == "paper" else 20)))
        return Plan(langevin=cases, precisions=precisions, repeats=5, warmup=2, heavy_warmup=2,
                    matmul_size=8192, copy_mib=2048, train_size="paper", train_config=CD_DEFAULTS, train_repeats=5,
                    generation_size="paper", generation_batch=10_000, generation_steps=GENERATION_STEPS,
                    notes=("GPU: f32 means XLA's default precision, TF32 products (torch set to match)",))
    cases = (LangevinCase("paper", 128, 2), LangevinCase("small", 128, 10), LangevinCase("small", 1024, 3),
             LangevinCase("small", 8192, 1))
    return Plan(langevin=cases, precisions=precisions, repeats=3, warmup=1, heavy_warmup=0,
                matmul_size=4096, copy_mib=256, train_size="paper", train_config=CD_DEFAULTS, train_repeats=2,
                generation_size="paper", generation_batch=1024, generation_steps=2,
                notes=("CPU: paper size at batch 128 only (batch 1024 costs ~5 s per step here)",
                       "CPU generation: batch 1024 and 2 steps measured, scaled linearly to 200 steps "
                       "(batch 10k would need ~40 GB for the input gradient's activations)"))


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


def device_peak(device_kind: str) -> dict | None:
    """Datasheet peaks for ``device_kind``: {"flops": {class: FLOP/s}, "bandwidth": bytes/s, "match": ...}."""
    for name, flops, bandwidth in DEVICE_PEAKS:
        if name.lower() in device_kind.lower():
            return {"match": name, "flops": flops, "bandwidth": bandwidth}
    return None


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


# ---------------------------------------------------------------- sections

def langevin_case(case: LangevinCase, precision: str, plan: Plan, peer, torch_device, ceilings: dict,
                  peak: dict | None) -> list[dict]:
    """Rows of one chain configuration: JAX, and the torch peer's eager and compiled runs."""
    config = SIZES[case.size]
    model = TransformerEnergy(config)
    x0, mask = jet_batch(case.batch, seed=1)
    params = init_params(model, x0, mask)
    jitted, run, compiled = jax_langevin(model, params, x0, mask, case.steps, precision)
    first_jax, x_end = timed_first_call(run)
    runs, first = {"jax": run}, {"jax": first_jax}
    jax_extra = {"finite": bool(jnp.isfinite(x_end).all()), **executable_stats(compiled())}
    peer = peer if precision in TORCH_PRECISIONS else None
    if peer is not None:
        xt, mt = torch_inputs(x0, mask, torch_device)

    def build(compile_it):
        module = peer.build_model(config, torch_device, precision)
        peer.set_frozen(module, True)
        return peer.compile_model(module) if compile_it else module

    def make_run(energy):
        return lambda: peer.langevin_chain(energy, xt, mt, case.steps, CHAIN.step_size, CHAIN.noise_scale)

    timings, errors = time_against_peer(runs, first, peer, make_run, build, torch_device, plan.repeats, plan.warmup)
    jax_extra["cache_size"] = cache_size(jitted)
    flops = ebm_costs.langevin_step_flops(config) * case.batch * case.steps
    hbm = ebm_costs.hbm_bytes_per_jet_step(config, case.batch, BYTES_PER_ELEMENT[precision]) * case.batch * case.steps
    rows = []
    for name, timing in timings.items():
        seconds = timing["median_s"]
        row = {**asdict(case), "precision": precision, "runner": name, "seconds_per_call": seconds,
               "times_s": timing["times_s"], "compiles_while_timed": timing["compiles_while_timed"],
               "us_per_jet_step": 1e6 * seconds / (case.batch * case.steps),
               "jet_steps_per_s": case.batch * case.steps / seconds,
               **rate_fields(flops, hbm, seconds, precision, ceilings, peak), "first_call": first[name]}
        if name == "jax":
            row.update(jax_extra)
            for other in ("torch_eager", "torch_compile"):
                if other in timings:
                    row[f"ratio_vs_{other}"] = seconds / timings[other]["median_s"]
        rows.append(row)
    rows += [{**asdict(case), "precision": precision, "runner": name, "error": message}
             for name, message in errors.items()]
    memory = memory_fields()
    return [{**row, **memory} for row in rows]


def cost_check(size: str, batch: int, precision: str) -> dict:
    """XLA's cost analysis of one forward pass and one energy-plus-input-gradient step, per jet,
    next to the analytic counts (no loop: a scan's cost analysis may count its body once), and the
    relative error ``|g - g_ref| / |g_ref|`` of the input gradient against float32 at 'highest'
    matmul precision."""
    config = SIZES[size]
    model = TransformerEnergy(config)
    x, mask = jet_batch(batch, seed=2)
    params = init_params(model, x, mask)
    forward = jax.jit(lambda p, x, m: jax_energy(model, p, m, precision)(x))
    step = jax.jit(lambda p, x, m: proposal.energy_and_grad(jax_energy(model, p, m, precision), x))
    with precision_context(precision):
        fwd_stats = executable_stats(forward.lower(params, x, mask).compile())
        step_compiled = step.lower(params, x, mask).compile()
        _, grad = step_compiled(params, x, mask)
    step_stats = executable_stats(step_compiled)
    with jax.default_matmul_precision("highest"):
        _, grad_reference = jax.jit(lambda p, x, m: proposal.energy_and_grad(energy_fn(model, p, m), x))(
            params, x, mask)
    def per_jet(value: float | None, unit: float) -> float | None:
        return None if value is None else value / batch / unit

    analytic_bytes = ebm_costs.hbm_bytes_per_jet_step(config, batch, BYTES_PER_ELEMENT[precision])
    row = {"size": size, "batch": batch, "precision": precision,
           "analytic_forward_gflop_per_jet": ebm_costs.forward_flops(config) / 1e9,
           "xla_forward_gflop_per_jet": per_jet(fwd_stats["xla_flops"], 1e9),
           "analytic_step_gflop_per_jet": ebm_costs.langevin_step_flops(config) / 1e9,
           "xla_step_gflop_per_jet": per_jet(step_stats["xla_flops"], 1e9),
           "grad_rel_error_vs_highest": float(jnp.linalg.norm(grad - grad_reference) / jnp.linalg.norm(grad_reference)),
           "analytic_step_mb_per_jet": analytic_bytes / 1e6,
           "xla_step_mb_accessed_per_jet": per_jet(step_stats["xla_bytes_accessed"], 1e6)}
    if row["xla_step_gflop_per_jet"]:
        row["xla_over_analytic_step"] = row["xla_step_gflop_per_jet"] / row["analytic_step_gflop_per_jet"]
    return row


def train_rows(plan: Plan, peer, torch_device, ceilings: dict, peak: dict | None) -> list[dict]:
    """Full jitted CD iteration (and the torch peer's): iterations/s and the paper schedule's wall time."""
    config, cd = SIZES[plan.train_size], plan.train_config
    model = TransformerEnergy(config)
    noise_fn = make_noise_fn(NOISE_MEAN, NOISE_STD, N)
    x_pos, mask_pos = jet_batch(cd.batch_size, seed=3)
    holder = [create_train_state(jax.random.key(0), model, cd, x_pos, mask_pos, noise_fn), None]
    step = make_cd_step(model, cd, noise_fn)

    def run():
        holder[:] = step(holder[0], x_pos, mask_pos)
        return holder

    runs, first = {"jax": run}, {"jax": timed_first_call(run)[0]}
    if peer is not None:
        xt, _ = torch_inputs(x_pos, mask_pos, torch_device)

    def build(compile_it):
        module = peer.build_model(config, torch_device)
        energy = peer.compile_model(module) if compile_it else module
        return peer.TorchCD(module, energy, cd, N, NOISE_MEAN, NOISE_STD, torch_device)

    timings, errors = time_against_peer(runs, first, peer, lambda trainer: (lambda: trainer.step(xt)), build,
                                        torch_device, plan.train_repeats, plan.heavy_warmup)
    flops = ebm_costs.train_step_flops(config, cd.batch_size, cd.num_langevin_steps)
    iterations = ebm_costs.paper_schedule_iterations()
    rows = []
    for name, timing in timings.items():
        seconds = timing["median_s"]
        row = {"size": plan.train_size, "batch": cd.batch_size, "langevin_steps": cd.num_langevin_steps,
               "runner": name, "seconds_per_iteration": seconds, "times_s": timing["times_s"],
               "iterations_per_s": 1 / seconds, "paper_schedule_iterations": iterations,
               "paper_schedule_hours": iterations * seconds / 3600,
               "compiles_while_timed": timing["compiles_while_timed"],
               **rate_fields(flops, None, seconds, "f32", ceilings, peak), "first_call": first[name]}
        if name == "jax":
            row["cache_size"] = cache_size(step)
            row["finite"] = bool(holder[1]["is_finite"])
            for other in ("torch_eager", "torch_compile"):
                if other in timings:
                    row[f"ratio_vs_{other}"] = seconds / timings[other]["median_s"]
        rows.append(row)
    rows += [{"size": plan.train_size, "runner": name, "error": message} for name, message in errors.items()]
    memory = memory_fields()
    return [{**row, **memory} for row in rows]


def generation_row(plan: Plan) -> dict:
    """Microseconds per generated jet at the paper's 200 steps through `jaxebm.inference.generate`."""
    config = SIZES[plan.generation_size]
    model = TransformerEnergy(config)
    x, mask = jet_batch(2, seed=4)
    params = init_params(model, x, mask)
    noise_fn = make_noise_fn(NOISE_MEAN, NOISE_STD, N)
    gen = GenerationConfig(num_steps=plan.generation_steps, batch_size=plan.generation_batch)
    next_key = key_stream(5)
    run = lambda: generate(next_key(), model, params, noise_fn, gen, gen.batch_size, progress=False)  # noqa: E731
    identity = lambda out: out  # noqa: E731  (generate returns host numpy arrays: already synchronised)
    first, (x_end, _) = timed_first_call(run, sync=identity)
    timing = time_alternating({"jax": run}, plan.repeats, warmup=plan.heavy_warmup, syncs={"jax": identity})["jax"]
    seconds = timing["median_s"]
    scale = GENERATION_STEPS / plan.generation_steps
    return {"size": plan.generation_size, "batch": gen.batch_size, "steps_measured": plan.generation_steps,
            "scaled_to_steps": GENERATION_STEPS, "scaled": scale != 1, "seconds_per_call": seconds,
            "times_s": timing["times_s"], "us_per_jet_at_200_steps": 1e6 * seconds * scale / gen.batch_size,
            "jets_per_s_at_200_steps": gen.batch_size / (seconds * scale),
            "compiles_while_timed": timing["compiles_while_timed"], "first_call": first,
            "finite": bool(np.isfinite(x_end).all()), **memory_fields()}


# ---------------------------------------------------------------- driver

def load_peer(name: str | None):
    """The peer module, or None (with a printed reason) when not requested or torch is missing."""
    if name is None:
        return None
    try:
        from benchmarks import torch_peer
    except ImportError as error:
        print(f"peer '{name}' skipped: {error}", flush=True)
        return None
    return torch_peer


def select(plan: Plan, sizes: list[str] | None, precisions: list[str] | None) -> Plan:
    """``plan`` restricted to the Langevin sizes and the precisions asked for (None: all)."""
    cases = tuple(c for c in plan.langevin if sizes is None or c.size in sizes)
    kept = tuple(p for p in plan.precisions if precisions is None or p in precisions)
    return dataclasses.replace(plan, langevin=cases, precisions=kept)


def output_path(platform: str, quick: bool, subset: list[str]) -> pathlib.Path:
    """``results/ebm_<platform>[_quick][_<subset>].json``; a partial run never overwrites a full one."""
    stem = "_".join([f"ebm_{platform}"] + (["quick"] if quick else []) + subset)
    return RESULTS_DIR / f"{stem}.json"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition: validate the suite")
    parser.add_argument("--device-label", default=None, help="free text naming the machine in the report")
    parser.add_argument("--peer", choices=("torch",), default=None, help="run the PyTorch peer side by side")
    parser.add_argument("--merge", nargs="+", type=pathlib.Path, default=None, metavar="JSON",
                        help="merge the result files of partial runs into ebm_<platform>.json/.md and exit")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run only these sections (to fit a time limit; the file name records it)")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=None,
                        help="Langevin and cost sections: only these model sizes")
    parser.add_argument("--precisions", nargs="+", choices=sorted(PRECISIONS), default=None,
                        help="only these precisions (those the platform supports)")
    return parser.parse_args()


def run_section(payload: dict, name: str, make_rows: Callable[[], list | dict], save: Callable[[], None]) -> None:
    """Store ``make_rows()`` under ``payload[name]``, or the error under ``payload["errors"][name]``;
    record the section's wall seconds under ``payload["section_seconds"]``; save."""
    start = time.perf_counter()
    try:
        payload[name] = make_rows()
    except Exception as error:
        payload.setdefault("errors", {})[name] = error_string(error)
    payload.setdefault("section_seconds", {})[name] = time.perf_counter() - start
    save()


def langevin_section(plan: Plan, peer, torch_device, payload: dict, save: Callable[[], None]) -> list[dict]:
    """Every Langevin case in every precision; rows are stored and saved as each case finishes."""
    rows = payload["langevin"] = []
    for case, precision in itertools.product(plan.langevin, plan.precisions):
        try:
            new = langevin_case(case, precision, plan, peer, torch_device, payload.get("ceilings", {}),
                                payload["meta"]["peak"])
        except Exception as error:
            new = [{**asdict(case), "precision": precision, "runner": "jax", "error": error_string(error)}]
        rows += new
        print_rows("langevin", new)
        save()
    return rows


def print_rows(section: str, rows: list[dict]) -> None:
    """One progress line per row."""
    for r in rows:
        label = f"{section} {r['size']:5s} B={r.get('batch', 0):5d} {r.get('precision', 'f32'):11s} "
        if "error" in r:
            result = r["error"]
        elif "us_per_jet_step" in r:
            result = f"{r['us_per_jet_step']:10.2f} us/jet-step {r['gflops_per_s']:9.1f} GFLOP/s"
        else:
            result = f"{r['seconds_per_iteration']:10.3f} s/iteration {r['gflops_per_s']:9.1f} GFLOP/s"
        print(f"{label}{r['runner']:13s} {result}", flush=True)


def merge(paths: list[pathlib.Path]) -> pathlib.Path:
    """One report from partial runs: Langevin, cost and train rows concatenated, generation from the
    last file that has it; meta and ceilings from the first file, each file's own under ``parts``
    (every row's fractions were computed against its own run's ceilings)."""
    parts = [json.loads(path.read_text()) for path in paths]
    merged = {"meta": parts[0]["meta"], "plan": parts[0]["plan"], "ceilings": parts[0].get("ceilings", {}),
              "parts": [{"file": str(path), "date": part["meta"]["date"], "ceilings": part.get("ceilings", {}),
                         "plan": part["plan"]} for path, part in zip(paths, parts)]}
    for part in parts:
        for name in ("langevin", "cost", "train"):
            merged[name] = merged.get(name, []) + part.get(name, [])
        if "generation" in part:
            merged["generation"] = part["generation"]
        merged.setdefault("errors", {}).update(part.get("errors", {}))
    path = output_path(merged["meta"]["jax_platform"], False, [])
    write_json(path, merged)
    path.with_suffix(".md").write_text(markdown_report(merged))
    return path


def main():
    args = parse_args()
    if args.merge:
        print(f"wrote {merge(args.merge)}")
        return
    device = jax.devices()[0]
    platform, sections = device.platform, tuple(args.sections)
    plan = select(make_plan(platform, args.quick), args.sizes, args.precisions)
    subset = ([] if set(sections) == set(SECTIONS) else ["-".join(sections)]) + [
        "-".join(chosen) for chosen in (args.sizes, args.precisions) if chosen]
    peer = load_peer(args.peer)
    torch_device = peer.pick_device(platform) if peer is not None else None
    info = machine_info()
    default_label = device.device_kind if platform == "gpu" else f"CPU {info['cpu']} x{info['cpu_count']}"
    meta = {**info, "device_label": args.device_label or default_label,
            "peer": args.peer if peer is not None else None, "peak": device_peak(device.device_kind)
            if platform == "gpu" else None, "precisions": {p: PRECISIONS[p] for p in plan.precisions},
            "torch_device": str(torch_device) if torch_device is not None else None,
            "jax_compilation_cache_dir": getattr(jax.config, "jax_compilation_cache_dir", None)}
    payload = {"meta": meta, "plan": {**asdict(plan), "train_config": asdict(plan.train_config)}}
    path = output_path(platform, args.quick, subset)

    def save():
        payload["meta"]["load_average_1min_end"] = machine_info()["load_average_1min"]
        write_json(path, payload)
        path.with_suffix(".md").write_text(markdown_report(payload))

    run_section(payload, "ceilings", lambda: measure_ceilings(plan, peer, torch_device), save)
    print("ceilings (GFLOP/s, GB/s):", {k: round(v / 1e9, 1) for k, v in payload.get("ceilings", {}).items()},
          flush=True)
    if "langevin" in sections:
        run_section(payload, "langevin", lambda: langevin_section(plan, peer, torch_device, payload, save), save)
    if "cost" in sections:
        first_cases = {case.size: case for case in reversed(plan.langevin)}
        run_section(payload, "cost", lambda: [cost_check(c.size, c.batch, p) for c in first_cases.values()
                                              for p in plan.precisions], save)
    if "train" in sections:
        run_section(payload, "train",
                    lambda: train_rows(plan, peer, torch_device, payload.get("ceilings", {}), meta["peak"]), save)
        print_rows("train", payload.get("train", []))
    if "generation" in sections:
        run_section(payload, "generation", lambda: generation_row(plan), save)
        if "generation" in payload:
            print(f"generation {payload['generation']['us_per_jet_at_200_steps']:.1f} us/jet at 200 steps")
    print("section seconds:", {k: round(v, 1) for k, v in payload["section_seconds"].items()})
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
