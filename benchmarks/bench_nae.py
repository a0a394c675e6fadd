"""One NAE iteration (latent chain, decode, data chain, loss, update, buffer write: one jitted program)
at the paper's batch and chain lengths (Table 1: batch 128, 30 + 30 steps, 40 x 40 images, D_z = 3).

Reports seconds per iteration, image-steps per second (batch x (latent + data) chain steps per
second), the compiling call's time, host / device peak memory and XLA's memory analysis, on the
machine it runs on; written to ``benchmarks/results/nae_<platform>.{json,md}``.

    python -m benchmarks.bench_nae                    # paper sizes, 3 timed iterations
    python -m benchmarks.bench_nae --batch-size 32 --chain-steps 10 --repeats 2     # quick look
"""
from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (RESULTS_DIR, device_memory_stats, executable_stats, host_peak_memory_mb,
                               machine_info, markdown_table, time_alternating, timed_first_call, write_json)
from jaxebm.models.nae_autoencoder import ConvAE, ConvAEConfig
from jaxebm.train import nae


def measure(batch_size: int, chain_steps: int, repeats: int) -> dict:
    """Time one NAE iteration at ``batch_size`` with ``chain_steps`` latent and data steps each."""
    model = ConvAE(ConvAEConfig())
    config = dataclasses.replace(nae.NAEConfig(), batch_size=batch_size, z_num_steps=chain_steps,
                                 x_num_steps=chain_steps)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(0.0, 0.05, (batch_size, 40, 40)).astype(np.float32))
    state = nae.start_nae_phase(nae.create_state(jax.random.key(0), model, config, images[:2]), config)
    step = nae.make_nae_step(model, config)
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], images)
        return metrics

    first, _ = timed_first_call(run)
    timed = time_alternating({"nae_iteration": run}, repeats, warmup=1)["nae_iteration"]
    compiled = step.lower(holder["state"], images).compile()
    image_steps = batch_size * 2 * chain_steps
    return {"batch_size": batch_size, "chain_steps": chain_steps, "seconds_per_iteration": timed["median_s"],
            "times_s": timed["times_s"], "image_steps_per_s": image_steps / timed["median_s"],
            "compiles_while_timed": timed["compiles_while_timed"], **first,
            "host_peak_mb": host_peak_memory_mb(), "device_memory": device_memory_stats(),
            **executable_stats(compiled)}


def write(result: dict, info: dict) -> None:
    name = f"nae_{info['jax_platform']}"
    write_json(RESULTS_DIR / f"{name}.json", {"meta": info, "result": result})
    rows = [[result["batch_size"], result["chain_steps"], result["seconds_per_iteration"], result["image_steps_per_s"],
             result["first_call_s"], result["compile_s"], result["host_peak_mb"],
             (result["device_memory"] or {}).get("peak_bytes_in_use_mb"), result["temp_mb"]]]
    lines = [f"# NAE iteration benchmark: {info['cpu']} x{info['cpu_count']} ({info['device_kind']}) "
             "(`python -m benchmarks.bench_nae`)", "",
             f"{info['date']}; {info['platform']}; jax {info['versions']['jax']}, flax {info['versions']['flax']}; "
             f"XLA_FLAGS '{info['xla_flags']}'; 1-min load average {info['load_average_1min']} at start "
             f"(a shared machine: other jobs ran alongside).", "",
             "One iteration = latent chain on the sphere (tangent-space MALA), decode, data-space MALA (reflecting "
             "walls, annealed noise), loss, Adam update, spectral-norm power iteration and buffer write, one jitted "
             "program. Median of the timed calls after the compiling call and one warm-up.", "",
             *markdown_table(["batch", "steps (latent = data)", "s / iteration", "image-steps / s", "first call s",
                              "XLA compile s", "host peak MB", "device peak MB", "XLA temp MB"], rows), "",
             f"The paper trained 40k NAE iterations; at this speed that is "
             f"{40_000 * result['seconds_per_iteration'] / 3600:.1f} hours of NAE phase on this machine "
             "(the paper: under 15 hours in total on its GPU)."]
    (RESULTS_DIR / f"{name}.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--chain-steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    info = machine_info(packages=("jax", "jaxlib", "flax", "optax", "numpy"))
    result = measure(args.batch_size, args.chain_steps, args.repeats)
    info["load_average_1min_end"] = machine_info(packages=())["load_average_1min"]
    write(result, info)
    print({k: result[k] for k in ("seconds_per_iteration", "image_steps_per_s", "first_call_s", "host_peak_mb")})


if __name__ == "__main__":
    main()
