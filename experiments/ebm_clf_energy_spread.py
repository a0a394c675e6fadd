"""Where the hybrid's E(x) loses its anomaly ranking: E(x) per test process against the classifier's confidence.

For a finished EBM-CLF seed directory (the EMA parameters of its newest checkpoint, or of each of ``--steps``; nothing
retrained): per test process (QCD, W, top, H -> hh -> 4b) the mean and spread of E(x) = -logsumexp g(x), the mean
confidence max_y log p(y|x), their Spearman correlation, the predicted-class fractions and the E(x) AUC against QCD.
E(x) is also split into the part the cross-entropy leaves free and the part it sets,

    E(x) = -mean_y g_y(x) + mean_y log p(y|x),

(the second is minus the cross-entropy of p(.|x) to the uniform labels: more negative the more confident) with the
AUC of each part against QCD. And the training chains against the data, under the raw parameters the chains
sampled: the predicted-class fractions and mean E(x) per predicted class of the replay buffer's samples (the chains'
end points) and of the training jets; CD is balanced where the two agree. Writes ``energy_spread.json`` and
``energy_spread.md`` into ``--out``; with several ``--steps``, one folder per checkpoint and ``over_training.{json,md,png}``
(the AUCs of E(x) and of its parts, and the chains' balance, against the iteration).

    python -m experiments.ebm_clf_energy_spread runs/ebm_clf/cpu/kappa1/seed_0 --out /tmp/spread [--steps 300 600 900]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from scipy.stats import spearmanr
from tqdm import tqdm

from jaxebm import experiments
from jaxebm.data.io import read_jets
from jaxebm.experiments.ebm_clf import CLASSES, SIGNALS, class_logits, data_files, load_training_state, read_test_sets
from jaxebm.metrics import auc
from jaxebm.runs import SeedJob
from jaxebm.runs.records import atomic_write_text


def energy_parts(logits: np.ndarray) -> dict[str, np.ndarray]:
    """E(x) ``(n,)`` from logits ``(n, K)`` and its two parts, which sum to it: ``logit_mean`` = -mean_y g_y(x) (the
    cross-entropy is blind to it: one constant added to all of a jet's logits leaves p(y|x) as it is) and
    ``log_prob_mean`` = mean_y log p(y|x)."""
    energy = -logsumexp(logits, axis=1)
    logit_mean = -np.mean(logits, axis=1)
    return {"energy": energy, "logit_mean": logit_mean, "log_prob_mean": energy - logit_mean}


def spread(logits: np.ndarray, qcd_logits: np.ndarray) -> dict[str, float]:
    """Statistics of one process from its logits ``(n, K)``, with AUCs against QCD's ``(n_qcd, K)``."""
    parts, qcd_parts = energy_parts(logits), energy_parts(qcd_logits)
    energy = parts["energy"]
    confidence = np.max(logits, axis=1) + energy
    fractions = np.bincount(np.argmax(logits, axis=1), minlength=len(CLASSES)) / len(logits)
    labels = np.r_[np.zeros(len(qcd_logits)), np.ones(len(logits))]
    return {"energy_mean": float(energy.mean()), "energy_std": float(energy.std()),
            "confidence_mean": float(confidence.mean()),
            "spearman_energy_confidence": float(spearmanr(energy, confidence)[0]),
            **{f"predicted_{c}": float(f) for c, f in zip(CLASSES, fractions)},
            **{f"{name}_auc_vs_qcd": float(auc(labels, np.r_[qcd_parts[name], parts[name]])) for name in parts}}


def by_predicted_class(logits: np.ndarray) -> dict[str, float]:
    """Fraction of ``logits (n, K)`` predicted as each class and their mean E(x) (NaN for an empty class)."""
    energy, predicted = energy_parts(logits)["energy"], np.argmax(logits, axis=1)
    out = {}
    for k, name in enumerate(CLASSES):
        chosen = predicted == k
        out[f"fraction_{name}"] = float(np.mean(chosen))
        out[f"energy_{name}"] = float(energy[chosen].mean()) if chosen.any() else float("nan")
    return out | {"energy_mean": float(energy.mean()), "energy_std": float(energy.std())}


def training_negatives(trained, state, train_sample) -> dict[str, dict[str, float]]:
    """`by_predicted_class` of the training jets ``train_sample`` (``"data"``) and of the replay buffer (``"chains"``)
    under the raw parameters ``state.params``; the buffer holds features ``(C, N, F)`` or ``(features, mask)``."""
    samples = state.buffer.samples
    x_neg, mask_neg = samples if isinstance(samples, tuple) else (samples, np.ones(samples.shape[:2], bool))
    x_pos, mask_pos = trained.pipeline.transform(train_sample)[:2]
    return {"data": by_predicted_class(class_logits(trained.model, state.params, x_pos, mask_pos)),
            "chains": by_predicted_class(class_logits(trained.model, state.params, np.asarray(x_neg),
                                                      np.asarray(mask_neg)))}


def _table(title: str, rows: dict[str, dict[str, float]]) -> list[str]:
    keys = list(next(iter(rows.values())))
    return [title, "", "| | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys),
            *(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for name, r in rows.items()), ""]


def analyse(config, job: SeedJob, step: int | None, tests: dict, train_sample) -> dict:
    """Test-jet statistics (EMA parameters) and the training chains' balance (raw) of one checkpoint; ``tests``
    ``{process: JetSample}`` and ``train_sample`` as read from the run's data files."""
    trained, state = load_training_state(config, job, step=step)
    logits = {p: class_logits(trained.model, trained.params, *trained.pipeline.transform(s)[:2]) for p, s in tests.items()}
    return {"seed_dir": str(job.directory), "step": trained.step,
            "processes": {p: spread(g, logits["qcd"]) for p, g in logits.items()},
            "training_negatives": training_negatives(trained, state, train_sample)}


def write_one(out: Path, result: dict) -> None:
    """``energy_spread.{json,md}`` of one checkpoint into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "energy_spread.json", json.dumps(result, indent=1))
    lines = [f"# E(x) against classifier confidence, {result['seed_dir']} (step {result['step']})", "",
             *_table("Test jets, EMA parameters:", result["processes"]),
             *_table("Training jets against the replay buffer, raw parameters (by predicted class):",
                     result["training_negatives"])]
    atomic_write_text(out / "energy_spread.md", "\n".join(lines))


def over_training_rows(results: list[dict]) -> list[dict[str, float]]:
    """Per checkpoint: the AUC against QCD of E(x) and of its two parts for each signal, and the training chains'
    balance, mean E(x) of the training jets minus that of the buffer, per predicted class (0 when CD is balanced)."""
    rows = []
    for result in results:
        row = {"step": result["step"]}
        for signal in SIGNALS:
            for part in ("energy", "logit_mean", "log_prob_mean"):
                row[f"{part}_auc_{signal}"] = result["processes"][signal][f"{part}_auc_vs_qcd"]
        data, chains = result["training_negatives"]["data"], result["training_negatives"]["chains"]
        for name in CLASSES:
            row[f"gap_{name}"] = data[f"energy_{name}"] - chains[f"energy_{name}"]
        rows.append(row)
    return rows


def write_over_training(out: Path, seed_dir: Path, rows: list[dict[str, float]]) -> None:
    """``over_training.{json,md,png}``: `over_training_rows` as a table and the AUCs of the parts as curves."""
    import matplotlib.pyplot as plt

    atomic_write_text(out / "over_training.json", json.dumps({"seed_dir": str(seed_dir), "rows": rows}, indent=1))
    keys = [k for k in rows[0] if k != "step"]
    lines = [f"# E(x) and its parts over training, {seed_dir}", "",
             "E(x) = -mean_y g_y(x) (logit_mean, the part the cross-entropy leaves free) + mean_y log p(y|x)"
             " (log_prob_mean); AUCs against QCD on the test jets (EMA parameters). gap_<class>: mean E(x) of the"
             " training jets minus that of the training chains' buffer, per predicted class (raw parameters).",
             "", "![parts](over_training.png)", "", "| step | " + " | ".join(keys) + " |",
             "| ---: |" + " ---: |" * len(keys)]
    lines += [f"| {r['step']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for r in rows]
    atomic_write_text(out / "over_training.md", "\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, len(SIGNALS) + 1, figsize=(5 * (len(SIGNALS) + 1), 3.6))
    steps = [r["step"] for r in rows]
    for ax, signal in zip(axes, SIGNALS):
        for part, label in (("energy", "E(x)"), ("logit_mean", "-mean_y g_y(x)"), ("log_prob_mean", "mean_y log p(y|x)")):
            ax.plot(steps, [r[f"{part}_auc_{signal}"] for r in rows], marker="o", label=label)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(title=f"{signal} against QCD", xlabel="iteration", ylabel="AUC")
    axes[0].legend()
    for name in CLASSES:
        axes[-1].plot(steps, [r[f"gap_{name}"] for r in rows], marker="o", label=f"predicted {name}")
    axes[-1].axhline(0.0, color="grey", lw=0.8, ls=":")
    axes[-1].set(title="CD balance: E(data) - E(chains)", xlabel="iteration", ylabel="mean E(x) difference")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(out / "over_training.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed_dir", type=Path, help="a finished seed directory of experiments.ebm_clf")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, nargs="*", default=[],
                        help="checkpoint steps (default the newest); several: one folder each and over_training.*")
    args = parser.parse_args(argv)
    config = experiments.load_recorded("ebm_clf", args.seed_dir)
    paths = {name: f.path for name, f in data_files(config).items()}
    job = SeedJob(0, args.seed_dir, paths, progress=False)
    tests, train_sample = read_test_sets(config.data, paths), read_jets(paths["train"])  # read once for all steps
    if len(args.steps) <= 1:
        write_one(args.out, analyse(config, job, args.steps[0] if args.steps else None, tests, train_sample))
        print((args.out / "energy_spread.md").read_text())
        return
    results = []
    for step in tqdm(args.steps, desc="checkpoints"):
        results.append(analyse(config, job, step, tests, train_sample))
        write_one(args.out / f"step_{step}", results[-1])
    write_over_training(args.out, args.seed_dir, over_training_rows(results))
    print((args.out / "over_training.md").read_text())


if __name__ == "__main__":
    main()
