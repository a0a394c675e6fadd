"""JetNet-style benchmark: ConVAE, ConVAE + NF, NF (Orzari et al. 2023) and the EBM on the same JetNet-like jets.

A thin entry point: the experiment is `jaxebm.experiments.jetnet_bench`; run directory, seeds, resumption
and reports are the runner's (`jaxebm.runs`); ``jaxebm train jetnet_bench`` is the same command.

    python -m experiments.jetnet_bench --preset cpu                 # 3 seeds, gluon jets, the CPU table
    python -m experiments.jetnet_bench --preset smoke               # seconds-scale check
    python -m experiments.jetnet_bench --preset paper               # paper sizes (GPU)

Presets: ``jaxebm/experiments/configs/jetnet_bench/``. An interrupted run resumes from its checkpoints.
"""
from __future__ import annotations

import json
from jaxebm.experiments.entry import run_from_args, run_parser


def main(argv=None) -> None:
    summary = run_from_args(run_parser(__doc__, "jetnet_bench").parse_args(argv), "jetnet_bench")
    print(json.dumps(summary["checks"], indent=2))


if __name__ == "__main__":
    main()
