"""Curves over training of EBM-CLF runs side by side: the controlled runs of a recipe study.

Each ``LABEL=RUN_DIR`` names a variant directory of `experiments.ebm_clf` (its ``seed_<s>/metrics.jsonl`` eval
rows are read; several seeds are averaged at the steps they share). Writes ``curves.png``, ``curves.md`` and
``curves.json`` (per label: the mean curve, its seeds, the configuration keys that differ from the first label's).

    python -m experiments.ebm_clf_curves --out experiments/results/ebm_clf/recipe \\
        "lr 1e-3=runs/ebm_clf/cpu/kappa1" "lr 3e-4=runs/recipe/lr3e-4/kappa1"
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from jaxebm import experiments
from jaxebm.experiments.ebm_clf import curve_summary, training_curve
from jaxebm.experiments.ebm_clf_report import CURVE_COLUMNS, curve_cells, mean_curve, plot_curves
from jaxebm.runs.records import atomic_write_text
from jaxebm.train.monitor import read_metrics



def read_runs(variant_dir: Path) -> tuple[dict, dict]:
    """Mean curve over the seeds of a variant directory and the flattened config of its first seed (every field,
    defaults filled in)."""
    seed_dirs = sorted(d for d in variant_dir.glob("seed_*") if (d / "metrics.jsonl").is_file())
    if not seed_dirs:
        raise SystemExit(f"no seed_*/metrics.jsonl under {variant_dir}")
    curves = [training_curve(read_metrics(d / "metrics.jsonl")) for d in seed_dirs]
    curve = mean_curve(curves) | {"seeds": [d.name for d in seed_dirs]}
    # read through the config class, so a field newer than a run's record counts at its default, not as a change
    config = (dataclasses.asdict(experiments.load_recorded("ebm_clf", seed_dirs[0]))
              if (seed_dirs[0] / "config.json").is_file() else {})
    flat = {f"{section}.{k}": v for section, values in config.items() if isinstance(values, dict)
            for k, v in values.items()}
    return curve, flat


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR", help="a label and a variant directory")
    parser.add_argument("--out", type=Path, required=True, help="where curves.{png,md,json} go")
    args = parser.parse_args(argv)
    pairs = [run.rsplit("=", 1) for run in args.runs]  # labels may hold "=", paths do not
    if any(len(p) != 2 for p in pairs):
        raise SystemExit("each run must be LABEL=RUN_DIR")
    curves, configs = {}, {}
    for label, path in pairs:
        curves[label], configs[label] = read_runs(Path(path))
    reference = configs[pairs[0][0]]
    changes = {label: {k: v for k, v in c.items() if reference.get(k) != v and k != "run.num_steps"}
               for label, c in configs.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, args.out / "curves.png")
    lines = ["# EBM-CLF curves over training", "", "Test jets (1,000 per process); AUCs against QCD. ![curves](curves.png)",
             "", f"| run | seeds | changed from the first | iteration | {CURVE_COLUMNS[0]} |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, curve in curves.items():
        changed = ", ".join(f"{k} = {v}" for k, v in changes[label].items()) or "-"
        lines += [f"| {label} | {len(curve['seeds'])} | {changed} | {step} | {curve_cells(curve, i)} |"
                  for i, step in enumerate(curve["step"])]
    atomic_write_text(args.out / "curves.md", "\n".join(lines) + "\n")
    atomic_write_text(args.out / "curves.json", json.dumps(
        {label: {"curve": curve, "changed": changes[label], "summary": curve_summary(curve)}
         for label, curve in curves.items()}, indent=1, default=str))
    print(f"wrote {args.out}/curves.{{png,md,json}}")


if __name__ == "__main__":
    main()
