"""EBM suite: Langevin, training and generation throughput of the transformer energy, compile cost
and memory, against the machine's measured ceilings and, optionally, an independent PyTorch peer.

    python -m benchmarks.bench_ebm [--quick] [--device-label LABEL] [--peer torch] [--sections ...]

Writes ``benchmarks/results/ebm_<platform>.json`` and ``.md`` (``ebm_<platform>_quick.*`` with
``--quick``; a subset chosen with ``--sections``, ``--sizes`` or ``--precisions`` is named in the
file name), rewritten after every configuration so that a run cut short keeps its finished rows.
`benchmarks/README.md` says what each number means; `benchmarks.ebm_costs` holds the FLOP and byte
model. The suite's parts: `benchmarks.ebm_plan` (sizes, precisions, what each platform measures),
`benchmarks.ebm_runners` (inputs, JAX and PyTorch runners, ceilings), `benchmarks.ebm_sections` (the
rows of each section), `benchmarks.bench_ebm_report` (the markdown).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time
from dataclasses import asdict
from typing import Callable

import jax

from benchmarks.bench_ebm_report import markdown_report
from benchmarks.common import RESULTS_DIR, machine_info, write_json
from benchmarks.ebm_plan import PRECISIONS, SECTIONS, SIZES, device_peak, make_plan, select
from benchmarks.ebm_runners import error_string, measure_ceilings
from benchmarks.ebm_sections import cost_check, generation_row, langevin_section, print_rows, train_rows


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


def output_path(platform: str, quick: bool, subset: list[str]) -> pathlib.Path:
    """``results/ebm_<platform>[_quick][_<subset>].json``; a partial run never overwrites a full one."""
    stem = "_".join([f"ebm_{platform}"] + (["quick"] if quick else []) + subset)
    return RESULTS_DIR / f"{stem}.json"


def parse_args():
    """The command line (see the module docstring)."""
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
    """Run the sections asked for (or merge partial runs), saving the JSON and markdown after each."""
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
