"""The NAE iteration and the ConVAE + NF generation in float32 and under the bfloat16 policy, side by side
(issue 25, item 3; rows of `benchmarks.bench_precision`).

NAE: the paper's conv autoencoder (`ConvAEConfig()`, 40 x 40 images) and `NAEConfig()` at batch 128, one
NAE-phase iteration (latent and data chains, loss, update) per call. ConVAE + NF: the paper-size
reconstruction ConVAE (Table 5) decoding the paper-size latent flow's samples (Table 6), 4096 jets per call
(`jaxebm.train.vae.make_convae_sampler`); parameters freshly initialised (speed does not depend on them).
Convolutions stay float32 under both policies (`jaxebm.models.precision`); the policy covers the Dense
layers and the flow's MLPs. ``quick``: tiny networks, short chains and 256 jets (checks the path in seconds).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import time_alternating
from jaxebm.models.nae_autoencoder import ConvAE, ConvAEConfig
from jaxebm.models.jet_convae import RECONSTRUCTION, ConVAE, ConVAEConfig, MinMaxScaler
from jaxebm.models.flows import LATENT_FLOW, RealNVP, RealNVPConfig
from jaxebm.train import nae
from jaxebm.train.vae import make_convae_sampler

__all__ = ["convae_nf_generation_block", "nae_iteration_block"]

POLICIES = {"f32": "float32", "bf16": "bfloat16"}


def _timed(runs: dict, repeats: int, loads) -> dict:
    """``{f32_ms, bf16_ms, bf16_speedup, *_times_ms, load_average_1min}`` of alternating runners (ms per call)."""
    before = loads()
    timings = time_alternating(runs, repeats, warmup=1)
    out = {"load_average_1min": [before, loads()]}
    for name, timing in timings.items():
        out[f"{name}_ms"] = 1e3 * timing["median_s"]
        out[f"{name}_times_ms"] = [1e3 * t for t in timing["times_s"]]
    out["bf16_speedup"] = out["f32_ms"] / out["bf16_ms"]
    return out


def nae_iteration_block(repeats: int, loads, *, quick: bool = False, chain_steps: int | None = None) -> dict:
    """ms per NAE-phase iteration of the paper's conv AE (batch 128) under each policy (same starting state);
    ``chain_steps``: latent and data chain steps each (None: `NAEConfig`'s; quick: 2)."""
    batch_size = 16 if quick else 128
    chain_steps = 2 if quick else chain_steps
    config = dataclasses.replace(nae.NAEConfig(), batch_size=batch_size,
                                 **({} if chain_steps is None else dict(z_num_steps=chain_steps,
                                                                        x_num_steps=chain_steps)))
    ae_config = ConvAEConfig(channels=2, hidden_dim=8) if quick else ConvAEConfig()
    images = jnp.asarray(np.random.default_rng(0).uniform(0.0, 0.05, (batch_size, 40, 40)).astype(np.float32))
    runs = {}
    for name, dtype in POLICIES.items():
        model = ConvAE(dataclasses.replace(ae_config, compute_dtype=dtype))
        holder = [nae.start_nae_phase(nae.create_state(jax.random.key(0), model, config, images[:2]), config)]
        step = nae.make_nae_step(model, config)

        def run(holder=holder, step=step):
            holder[0], metrics = step(holder[0], images)
            return metrics

        jax.block_until_ready(run())
        runs[name] = run
    return {"batch": batch_size, "z_num_steps": config.z_num_steps, "x_num_steps": config.x_num_steps,
            **_timed(runs, repeats, loads)}


def convae_nf_generation_block(repeats: int, loads, *, quick: bool = False) -> dict:
    """us per generated jet of the paper-size ConVAE + NF (latent flow -> decoder, 4096 jets per call) under
    each policy."""
    scaler = MinMaxScaler(np.full(3, -500.0), np.full(3, 500.0))
    vae_config, flow_config, num_jets = RECONSTRUCTION.model, LATENT_FLOW.config, 4096
    if quick:
        vae_config = ConVAEConfig(latent_dim=4, num_filters=4, kernel_size=2, num_linear=16, num_conv_layers=2)
        flow_config, num_jets = RealNVPConfig(4, 2, (8,)), 256
    runs = {}
    for name, dtype in POLICIES.items():
        vae = ConVAE(dataclasses.replace(vae_config, compute_dtype=dtype))
        flow = RealNVP(dataclasses.replace(flow_config, compute_dtype=dtype))
        vae_params = jax.jit(vae.init)(jax.random.key(0), jnp.zeros((1, 3, vae.config.num_particles)),
                                       jax.random.key(1))
        flow_params = jax.jit(flow.init)(jax.random.key(0), jnp.zeros((1, flow.config.num_features)))
        sample = make_convae_sampler(vae, scaler, flow)
        runs[name] = (lambda sample=sample, p=vae_params, q=flow_params:
                      sample(jax.random.key(3), num_jets, p, q))
        jax.block_until_ready(runs[name]())
    out = _timed(runs, repeats, loads)
    out.update({f"{name}_us_per_jet": 1e3 * out[f"{name}_ms"] / num_jets for name in POLICIES})
    return {"num_jets": num_jets, **out}


def main(argv=None) -> dict:
    """``python -m benchmarks.precision_models [--quick] [--repeats R]``: these two rows alone, written to
    ``benchmarks/results/precision_models_<platform>[_quick].{json,md}`` with the machine and ``uptime``."""
    import argparse
    import os
    import pathlib
    import subprocess

    from benchmarks.common import RESULTS_DIR, machine_info, markdown_table, write_json

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", type=pathlib.Path, default=RESULTS_DIR)
    parser.add_argument("--nae-chain-steps", type=int, default=None, help="NAE chain steps each (default: config)")
    args = parser.parse_args(argv)
    loads = lambda: round(os.getloadavg()[0], 2)  # noqa: E731
    def uptime() -> str:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    payload = {"meta": machine_info() | {"uptime_start": uptime()}}
    payload["convae_nf_generation"] = convae_nf_generation_block(args.repeats, loads, quick=args.quick)
    payload["nae_iteration"] = nae_iteration_block(args.repeats, loads, quick=args.quick,
                                                   chain_steps=args.nae_chain_steps)
    payload["meta"]["uptime_end"] = uptime()
    stem = args.out_dir / f"precision_models_{payload['meta']['jax_platform']}{'_quick' if args.quick else ''}"
    write_json(stem.with_suffix(".json"), payload)
    rows = [[block, name, payload[block][f"{name}_ms"], payload[block]["f32_ms"] / payload[block][f"{name}_ms"],
             " / ".join(map(str, payload[block]["load_average_1min"]))]
            for block in ("nae_iteration", "convae_nf_generation") for name in POLICIES]
    meta = payload["meta"]
    text = "\n".join(["# NAE iteration and ConVAE + NF generation, f32 against the bf16 policy", "",
                      f"{meta['date']}, {meta['cpu']} ({meta['cpu_count']} cores), jax {meta['versions']['jax']}; "
                      f"uptime at the start `{meta['uptime_start']}`, at the end `{meta['uptime_end']}`. "
                      f"ConVAE + NF: ms per {payload['convae_nf_generation']['num_jets']} jets; NAE: batch "
                      f"{payload['nae_iteration']['batch']}, {payload['nae_iteration']['z_num_steps']} + "
                      f"{payload['nae_iteration']['x_num_steps']} chain steps.", "",
                      *markdown_table(["block", "runner", "ms", "f32 / this", "load before / after"], rows), ""])
    stem.with_suffix(".md").write_text(text)
    print(text)
    return payload


if __name__ == "__main__":
    main()
