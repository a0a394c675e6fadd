"""Sampler throughput: our batched MALA (and ULA) against `blackjax.mala` + `vmap` on the same energy.

Energies: (a) an anisotropic Gaussian in 120 dimensions; (b) a tiny masked set transformer over
40 constituents x 3 features (2 layers of width 64, 4 heads, sum pooling; padded slots masked).
For each batch size every sampler runs the same number of steps inside one jitted `lax.scan`;
compilation and a warm-up call are excluded, the figure is the median of `--repeats` timed calls
(`block_until_ready`), the samplers' calls alternating. Reports steps/s and microseconds per chain-step, and ours/blackjax time ratios.

Writes `benchmarks/results/sampling.json` and `sampling.md`.

    python -m benchmarks.bench_sampling            # ~3-4 minutes on 2 CPU cores
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import time

import blackjax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxebm.sampling import LangevinConfig, langevin, mala

RESULTS_DIR = pathlib.Path(__file__).parent / "results"
STEP_SIZE = 1e-3
NUM_CONSTITUENTS, NUM_FEATURES = 40, 3


class TinySetTransformer(nn.Module):
    """Masked set transformer energy: `(B, N, 3)`, mask `(B, N)` -> `(B,)`."""

    width: int = 64
    num_layers: int = 2
    num_heads: int = 4

    @nn.compact
    def __call__(self, x, mask):
        h = nn.Dense(self.width)(x)
        attention_mask = nn.make_attention_mask(mask, mask)
        for _ in range(self.num_layers):
            h = h + nn.MultiHeadDotProductAttention(self.num_heads)(h, mask=attention_mask)
            h = h + nn.Dense(self.width)(nn.relu(nn.Dense(2 * self.width)(h)))
        pooled = jnp.sum(h * mask[..., None], axis=1)
        return nn.Dense(1)(nn.swish(nn.Dense(self.width)(pooled)))[:, 0]


def gaussian_problem(batch_size):
    """(energy_fn(x, aux), x0, aux): anisotropic Gaussian in 120-D; aux unused."""
    precision = jnp.logspace(-1, 1, 120)
    energy_fn = lambda x, aux: 0.5 * jnp.sum(precision * jnp.square(x), axis=-1)
    x0 = jax.random.normal(jax.random.key(0), (batch_size, 120))
    return energy_fn, x0, jnp.zeros((batch_size,))


def transformer_problem(batch_size):
    """(energy_fn(x, mask), x0, mask): random-init transformer, 10-40 real constituents per jet."""
    model = TinySetTransformer()
    key_x, key_n, key_p = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.normal(key_x, (batch_size, NUM_CONSTITUENTS, NUM_FEATURES))
    counts = jax.random.randint(key_n, (batch_size, 1), 10, NUM_CONSTITUENTS + 1)
    mask = jnp.arange(NUM_CONSTITUENTS) < counts
    params = model.init(key_p, x0[:2], mask[:2])
    return (lambda x, m: model.apply(params, x, m)), x0, mask


def ours(kernel, *, frozen=False):
    def run(energy_fn, key, x0, aux, num_steps):
        frozen_mask = ~aux if frozen else None
        x, _ = kernel.run_chain(key, x0, lambda x: energy_fn(x, aux), LangevinConfig(STEP_SIZE),
                                num_steps, frozen_mask=frozen_mask)
        return x
    return run


def blackjax_mala(energy_fn, key, x0, aux, num_steps):
    """`blackjax.mala` per chain under `vmap` (tied noise, the same proposal as ours)."""
    def chain_step(key, state, aux_one):
        logdensity_fn = lambda x: -energy_fn(x[None], aux_one[None])[0]
        return blackjax.mala(logdensity_fn, STEP_SIZE).step(key, state)[0]

    def init(x, aux_one):
        return blackjax.mala.init(x, lambda y: -energy_fn(y[None], aux_one[None])[0])

    def one_step(states, key):
        keys = jax.random.split(key, x0.shape[0])
        return jax.vmap(chain_step)(keys, states, aux), None

    states, _ = jax.lax.scan(one_step, jax.vmap(init)(x0, aux), jax.random.split(key, num_steps))
    return states.position


SAMPLERS = {
    "ours_mala": ours(mala),
    "blackjax_mala": blackjax_mala,
    "ours_mala_frozen_padding": ours(mala, frozen=True),
    "ours_ula": ours(langevin),
}


def time_samplers(samplers, energy_fn, x0, aux, num_steps, repeats):
    """Median seconds of one jitted call of `num_steps` steps for each sampler (compile + warm-up
    excluded). The timed calls alternate between samplers, so load from other processes on the
    shared machine hits all of them alike."""
    fns = {}
    for name in samplers:
        fn = jax.jit(lambda key, x, a, sampler=SAMPLERS[name]: sampler(energy_fn, key, x, a, num_steps))
        fn(jax.random.key(0), x0, aux).block_until_ready()
        fns[name] = fn
    times = {name: [] for name in samplers}
    for rep in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(jax.random.key(rep + 1), x0, aux).block_until_ready()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run_cases(cases, repeats):
    """cases: (energy name, problem_fn, batch, num_steps, sampler names). Returns result rows."""
    rows = []
    for energy_name, problem_fn, batch_size, num_steps, sampler_names in cases:
        energy_fn, x0, aux = problem_fn(batch_size)
        for name, seconds in time_samplers(sampler_names, energy_fn, x0, aux, num_steps, repeats).items():
            rows.append({"energy": energy_name, "sampler": name, "batch_size": batch_size,
                         "num_steps": num_steps, "seconds": seconds, "steps_per_s": num_steps / seconds,
                         "us_per_chain_step": 1e6 * seconds / (num_steps * batch_size)})
            print(f"{energy_name:12s} {name:26s} B={batch_size:6d} {rows[-1]['us_per_chain_step']:9.3f} "
                  f"us/chain-step {rows[-1]['steps_per_s']:9.1f} steps/s", flush=True)
    return rows


def ratios(rows):
    """ours / blackjax time ratio per (energy, batch, our sampler)."""
    reference = {(r["energy"], r["batch_size"]): r["seconds"]
                 for r in rows if r["sampler"] == "blackjax_mala"}
    return [{"energy": r["energy"], "batch_size": r["batch_size"], "sampler": r["sampler"],
             "time_ratio_vs_blackjax_mala": r["seconds"] / reference[(r["energy"], r["batch_size"])]}
            for r in rows if r["sampler"] != "blackjax_mala"]


def write_markdown(path, rows, ratio_rows, meta):
    ratio = {(r["energy"], r["batch_size"], r["sampler"]): r["time_ratio_vs_blackjax_mala"]
             for r in ratio_rows}
    lines = ["# Sampler throughput (`python -m benchmarks.bench_sampling`)", "",
             f"{meta['date']}, {meta['device']}, {meta['cpu_count']} CPU cores, jax {meta['jax']}, "
             f"blackjax {meta['blackjax']}; median of {meta['repeats']} jitted calls (alternating between "
             f"samplers), compile excluded; 1-min load average {meta['load_average_1min']} before/after "
             "(the machine is shared). "
             "Ratio = our time / blackjax.mala+vmap time on the same energy and steps "
             "(< 1: ours faster).", "",
             "| energy | sampler | batch | steps | us / chain-step | steps / s | ratio vs blackjax |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rel = ratio.get((r["energy"], r["batch_size"], r["sampler"]))
        lines.append(f"| {r['energy']} | {r['sampler']} | {r['batch_size']} | {r['num_steps']} | "
                     f"{r['us_per_chain_step']:.3f} | {r['steps_per_s']:.1f} | "
                     f"{'-' if rel is None else f'{rel:.2f}'} |")
    path.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    analytic = ["ours_mala", "blackjax_mala", "ours_ula"]
    transformer = ["ours_mala", "blackjax_mala", "ours_mala_frozen_padding", "ours_ula"]
    cases = ([("gaussian120", gaussian_problem, b, n, analytic)
              for b, n in [(128, 400), (1024, 200), (4096, 50), (16384, 20)]]
             + [("transformer", transformer_problem, b, n, transformer)
                for b, n in [(128, 20), (1024, 4), (4096, 2)]])
    load_before = os.getloadavg()[0]
    rows = run_cases(cases, args.repeats)
    meta = {"date": datetime.date.today().isoformat(), "device": str(jax.devices()[0].device_kind),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "blackjax": blackjax.__version__, "repeats": args.repeats, "step_size": STEP_SIZE}
    ratio_rows = ratios(rows)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "sampling.json").write_text(
        json.dumps({"meta": meta, "results": rows, "ratios": ratio_rows}, indent=2) + "\n")
    write_markdown(RESULTS_DIR / "sampling.md", rows, ratio_rows, meta)


if __name__ == "__main__":
    main()
