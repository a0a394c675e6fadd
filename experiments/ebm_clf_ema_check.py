"""Does the EMA of the parameters cause the hybrid's E(x) turnaround? Raw against EMA parameters, same checkpoint.

For finished EBM-CLF seed directories: the newest checkpoint's EMA parameters (what the curves and the final
evaluation score) and its raw parameters (what the paper evaluates: neither its Table 4 nor the public code has
an EMA), each scored on the test jets by `ebm_clf.curve_point` (E(x) and -log p(QCD|x) AUCs for top and H,
top-1). Nothing is retrained. Writes ``ema_check.json`` and ``ema_check.md`` into ``--out``.

    python -m experiments.ebm_clf_ema_check runs/ebm_clf/cpu/kappa1/seed_0 runs/ebm_clf/cpu/kappa1/seed_1 --out DIR
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from jaxebm import experiments
from jaxebm.experiments import ebm_clf
from jaxebm.runs import SeedJob
from jaxebm.runs.records import atomic_write_text

PARAMETER_SETS = ("ema", "raw")


def seed_points(seed_dir: Path) -> dict:
    """``{"step": int, "ema": curve point, "raw": curve point}`` of the newest checkpoint of ``seed_dir``."""
    config = experiments.load_recorded("ebm_clf", seed_dir)
    paths = {name: f.path for name, f in ebm_clf.data_files(config).items()}
    job = SeedJob(0, seed_dir, paths, progress=False)
    trained, state = ebm_clf.load_training_state(config, job)
    tests = {p: trained.pipeline.transform(s)[:2] for p, s in ebm_clf.read_test_sets(config.data, paths).items()}
    return {"step": trained.step, **{p: ebm_clf.curve_point(trained.model, ebm_clf.parameter_set(state, p), tests)
                                     for p in PARAMETER_SETS}}


def table(rows: dict[str, dict]) -> list[str]:
    """Markdown rows: one per seed directory and parameter set, then the mean over seeds."""
    keys = list(rows[next(iter(rows))]["ema"])
    lines = ["| run | step | parameters | " + " | ".join(keys) + " |", "| --- | ---: | --- |" + " ---: |" * len(keys)]
    for name, row in rows.items():
        lines += [f"| {name} | {row['step']} | {p} | " + " | ".join(f"{row[p][k]:.3f}" for k in keys) + " |"
                  for p in PARAMETER_SETS]
    for p in PARAMETER_SETS:
        means = [np.mean([row[p][k] for row in rows.values()]) for k in keys]
        lines.append(f"| mean of {len(rows)} | | {p} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed_dirs", type=Path, nargs="+", help="finished seed directories of experiments.ebm_clf")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = {str(d): seed_points(d) for d in args.seed_dirs}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "ema_check.json", json.dumps(rows, indent=1))
    lines = ["# Hybrid E(x): EMA against raw parameters at the newest checkpoint", ""] + table(rows)
    atomic_write_text(args.out / "ema_check.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
