"""The hybrid EBM-classifier (EBM-CLF) against a supervised baseline and the plain EBM (Tables 3 and 6).

A thin entry point: each variant (`jaxebm.experiments.ebm_clf.VARIANTS`) is one run of the runner in
``<out>/<variant>``; afterwards the comparison (Tables 6 and 3, generation per class, checks) of every
variant found under ``<out>`` is written to ``--results``.

    python -m experiments.ebm_clf --preset cpu --variants kappa1 baseline --seeds 0 1 2
    python -m experiments.ebm_clf --preset cpu --variants kappa0.5 kappa0.1 ebm --seeds 0
    python -m experiments.ebm_clf --preset cpu --variants            # only the comparison of finished runs

An interrupted variant resumes from its checkpoints when started again with the same settings.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxebm import experiments
from jaxebm.experiments.ebm_clf import EXPERIMENT, VARIANTS
from jaxebm.experiments.ebm_clf_report import write_comparison
from jaxebm.runs import RunOptions, run_experiment


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help="name in jaxebm/experiments/configs/ebm_clf/ or a TOML path")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="variants to train (default all; none: only write the comparison)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", type=Path, help="root of the variants' run directories (default runs/ebm_clf/<preset>)")
    parser.add_argument("--results", type=Path, help="where the comparison goes (default <out>)")
    parser.add_argument("--note", action="append", default=[], help="a line for the comparison report")
    args = parser.parse_args(argv)
    seeds = [f"seeds={list(args.seeds)}"] if args.seeds else []
    name = experiments.load("ebm_clf", args.preset, args.overrides).name
    out = args.out or Path("runs/ebm_clf") / name
    for variant in args.variants:
        config = experiments.load("ebm_clf", args.preset, [*VARIANTS[variant], *args.overrides, *seeds])
        print(f"== {variant}: seeds {list(config.seeds)} -> {out / variant}")
        run_experiment(EXPERIMENT, config, out / variant, RunOptions(mode="extend", progress=sys.stderr.isatty())
                       if (out / variant / "config.json").exists() else RunOptions(progress=sys.stderr.isatty()))
    run_dirs = {variant: out / variant for variant in VARIANTS if (out / variant / "summary.json").is_file()}
    results = args.results or out
    write_comparison(run_dirs, results, notes=args.note)
    print(f"comparison of {', '.join(run_dirs)} -> {results / 'comparison.md'}")


if __name__ == "__main__":
    main()
