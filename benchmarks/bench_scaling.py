"""Weak scaling of the data-parallel CD step over 1, 2 and 4 forced host devices.

For each device count d a fresh interpreter with ``XLA_FLAGS=--xla_force_host_platform_device_count=d``
(the count is fixed when JAX starts) trains a small masked transformer (2 layers, width 32, 30
constituents, K = 8) with ``make_cd_step(..., mesh=make_mesh())``: 64 data jets and chains per
device (global batch 64 d, buffer 8x the global batch), so the work per device stays fixed. A run
without a mesh on one device is the reference. Timing follows ``benchmarks/common.py``: the
compiling call and two warm-up calls are excluded, the figure is 1 / the median time of the timed
calls, and the number of compilations while timed is recorded (0: no retracing). Weak-scaling
efficiency = it/s(d) / it/s(1 device, no mesh); 1.0 is perfect.

On CPU the forced devices are slices of the same few cores: with d devices on c cores each device
gets about c/d of them, so on a 2-core machine this measures the overhead of the sharded program
(collectives, partitioning) rather than any speed-up. Real devices (GPUs) are what it is for.

Writes ``benchmarks/results/scaling.json`` and ``scaling.md`` (``--out`` elsewhere).

    python -m benchmarks.bench_scaling            # ~5-10 minutes on 2 idle cores
    python -m benchmarks.bench_scaling --quick --out /tmp/scaling   # seconds: checks that it runs
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from benchmarks.common import RESULTS_DIR, machine_info, markdown_table, time_alternating, timed_first_call, write_json
from jaxebm import parallel
from jaxebm.models import TransformerConfig, TransformerEnergy
from jaxebm.train import CDConfig, create_train_state, make_cd_step, make_noise_fn

FULL = {"per_device_batch": 64, "num_constituents": 30, "num_layers": 2, "d_model": 32, "num_langevin_steps": 8,
        "repeats": 20, "device_counts": [1, 2, 4]}
QUICK = {"per_device_batch": 8, "num_constituents": 8, "num_layers": 1, "d_model": 16, "num_langevin_steps": 2,
         "repeats": 3, "device_counts": [1, 2]}


def measure(settings: dict, use_mesh: bool) -> dict:
    """Iterations/s of the CD step on all devices of this interpreter (worker side)."""
    num_devices = jax.device_count()
    batch, n = settings["per_device_batch"] * num_devices, settings["num_constituents"]
    model = TransformerEnergy(TransformerConfig(
        num_layers=settings["num_layers"], d_model=settings["d_model"], num_heads=4, ff_dim=2 * settings["d_model"],
        projector_sizes=(settings["d_model"],), dropout_rate=0.0))
    config = CDConfig(batch_size=batch, buffer_size=8 * batch, num_langevin_steps=settings["num_langevin_steps"])
    noise_fn = make_noise_fn((0.0, 0.0, 0.0), (1.0, 0.1, 0.2), n)
    rng = np.random.default_rng(0)
    x = rng.normal([1.0, 0.0, 0.0], [1.0, 0.1, 0.2], (batch, n, 3)).astype(np.float32)
    mask = np.ones((batch, n), bool)
    mesh = parallel.make_mesh() if use_mesh else None
    state = create_train_state(jax.random.key(0), model, config, x, mask, noise_fn)
    if mesh is not None:
        state, (x, mask) = parallel.shard_train_state(state, mesh), parallel.shard_batch((x, mask), mesh)
    step = make_cd_step(model, config, noise_fn, mesh=mesh)
    current = {"state": state}

    def run():
        current["state"], metrics = step(current["state"], x, mask)  # the step donates the old state
        return metrics

    first_call, _ = timed_first_call(run)
    # two warm-up calls, as on a one-device mesh a second compilation can follow (see jaxebm.parallel)
    timing = time_alternating({"cd": run}, settings["repeats"], warmup=2)["cd"]
    return {"num_devices": num_devices, "mesh": use_mesh, "global_batch": batch,
            "iterations_per_s": 1.0 / timing["median_s"], "jets_per_s": batch / timing["median_s"],
            "first_call_s": first_call["first_call_s"], "compiles_while_timed": timing["compiles_while_timed"]}


def run_worker(num_devices: int, settings: dict, use_mesh: bool) -> dict:
    """`measure` in a fresh interpreter with ``num_devices`` forced host devices."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={num_devices}"}
    command = [sys.executable, "-m", "benchmarks.bench_scaling", "--worker",
               json.dumps({"settings": settings, "use_mesh": use_mesh})]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                            cwd=pathlib.Path(__file__).parent.parent)
    if result.returncode:
        raise RuntimeError(f"worker with {num_devices} devices failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def add_efficiency(rows: list[dict]) -> list[dict]:
    """Each row with ``efficiency`` = its it/s over the single-device (no mesh) it/s."""
    reference = next(r["iterations_per_s"] for r in rows if not r["mesh"])
    return [{**r, "efficiency": r["iterations_per_s"] / reference} for r in rows]


def write_markdown(path: pathlib.Path, rows: list[dict], meta: dict) -> None:
    s, machine = meta["settings"], meta["machine"]
    lines = [
        "# Weak scaling of the CD step (`python -m benchmarks.bench_scaling`)", "",
        f"{machine['date']}, {machine['cpu']}, {machine['cpu_count']} CPU cores, jax {machine['versions']['jax']}; "
        f"1-min load average {meta['load_average_1min']} at start/end. Transformer energy ({s['num_layers']} "
        f"layers, width {s['d_model']}), {s['num_constituents']} constituents, K = {s['num_langevin_steps']} "
        f"Langevin steps, {s['per_device_batch']} jets and chains per device, buffer 8x the global batch; median "
        f"of {s['repeats']} timed calls after the compiling call and 2 warm-up calls.", "",
        "**Forced host devices share the same CPU cores** (`--xla_force_host_platform_device_count`): with more "
        "devices than cores each device gets a fraction of a core, so these numbers show the overhead of the "
        "sharded program, not a speed-up. Reported, not tuned; run on real devices (GPUs) for scaling figures.", "",
    ]
    lines += markdown_table(
        ["devices", "mesh", "global batch", "iterations / s", "jets / s", "efficiency", "first call s",
         "compiles while timed"],
        [[r["num_devices"], "yes" if r["mesh"] else "no", r["global_batch"], r["iterations_per_s"], r["jets_per_s"],
          r["efficiency"], r["first_call_s"], r["compiles_while_timed"]] for r in rows])
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, 1 and 2 devices (a smoke run)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS_DIR, help="directory for scaling.json/.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(measure(job["settings"], job["use_mesh"])))
        return
    settings = QUICK if args.quick else FULL
    machine = machine_info(packages=("jax", "jaxlib", "flax", "optax", "numpy"))
    rows = [run_worker(1, settings, use_mesh=False)]
    rows += [run_worker(d, settings, use_mesh=True) for d in settings["device_counts"]]
    meta = {"machine": machine, "settings": settings, "quick": args.quick,
            "load_average_1min": [machine["load_average_1min"], round(os.getloadavg()[0], 2)]}
    write_json(args.out / "scaling.json", {"meta": meta, "results": add_efficiency(rows)})
    write_markdown(args.out / "scaling.md", add_efficiency(rows), meta)
    print((args.out / "scaling.md").read_text())


if __name__ == "__main__":
    main()
