"""Generation speed of the JetNet-style benchmark's models, us per jet at batch 10k, side by side in one run.

Models (architectures of a `jaxebm.experiments.jetnet_bench` preset, parameters freshly initialised:
speed does not depend on their values): ConVAE (prior -> decoder), ConVAE + NF (flow sample -> decoder),
NF only (flow sample), and the EBM (``generation.num_steps`` Langevin steps of the transformer energy from
noise). Each figure is the jitted sampler's output in the model's own space (GeV momenta for the ConVAE
family, standardised particle features for the EBM), synchronised; conversion to jets is not timed.

The EBM's chain is timed over ``--ebm-steps`` steps at the full batch and scaled to the preset's chain
length (the chain's cost is linear in its steps; the scale factor is reported). Paper-size EBM on a CPU:
not measured (one chain step of the 8 x 128 transformer at batch 10k is ~4 TFLOP, about a minute here).

Writes ``benchmarks/results/jetnet_generate.{json,md}`` with the machine (`benchmarks.common.machine_info`).

    python -m benchmarks.bench_jetnet_generate                    # CPU-preset sizes
    python -m benchmarks.bench_jetnet_generate --presets cpu paper
"""
from __future__ import annotations

import argparse
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import RESULTS_DIR, machine_info, markdown_table, time_alternating, timed_first_call, write_json
from jaxebm import experiments
from jaxebm.inference import generate
from jaxebm.models.jet_convae import ConVAE, MinMaxScaler
from jaxebm.models.flows import RealNVP, RealNVPConfig
from jaxebm.models.transformer import TransformerEnergy
from jaxebm.train.cd import make_noise_fn
from jaxebm.train.vae import make_convae_sampler, make_particle_flow_sampler

PAPER_US_PER_JET = {"convae_nf": (18.30, "NVIDIA T4, paper (seed 004)"), "mpgan": (35.7, "A100, quoted by seed 004")}


def _init(module, *example):
    return jax.jit(module.init)(jax.random.key(0), *example)


def samplers(config, batch_size: int, ebm_steps: int) -> tuple[dict, float]:
    """No-argument callables generating ``batch_size`` jets per model; the EBM's time scale factor."""
    scaler = MinMaxScaler(np.full(3, -500.0), np.full(3, 500.0))
    num_particles = config.data.num_particles
    runs = {}
    gen_vae = ConVAE(config.convae_gen.model)
    gen_params = _init(gen_vae, jnp.zeros((1, 3, num_particles)), jax.random.key(1))
    gen_sample = make_convae_sampler(gen_vae, scaler)
    runs["convae"] = lambda: gen_sample(jax.random.key(2), batch_size, gen_params)
    rec_vae = ConVAE(config.convae_rec.model)
    rec_params = _init(rec_vae, jnp.zeros((1, 3, num_particles)), jax.random.key(1))
    latent_flow = RealNVP(RealNVPConfig(config.convae_rec.model.latent_dim, config.latent_flow.num_couplings,
                                        config.latent_flow.hidden_sizes))
    latent_params = _init(latent_flow, jnp.zeros((1, config.convae_rec.model.latent_dim)))
    nf_sample = make_convae_sampler(rec_vae, scaler, latent_flow)
    runs["convae_nf"] = lambda: nf_sample(jax.random.key(3), batch_size, rec_params, latent_params)
    particle_flow = RealNVP(RealNVPConfig(3 * num_particles, config.particle_flow.num_couplings,
                                          config.particle_flow.hidden_sizes))
    particle_params = _init(particle_flow, jnp.zeros((1, 3 * num_particles)))
    flow_sample = make_particle_flow_sampler(particle_flow, scaler)
    runs["nf"] = lambda: flow_sample(jax.random.key(4), batch_size, particle_params)
    scale = 0.0
    if ebm_steps > 0:
        model = TransformerEnergy(config.ebm)
        ebm_params = _init(model, jnp.zeros((1, num_particles, 3)), jnp.ones((1, num_particles), bool))
        noise_fn = make_noise_fn(np.zeros(3), np.ones(3), num_particles,
                                 multiplicity_probs=np.eye(num_particles + 1)[num_particles])
        short = dataclasses.replace(config.generation, num_steps=min(ebm_steps, config.generation.num_steps),
                                    batch_size=batch_size)
        scale = config.generation.num_steps / short.num_steps
        runs["ebm"] = functools.partial(generate, jax.random.key(5), model, ebm_params, noise_fn, short, batch_size,
                                        progress=False)
    return runs, scale


def measure(preset: str, batch_size: int, repeats: int, ebm_steps: int) -> list[dict]:
    config = experiments.load("jetnet_bench", preset)
    runs, scale = samplers(config, batch_size, ebm_steps)
    first = {name: timed_first_call(run)[0] for name, run in runs.items()}
    timed = time_alternating(runs, repeats)
    rows = []
    for name in runs:
        factor = scale if name == "ebm" else 1.0
        rows.append({"preset": preset, "model": name, "batch_size": batch_size,
                     "us_per_jet": timed[name]["median_s"] * factor / batch_size * 1e6,
                     "timed_seconds": timed[name]["times_s"], "scaled_by": factor,
                     "first_call_s": first[name]["first_call_s"],
                     "compiles_while_timed": timed[name]["compiles_while_timed"]})
        print(preset, name, f"{rows[-1]['us_per_jet']:.1f} us/jet", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu"])
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ebm-steps", type=int, default=5, help="EBM chain steps timed (0: skip the EBM)")
    args = parser.parse_args(argv)
    rows = []
    for preset in args.presets:
        rows += measure(preset, args.batch_size, args.repeats, args.ebm_steps if preset != "paper" else 0)
    machine = machine_info()
    write_json(RESULTS_DIR / "jetnet_generate.json", {"machine": machine, "rows": rows,
                                                      "paper_us_per_jet": PAPER_US_PER_JET})
    table = markdown_table(["preset", "model", "us/jet (batch %d)" % args.batch_size, "EBM scale", "first call s"],
                           [[r["preset"], r["model"], r["us_per_jet"], r["scaled_by"], r["first_call_s"]]
                            for r in rows])
    lines = ["# JetNet-style benchmark: generation speed", "",
             f"Machine: {machine['cpu']} ({machine['cpu_count']} cores, load {machine['load_average_1min']}), "
             f"jax {machine['versions']['jax']} on {machine['jax_platform']}; {machine['date']}.", "",
             *table, "",
             "Paper: ConVAE+NF 18.30 ± 0.04 us/jet on an NVIDIA T4; MPGAN 35.7 us/jet (A100). EBM: the chain timed "
             f"over {args.ebm_steps} steps and scaled to the preset's chain length ('EBM scale'). Paper-size EBM on "
             "CPU not measured. No GPU was lent to this task.", ""]
    temporary = RESULTS_DIR / "jetnet_generate.md.tmp"
    temporary.write_text("\n".join(lines))
    temporary.replace(RESULTS_DIR / "jetnet_generate.md")


if __name__ == "__main__":
    main()
