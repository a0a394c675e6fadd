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

import json
from pathlib import Path

from jaxebm.experiments.entry import run_from_args, run_parser


def main(argv=None) -> None:
    root = Path("runs/ebm_jets")
    summary = run_from_args(run_parser(__doc__, "ebm", root).parse_args(argv), "ebm", root)
    print(json.dumps(summary["mean"], indent=2))


if __name__ == "__main__":
    main()
