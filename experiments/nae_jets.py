"""The normalized autoencoder on jet images (seed 002): both top/QCD directions and the dark-jet scan.

A thin entry point over the runner (`jaxebm.runs`) and the experiment `jaxebm.experiments.nae`; each
direction (and each pixel power n of the dark scan) is its own run directory
``<out>/<tag_top | tag_qcd | tag_dark_n<n>>``, resumable like any run. ``jaxebm train nae`` runs one of them.

    python -m experiments.nae_jets --preset cpu                           # everything, CPU sizes
    python -m experiments.nae_jets --preset cpu --only tag_qcd --seeds 0
    python -m experiments.nae_jets --preset cpu --only tag_qcd tag_top --seeds 0 1 2 --extend   # more seeds
    python -m experiments.nae_jets --preset smoke --results /tmp/nae_smoke

The combined table and seed 0's plots of each run go to ``--results`` (default experiments/results/nae).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

from jaxebm import experiments
from jaxebm.experiments.nae import EXPERIMENT
from jaxebm.experiments.nae_report import write_combined
from jaxebm.runs import RunOptions, run_experiment

DARK_POWERS = (0.5, 0.3, 0.2, 0.1, 0.01)


def tasks(dark_seeds: int | None) -> dict[str, list[str]]:
    """Run label -> config overrides: both directions, then the dark scan (``dark_seeds`` seeds each)."""
    runs = {"tag_qcd": ["data.direction=tag_qcd"], "tag_top": ["data.direction=tag_top"]}
    for power in DARK_POWERS:
        overrides = ["data.direction=tag_dark", f"data.pt_power={power}"]
        if dark_seeds is not None:
            overrides.append(f"seeds={list(range(dark_seeds))}")
        runs[f"tag_dark_n{power:g}"] = overrides
    return runs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help="name in jaxebm/experiments/configs/nae/ or a TOML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of the two top/QCD directions")
    parser.add_argument("--dark-seeds", type=int, default=1, help="seeds per dark-scan run (0, 1, ...)")
    parser.add_argument("--only", nargs="+", help="run labels to run (tag_top, tag_qcd, tag_dark_n0.5, ...)")
    parser.add_argument("--out", type=Path, help="run directories' parent (default runs/nae/<preset name>)")
    parser.add_argument("--results", type=Path, default=Path("experiments/results/nae"))
    parser.add_argument("--extend", action="store_true", help="continue finished runs with more seeds or steps")
    args = parser.parse_args(argv)
    if not jax.config.jax_compilation_cache_dir:  # compiled steps are reused across runs and restarts
        jax.config.update("jax_compilation_cache_dir", str(Path("runs/jax_cache").resolve()))
    all_tasks = tasks(args.dark_seeds)
    unknown = sorted(set(args.only or ()) - set(all_tasks))
    if unknown:
        parser.error(f"unknown run labels {unknown}; known: {sorted(all_tasks)}")
    run_dirs = {}
    for label, task_overrides in all_tasks.items():
        seeds = [f"seeds={list(args.seeds)}"] if args.seeds and not label.startswith("tag_dark") else []
        config = experiments.load("nae", args.preset, [*args.overrides, *task_overrides, *seeds])
        out = (args.out or Path("runs/nae") / config.name) / label
        run_dirs[label] = out
        if args.only and label not in args.only:
            continue
        start = time.perf_counter()
        options = RunOptions(mode="extend" if args.extend else "auto", progress=sys.stderr.isatty())
        summary = run_experiment(EXPERIMENT, config, out, options)
        print(f"{label}: {json.dumps(summary['mean'])} ({time.perf_counter() - start:.0f} s)", flush=True)
    write_combined(run_dirs, args.results, data_summaries={})
    print(f"results: {args.results / 'results.md'}")


if __name__ == "__main__":
    main()
