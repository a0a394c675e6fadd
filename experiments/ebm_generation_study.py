"""Generation quality per CPU second of a trained jet EBM: samplers, schedules, noise, starts, temperature.

Loads one finished seed run directory of `experiments.ebm_jets` (config.json, pipeline.json, the best
checkpoint's EMA parameters and its replay buffer; nothing is retrained) and runs chains of many
settings, scoring each against the test QCD jets passed through `ConstituentPipeline.jets_as_model_sees`
(the four-vector path of the generated jets):

- samplers: ULA (`jaxebm.sampling.langevin`, the paper's) and MALA (`jaxebm.sampling.mala`), both with
  the paper's decoupled noise (MALA then rejects almost every move) and with tied noise sqrt(2 step);
- step schedules (the paper's 0.1 x 0.8 every 40 steps, constant 0.1, others), noise 0 / 0.001 / 0.005,
  temperature, chain lengths;
- chain starts: `noise_fn` (the paper's, 0 steps = ``results.json``'s ``noise_init`` when ``--num-jets``
  equals the run's ``num_generated_jets``: the same key and jets) or the checkpoint's replay buffer
  (persistent chains of training).

Each *family* (one sampler setting) runs one chain per jet to its longest length in equal jitted
segments (compiled once, ahead of the clock) and is scored at every requested length, so a family's
lengths are the same chains observed at different times (the schedules depend on the step index
only, so a snapshot at L steps is a chain of length L). Cost per jet: energy-gradient evaluations
(ULA: L; MALA: L + 1, the start's gradient) and the measured wall time per jet (compilation
excluded, the machine's load recorded).

Quality per setting: textbook JSD (fixed ranges, `jaxebm.evaluation`) and W1 of jet pT, mass, M/pT,
the selection distance (sum of W1 / std(real), the checkpoint criterion), W1 of the constituent
features (log pT, eta_rel, phi_rel) over the slots the model sees, the fractions of jets with
pT > 800 GeV (overflow of the JSD range) and < 400 GeV (underflow), and tail diagnostics.

The library is `jaxebm.experiments.generation_study`; this script is its command line.

    python -m experiments.ebm_generation_study runs/ebm_jets/cpu/seed_0 --out experiments/results/generation_study
    python -m experiments.ebm_generation_study /tmp/smoke/seed_0 --out /tmp/gs --quick

Outputs under ``--out``: generation_study.json, generation_study.md, quality_vs_evals.png,
quality_vs_time.png, observables_*.png, tails.png, per_jet.npz (written atomically).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from jaxebm.experiments.generation_study.settings import study_grid
from jaxebm.experiments.generation_study.study import rewrite_report, run_generation_study, select_families


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a seed run directory of experiments.ebm_jets (seed_<s>/)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--num-jets", type=int, help="generated jets per setting (default: 1000; --quick: the "
                        "run's num_generated_jets, so 0 steps reproduces results.json's noise_init)")
    parser.add_argument("--batch-size", type=int, help="chains per jitted call (default: the run's generation batch)")
    parser.add_argument("--data-dir", help="override the run's data.data_dir (test QCD jets)")
    parser.add_argument("--families", nargs="+", help="run only these families of the grid")
    parser.add_argument("--max-minutes", type=float, help="time budget: chains are run and lengthened in the "
                        "order of `work_plan` while it lasts (what was left out is recorded)")
    parser.add_argument("--quick", action="store_true", help="tiny grid and few jets (tests)")
    parser.add_argument("--notes", type=Path, help="markdown text (the reading of the results) to put at the top of "
                        "the report as its summary; kept by later --report-only runs unless replaced")
    parser.add_argument("--report-only", action="store_true", help="rewrite the markdown, the JSON's derived parts "
                        "and the quality plots from an earlier study's generation_study.json (no chains)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the study (or, with --report-only, rewrite its report); returns the study as written."""
    args = parse_args(argv)
    if args.report_only:
        study = rewrite_report(args.out, args.notes)
        print(f"rewrote {args.out}/generation_study.{{json,md}}; recommended: {study['recommendation']['setting']}")
        return study
    try:
        select_families(study_grid(args.quick), args.families)
    except ValueError as error:  # unknown --families
        raise SystemExit(str(error)) from None
    study = run_generation_study(args.run_dir, args.out, num_jets=args.num_jets, batch_size=args.batch_size,
                                 data_dir=args.data_dir, families=args.families, max_minutes=args.max_minutes,
                                 quick=args.quick, notes=args.notes, progress=not args.no_progress)
    print(f"wrote {args.out}/generation_study.{{json,md}}; recommended: {study['recommendation']['setting']}")
    return study


if __name__ == "__main__":
    main()
