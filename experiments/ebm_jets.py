"""The EBM for jets (Cheng & Courville, NeurIPS 2023) end to end on our own Pythia jets.

A thin entry point: the experiment is `jaxebm.experiments.ebm`, the run directory, seeds, resumption
and reports are the runner's (`jaxebm.runs`); ``jaxebm train ebm`` is the same command.

    python -m experiments.ebm_jets --preset cpu                      # 3 seeds, ~23 min each on 2 cores
    python -m experiments.ebm_jets --preset cpu --seeds 0 --set run.num_steps=200
    python -m experiments.ebm_jets --preset cpu --extend --set run.num_steps=2400   # continue a finished run
    python -m experiments.ebm_jets --preset paper                    # Table 4 sizes, 300k jets (GPU)

Presets: ``jaxebm/experiments/configs/ebm/``. An interrupted run resumes from its checkpoints when
started again with the same settings; other settings are refused unless ``--extend`` or ``--force``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxebm import experiments
from jaxebm.experiments.ebm import EXPERIMENT
from jaxebm.runs import RunOptions, run_experiment


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help="name in jaxebm/experiments/configs/ebm/ or a TOML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--out", type=Path, help="output directory (default runs/ebm_jets/<preset name>)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--extend", action="store_true", help="continue a run: larger run.num_steps, more seeds")
    mode.add_argument("--force", action="store_true", help="new run; an old one in --out is renamed, not deleted")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"seeds={list(args.seeds)}"] if args.seeds else [])
    config = experiments.load("ebm", args.preset, overrides)
    options = RunOptions(mode="extend" if args.extend else "force" if args.force else "auto",
                         progress=sys.stderr.isatty())
    summary = run_experiment(EXPERIMENT, config, args.out or Path("runs/ebm_jets") / config.name, options)
    print(json.dumps(summary["mean"], indent=2))


if __name__ == "__main__":
    main()
