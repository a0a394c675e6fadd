"""Where the hybrid's E(x) loses its anomaly ranking: E(x) per test process against the classifier's confidence.

For a finished EBM-CLF seed directory (the newest checkpoint's EMA parameters, nothing retrained): per test
process (QCD, W, top, H -> hh -> 4b) the mean and spread of E(x) = -logsumexp g(x), the mean confidence
max_y log p(y|x), their Spearman correlation, the predicted-class fractions and the E(x) AUC against QCD.
Writes ``energy_spread.json`` and ``energy_spread.md`` into ``--out``.

    python -m experiments.ebm_clf_energy_spread runs/ebm_clf/cpu/kappa1/seed_0 --out /tmp/spread
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from scipy.stats import spearmanr

from jaxebm import experiments
from jaxebm.experiments.ebm_clf import CLASSES, EXPERIMENT, class_logits, data_files, read_test_sets
from jaxebm.metrics import auc
from jaxebm.runs import SeedJob
from jaxebm.runs.records import atomic_write_text


def spread(logits: np.ndarray, qcd_energy: np.ndarray) -> dict[str, float]:
    """Statistics of one process from its logits ``(n, K)``; ``qcd_energy (n_qcd,)`` for the AUC."""
    energy = -logsumexp(logits, axis=1)
    confidence = np.max(logits, axis=1) + energy
    fractions = np.bincount(np.argmax(logits, axis=1), minlength=len(CLASSES)) / len(logits)
    labels = np.r_[np.zeros(len(qcd_energy)), np.ones(len(energy))]
    return {"energy_mean": float(energy.mean()), "energy_std": float(energy.std()),
            "confidence_mean": float(confidence.mean()),
            "spearman_energy_confidence": float(spearmanr(energy, confidence)[0]),
            **{f"predicted_{c}": float(f) for c, f in zip(CLASSES, fractions)},
            "energy_auc_vs_qcd": float(auc(labels, np.r_[qcd_energy, energy]))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed_dir", type=Path, help="a finished seed directory of experiments.ebm_clf")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = experiments.load_recorded("ebm_clf", args.seed_dir)
    paths = {name: f.path for name, f in data_files(config).items()}
    trained = EXPERIMENT.load_seed(config, SeedJob(0, args.seed_dir, paths, progress=False))
    tests = read_test_sets(config.data, paths)
    logits = {p: class_logits(trained.model, trained.params, *trained.pipeline.transform(s)[:2]) for p, s in tests.items()}
    qcd_energy = -logsumexp(logits["qcd"], axis=1)
    rows = {p: spread(g, qcd_energy) for p, g in logits.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "energy_spread.json", json.dumps({"seed_dir": str(args.seed_dir), "step": trained.step,
                                                                   "processes": rows}, indent=1))
    keys = list(next(iter(rows.values())))
    lines = [f"# E(x) against classifier confidence, {args.seed_dir} (step {trained.step})", "",
             "| process | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    lines += [f"| {p} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for p, r in rows.items()]
    atomic_write_text(args.out / "energy_spread.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
