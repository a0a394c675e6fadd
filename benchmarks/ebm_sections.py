"""The EBM benchmark suite's sections: Langevin chains, XLA's cost analysis, the CD iteration and generation."""
from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import ebm_costs
from benchmarks.common import executable_stats, time_alternating, timed_first_call
from benchmarks.ebm_plan import (BYTES_PER_ELEMENT, CHAIN, GENERATION_STEPS, NOISE_MEAN, NOISE_STD, SIZES,
                                 TORCH_PRECISIONS, LangevinCase, N, Plan)
from benchmarks.ebm_runners import (cache_size, error_string, init_params, jax_energy, jax_langevin, jet_batch,
                                    key_stream, memory_fields, precision_context, rate_fields, time_against_peer,
                                    torch_inputs)
from jaxebm.inference import GenerationConfig, generate
from jaxebm.models.common import energy_fn
from jaxebm.models.transformer import TransformerEnergy
from jaxebm.sampling import proposal
from jaxebm.train.cd import make_cd_step, make_noise_fn
from jaxebm.train.state import create_train_state


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
