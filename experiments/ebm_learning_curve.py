"""Learning curves of EBM runs: validation distances against CD iterations, per variant.

A thin entry point over `jaxebm.experiments.learning_curve`:

    python -m experiments.ebm_learning_curve "cpu=runs/ebm_jets/cpu/seed_*" \\
        "cpu, 2400 iterations=runs/ebm_jets/cpu_long/seed_0" --out runs/ebm_jets/cpu

Writes ``<out>/learning_curve.png``, ``<out>/learning_curve.json`` and ``<out>/learning_curve.md``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from jaxebm.experiments.learning_curve import parse_variants, write_learning_curve


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", metavar="LABEL=DIRECTORY_GLOB", help="seed directories of a variant")
    parser.add_argument("--out", type=Path, required=True, help="directory for learning_curve.{png,json,md}")
    args = parser.parse_args(argv)
    write_learning_curve(parse_variants(args.variants), args.out)
    print(f"wrote {args.out / 'learning_curve.md'}")


if __name__ == "__main__":
    main()
