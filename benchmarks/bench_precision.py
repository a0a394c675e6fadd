"""float32 against the bfloat16 compute policy, side by side in one run (issue 25).

    python -m benchmarks.bench_precision [--quick] [--repeats R] [--device-label TEXT]

Times, at the paper size (8 x 128, N = 40, batch 128; tiny sizes with ``--quick``), one Langevin step
(energy + input gradient + update, a scan of ``steps`` steps per call) and one full CD iteration
(`jaxebm.train.cd.make_cd_step` at the paper preset, K = 24), each under
``TransformerConfig(compute_dtype="float32")`` and ``"bfloat16"`` (same parameters), the two
alternating call by call; the Langevin step also in the PyTorch peer (`benchmarks.torch_peer`, the
paper code's eager style) when torch imports. Achieved GFLOP/s (analytic matrix-product FLOPs,
`benchmarks.ebm_costs`) are set against the machine's f32 and bf16-operand/f32-result product rates
measured in the same run at the model's largest product shape. The load average is sampled before
and after every timed block: on a shared machine the absolute times drift, the interleaved ratio
much less. XLA's cost analysis of each step program and the count of its dot products by operand and
result dtype are recorded. Then the NAE iteration and the ConVAE + NF generation under both policies (`benchmarks.precision_models`).
Writes ``benchmarks/results/precision_<platform>[_quick].{json,md}`` (``--out-dir`` to change the folder).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import statistics
import subprocess
from collections import Counter
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp

from benchmarks import ebm_costs, precision_models
from benchmarks.common import RESULTS_DIR, machine_info, markdown_table, time_alternating, write_json
from benchmarks.ebm_plan import CHAIN, NOISE_MEAN, NOISE_STD, SIZES, N
from benchmarks.ebm_runners import init_params, jet_batch, key_stream
from jaxebm.models.common import energy_fn
from jaxebm.models.transformer import TransformerEnergy
from jaxebm.sampling import langevin
from jaxebm.train.cd import CDConfig, make_cd_step, make_noise_fn
from jaxebm.train.state import create_train_state

POLICIES = {"f32": "float32", "bf16": "bfloat16"}
_DOT = re.compile(r"dot_general.*: \(tensor<(?:[\d?x]*x)?(\w+)>, tensor<(?:[\d?x]*x)?(\w+)>\) -> "
                  r"tensor<(?:[\d?x]*x)?(\w+)>")


@dataclass(frozen=True)
class Setup:
    """What one run measures: model size, chains, Langevin steps per timed call, CD preset, repeats."""

    size: str
    batch: int
    langevin_steps_per_call: int
    cd: CDConfig
    repeats: int
    cd_repeats: int
    matmul_shape: tuple[int, int, int]


def make_setup(quick: bool, repeats: int | None) -> Setup:
    """Paper size (B = 128, K = 24) or, with ``quick``, the tiny model for a seconds-long check."""
    if quick:
        return Setup("tiny", 16, 2, CDConfig(num_langevin_steps=2, buffer_size=64, batch_size=16), repeats or 1,
                     repeats or 1, (256, 32, 64))
    config = SIZES["paper"]
    return Setup("paper", 128, 2, CDConfig(), repeats or 5, repeats or 3, (128 * N, config.d_model, config.ff_dim))


def dot_signatures(hlo_text: str) -> dict[str, int]:
    """Count of ``dot_general`` ops in StableHLO text by ``"lhs,rhs->out"`` element types, e.g. ``"bf16,bf16->f32"``."""
    return dict(Counter(f"{a},{b}->{c}" for a, b, c in _DOT.findall(hlo_text)))


def load_average() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def matmul_rates(shape: tuple[int, int, int], repeats: int) -> dict:
    """Median FLOP/s of a jitted ``(m x k) @ (k x n)`` product: float32, and bf16 operands with float32
    accumulation and result (``preferred_element_type``), alternating."""
    m, k, n = shape
    a, b = jax.random.normal(jax.random.key(3), (m, k)), jax.random.normal(jax.random.key(4), (k, n))
    a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    f32 = jax.jit(jnp.dot)
    bf16 = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    runs = {"f32": lambda: f32(a, b), "bf16": lambda: bf16(a16, b16)}
    for run in runs.values():
        run().block_until_ready()
    timings = time_alternating(runs, 5 * repeats, warmup=2)
    return {f"{name}_gflops_per_s": 2 * m * k * n / t["median_s"] / 1e9 for name, t in timings.items()}


def policy_models(size: str) -> dict[str, TransformerEnergy]:
    """The model under each policy (same architecture, so the same parameters fit both)."""
    return {name: TransformerEnergy(replace(SIZES[size], compute_dtype=dtype)) for name, dtype in POLICIES.items()}


def program_facts(jitted, *args) -> dict:
    """Dot signatures of the lowered program (lowering only: no extra compilation)."""
    return {"dots": dot_signatures(jitted.lower(*args).as_text())}


def summarise(timings: dict, loads: list[float], per_call_units: int, flops_per_call: float, rates: dict) -> dict:
    """``{f32_ms, bf16_ms, speedup, ...}`` per unit (step or iteration) from alternating timings."""
    out = {"load_average_1min": loads}
    for name, timing in timings.items():
        seconds = timing["median_s"] / per_call_units
        out[f"{name}_ms"] = 1e3 * seconds
        out[f"{name}_times_ms"] = [1e3 * t / per_call_units for t in timing["times_s"]]
        out[f"{name}_gflops_per_s"] = flops_per_call / per_call_units / seconds / 1e9
        rate = rates.get(f"{'f32' if name == 'paper_code' else name}_gflops_per_s")
        out[f"{name}_fraction_of_matmul"] = out[f"{name}_gflops_per_s"] / rate if rate else None
    out["bf16_speedup"] = out["f32_ms"] / out["bf16_ms"]
    return out


def torch_langevin_runner(setup: Setup, x0, mask):
    """(runner of the peer's eager chain, None) or (None, reason) when torch does not import."""
    try:
        from benchmarks import torch_peer
    except ImportError as error:
        return None, f"torch not importable here ({error}); install it with pip install -e '.[bench]'"
    device = torch_peer.pick_device(jax.devices()[0].platform)
    module = torch_peer.build_model(SIZES[setup.size], device)
    torch_peer.set_frozen(module, True)
    xt, mt = (torch_peer.torch.tensor(jax.device_get(a), device=device) for a in (x0, mask))
    steps = setup.langevin_steps_per_call
    return (lambda: torch_peer.langevin_chain(module, xt, mt, steps, CHAIN.step_size, CHAIN.noise_scale)), None


def langevin_block(setup: Setup, rates: dict) -> dict:
    """Per-step times of the ULA chain under both policies (and the torch peer), alternating."""
    models = policy_models(setup.size)
    x0, mask = jet_batch(setup.batch, seed=1)
    params = init_params(models["f32"], x0, mask)
    steps = setup.langevin_steps_per_call
    runs, facts = {}, {}
    for name, model in models.items():
        chain = jax.jit(lambda p, k, x, m, model=model: langevin.run_chain(
            k, x, energy_fn(model, p, m), CHAIN, steps)[0])
        step = jax.jit(lambda p, x, m, model=model: jax.value_and_grad(
            lambda x: energy_fn(model, p, m)(x).sum())(x))
        facts[name] = program_facts(step, params, x0, mask)
        next_key = key_stream(1)
        runs[name] = lambda chain=chain, next_key=next_key: chain(params, next_key(), x0, mask)
        runs[name]().block_until_ready()
    peer_run, reason = torch_langevin_runner(setup, x0, mask)
    syncs = {}
    if peer_run is not None:
        peer_run()
        runs["paper_code"], syncs["paper_code"] = peer_run, (lambda out: out)
    loads = [load_average()]
    timings = time_alternating(runs, setup.repeats, warmup=1, syncs=syncs)
    loads.append(load_average())
    flops = ebm_costs.langevin_step_flops(SIZES[setup.size]) * setup.batch * steps
    out = summarise(timings, loads, steps, flops, rates)
    if peer_run is None:
        out.update(paper_code_ms=None, paper_code_reason=reason)
    return {"size": setup.size, "batch": setup.batch, "steps_per_call": steps, **out, "programs": facts}


def cd_block(setup: Setup, rates: dict) -> dict:
    """Per-iteration times of the full jitted CD step under both policies, alternating."""
    models = policy_models(setup.size)
    noise_fn = make_noise_fn(NOISE_MEAN, NOISE_STD, N)
    x_pos, mask_pos = jet_batch(setup.cd.batch_size, seed=3)
    runs, finals = {}, {}
    for name, model in models.items():
        holder = [create_train_state(jax.random.key(0), model, setup.cd, x_pos, mask_pos, noise_fn), None]
        step = make_cd_step(model, setup.cd, noise_fn)

        def run(holder=holder, step=step):
            holder[:] = step(holder[0], x_pos, mask_pos)
            return holder

        jax.block_until_ready(run())
        runs[name], finals[name] = run, holder
    loads = [load_average()]
    timings = time_alternating(runs, setup.cd_repeats, warmup=0)
    loads.append(load_average())
    flops = ebm_costs.train_step_flops(SIZES[setup.size], setup.cd.batch_size, setup.cd.num_langevin_steps)
    out = summarise(timings, loads, 1, flops, rates)
    state_dtypes = {name: sorted({str(leaf.dtype) for leaf in jax.tree.leaves(
        (h[0].params, h[0].opt_state, h[0].ema_params, h[0].buffer)) if jnp.issubdtype(leaf.dtype, jnp.floating)})
        for name, h in finals.items()}
    return {"size": setup.size, "batch": setup.cd.batch_size, "langevin_steps": setup.cd.num_langevin_steps, **out,
            "state_float_dtypes": state_dtypes, "finite": {n: bool(h[1]["is_finite"]) for n, h in finals.items()}}


def markdown(payload: dict) -> str:
    """The report: machine, product ceilings, and the f32 / bf16 / peer table."""
    meta, rates = payload["meta"], payload["matmul"]
    rows = []
    for block in ("langevin_step", "cd_iteration"):
        r = payload[block]
        for name in ("f32", "bf16", "paper_code"):
            if r.get(f"{name}_ms") is not None:
                rows.append([block, name, r[f"{name}_ms"], r[f"{name}_gflops_per_s"],
                             r[f"{name}_fraction_of_matmul"], r["f32_ms"] / r[f"{name}_ms"],
                             " / ".join(map(str, r["load_average_1min"]))])
    lines = [f"# f32 vs bf16 compute policy ({meta['device_label']})", "",
             f"{meta['date']}; jax {meta['versions']['jax']}; size {payload['langevin_step']['size']}, batch "
             f"{payload['langevin_step']['batch']}; load average (1 min) at the start {meta['load_average_1min']}, "
             f"at the end {meta['load_average_1min_end']} on {meta['cpu_count']} cores"
             + (" -- a loaded machine: absolute times are inflated, the interleaved ratios less so." if
                meta["load_average_1min"] > meta["cpu_count"] else "."), "",
             f"Product ceilings at {' x '.join(map(str, payload['setup']['matmul_shape']))} (m x k x n): f32 "
             f"{rates['f32_gflops_per_s']:.1f} GFLOP/s, bf16 operands / f32 result {rates['bf16_gflops_per_s']:.1f}.",
             "", *markdown_table(["block", "runner", "ms", "GFLOP/s", "of matmul", "f32 / this", "load before / after"],
                                 rows), ""]
    if payload["langevin_step"].get("paper_code_reason"):
        lines += [f"Paper code (torch peer): {payload['langevin_step']['paper_code_reason']}", ""]
    model_rows = [[block, name, payload[block][f"{name}_ms"], payload[block]["f32_ms"]
                   / payload[block][f"{name}_ms"], " / ".join(map(str, payload[block]["load_average_1min"]))]
                  for block in ("nae_iteration", "convae_nf_generation") if block in payload for name in ("f32", "bf16")]
    if model_rows:
        lines += ["Other networks (convolutions float32 under both policies; ConVAE + NF: ms per "
                  f"{payload['convae_nf_generation']['num_jets']} jets):", "",
                  *markdown_table(["block", "runner", "ms", "f32 / this", "load before / after"], model_rows), ""]
    if meta.get("uptime"):
        lines += [f"uptime at the end: `{meta['uptime']}`", ""]
    dots = {name: facts["dots"] for name, facts in payload["langevin_step"]["programs"].items()}
    lines += [f"Dot products of the energy + input-gradient program by operand,result dtypes: {dots}", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 repeat: checks the path in seconds")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per runner (default 5; CD 3)")
    parser.add_argument("--device-label", default=None, help="free text naming the machine in the report")
    parser.add_argument("--out-dir", type=pathlib.Path, default=RESULTS_DIR, help="where the JSON and markdown go")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Measure, write the JSON and markdown, return the payload."""
    args = parse_args(argv)
    setup = make_setup(args.quick, args.repeats)
    info = machine_info()
    meta = {**info, "device_label": args.device_label or f"{info['device_kind']} / {info['cpu']} x{info['cpu_count']}"}
    payload = {"meta": meta, "setup": {**{k: v for k, v in setup.__dict__.items() if k != "cd"},
                                       "cd": setup.cd.__dict__}, "policies": POLICIES}
    path = args.out_dir / f"precision_{info['jax_platform']}{'_quick' if args.quick else ''}.json"
    payload["matmul"] = matmul_rates(setup.matmul_shape, setup.repeats)
    print("matmul GFLOP/s:", {k: round(v, 1) for k, v in payload["matmul"].items()}, flush=True)
    payload["langevin_step"] = langevin_block(setup, payload["matmul"])
    print("langevin_step ms:", {k: payload["langevin_step"].get(f"{k}_ms") for k in ("f32", "bf16", "paper_code")},
          flush=True)
    write_json(path, payload)  # a run cut short keeps the Langevin block
    payload["cd_iteration"] = cd_block(setup, payload["matmul"])
    print("cd_iteration ms:", {k: payload["cd_iteration"][f"{k}_ms"] for k in ("f32", "bf16")}, flush=True)
    write_json(path, payload)
    payload["nae_iteration"] = precision_models.nae_iteration_block(setup.cd_repeats, load_average, quick=args.quick)
    payload["convae_nf_generation"] = precision_models.convae_nf_generation_block(setup.cd_repeats, load_average,
                                                                                  quick=args.quick)
    print("nae / convae_nf ms:", {b: {k: payload[b][f"{k}_ms"] for k in ("f32", "bf16")}
                                  for b in ("nae_iteration", "convae_nf_generation")}, flush=True)
    meta["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    meta["load_average_1min_end"] = load_average()
    meta["load_average_1min_median"] = statistics.median(
        payload["langevin_step"]["load_average_1min"] + payload["cd_iteration"]["load_average_1min"])
    write_json(path, payload)
    path.with_suffix(".md").write_text(markdown(payload))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return payload


if __name__ == "__main__":
    main()
