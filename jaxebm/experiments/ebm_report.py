"""Plots and markdown reports of the EBM-for-jets experiment (`jaxebm.experiments.ebm`): the data
summary, one report per seed, the summary over seeds with the paper's tables and the run's provenance,
and the report over a seed sweep (``jaxebm report``) with its learning curve."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from jaxebm.data.images import jet_images
from jaxebm.data.preprocess import constituent_pt_eta_phi
from jaxebm.evaluation import jet_observables
from jaxebm.experiments.learning_curve import write_learning_curve
from jaxebm.experiments.reporting import flatten, provenance_lines, seed_report_links
from jaxebm.metrics import roc_curve, summarise_over_seeds
from jaxebm.plots import (
    plot_average_images,
    plot_constituent_features,
    plot_mass_sculpting,
    plot_observable_histograms,
    plot_roc_curves,
    plot_score_distributions,
    plot_training_curves,
)
from jaxebm.runs.records import atomic_write_text
from jaxebm.train.monitor import read_metrics

# The paper's numbers (Cheng & Courville 2023, 5 seeds, 300k QCD jets, GPU): Table 2 JSD (its own convention,
# `jaxebm.metrics.paper_jsd`), Table 3 AUC. Each row: (our key, label, paper mean, paper std, what differs).
DATA_NOTE = ("our jets: Pythia 8 + FastJet, no detector simulation, R = 1.0, 550-650 GeV test jets, "
             "27k training jets and a 2 x 64 network on the CPU preset (paper: 300k jets, 8 x 128, GPU)")
PAPER_ROWS = (
    ("generated.paper_jsd_pt", "JSD(pT), paper convention", 2.4e-4, 1.9e-4,
     "same binning (50 bins on [200, 1000] GeV, / 50); paper: 10k generated vs test jets, here fewer; floor below"),
    ("generated.paper_jsd_mass", "JSD(M), paper convention", 3.2e-4, 2.0e-4,
     "same binning (50 bins on [0, 500] GeV, / 50)"),
    ("generated.paper_jsd_m_over_pt", "JSD(M/pT), paper convention", 6.3e-4, 4.6e-4,
     "the paper's M/pT range is not in its code: ours is [0, 1]"),
    ("truth_vs_truth.paper_jsd_pt", "JSD(pT) truth vs truth, paper convention", None, None,
     "the floor at our sample sizes: a generator cannot be measured below it"),
    ("truth_vs_truth.paper_jsd_mass", "JSD(M) truth vs truth, paper convention", None, None, "as above"),
    ("anomaly_energy.auc_top", "AUC top, E(x)", 0.679, 0.009, "paper's top sample: Delphes-level, R = 1.0"),
    ("anomaly_energy.auc_h_hh_4b", "AUC H -> hh -> 4b, E(x)", 0.794, 0.032,
     "same H(174) -> hh(80) -> 4b model, generated here with Pythia only"),
    ("anomaly_score_norm.auc_top", "AUC top, ‖grad_x E‖ (raw coordinates)", 0.628, 0.017,
     "score norm in the paper's raw (log pT, eta, phi) coordinates"),
    ("anomaly_score_norm.auc_h_hh_4b", "AUC H, ‖grad_x E‖ (raw coordinates)", 0.738, 0.033, "as above"),
)
PAPER = {key: (mean, std) for key, _, mean, std, _ in PAPER_ROWS if mean is not None}
REPORT_ROWS = (
    ("generated.jsd_pt", "JSD(pT), generated vs test QCD (textbook, 50 bins on [400, 800] GeV)"),
    ("generated.jsd_mass", "JSD(M) (textbook, 50 bins on [0, 400] GeV)"),
    ("generated.jsd_m_over_pt", "JSD(M/pT) (textbook, 50 bins on [0, 0.8])"),
    ("noise_init.jsd_pt", "JSD(pT), noise-initialised chains (0 steps)"),
    ("noise_init.jsd_mass", "JSD(M), noise-initialised chains"),
    ("truth_vs_truth.jsd_pt", "JSD(pT), truth vs truth (train vs test QCD, as many jets as generated)"),
    ("truth_vs_truth.jsd_mass", "JSD(M), truth vs truth"),
    ("generated.paper_jsd_pt", "JSD(pT), paper convention (/ 50 bins, [200, 1000] GeV)"),
    ("generated.paper_jsd_mass", "JSD(M), paper convention ([0, 500] GeV)"),
    ("generated.paper_jsd_m_over_pt", "JSD(M/pT), paper convention ([0, 1])"),
    ("truth_vs_truth.paper_jsd_pt", "JSD(pT), paper convention, truth vs truth"),
    ("truth_vs_truth.paper_jsd_mass", "JSD(M), paper convention, truth vs truth"),
    ("generated.w1_pt", "W1(jet pT) [GeV], generated"),
    ("truth_vs_truth.w1_pt", "W1(jet pT) [GeV], truth vs truth"),
    ("generated.w1_mass", "W1(jet mass) [GeV], generated"),
    ("truth_vs_truth.w1_mass", "W1(jet mass) [GeV], truth vs truth"),
    ("generated.w1m", "W1M (relative mass), generated"),
    ("truth_vs_truth.w1m", "W1M, truth vs truth"),
    ("generated.w1p", "W1P, generated"),
    ("truth_vs_truth.w1p", "W1P, truth vs truth"),
    ("generated.fpd", "FPD, generated"),
    ("truth_vs_truth.fpd", "FPD, truth vs truth"),
    ("generated.kpd", "KPD, generated"),
    ("truth_vs_truth.kpd", "KPD, truth vs truth"),
    ("anomaly_energy.auc_top", "AUC top, E(x)"),
    ("anomaly_energy.auc_h_hh_4b", "AUC H->hh->4b, E(x)"),
    ("anomaly_energy.inv_eps_b_top", "1/eps_B(eps_S=0.2) top, E(x)"),
    ("anomaly_energy.inv_eps_b_h_hh_4b", "1/eps_B(eps_S=0.2) H, E(x)"),
    ("anomaly_score_norm.auc_top", "AUC top, ‖grad_x E‖ (raw coordinates)"),
    ("anomaly_score_norm.auc_h_hh_4b", "AUC H, ‖grad_x E‖ (raw coordinates)"),
    ("anomaly_score_norm_model.auc_top", "AUC top, ‖grad_x E‖ (standardised model coordinates)"),
    ("anomaly_score_norm_model.auc_h_hh_4b", "AUC H, ‖grad_x E‖ (standardised model coordinates)"),
    ("anomaly_energy.sculpt_jsd_keep0.5", "QCD mass JSD after E cut keeping 50%"),
    ("anomaly_energy.sculpt_jsd_keep0.1", "QCD mass JSD after E cut keeping 10%"),
    ("anomaly_energy.sculpt_jsd_keep0.01", "QCD mass JSD after E cut keeping 1%"),
    ("anomaly_energy.sculpt_random_jsd_q95_keep0.5", "same for random 50% subsets (95th percentile)"),
    ("anomaly_energy.sculpt_random_jsd_q95_keep0.1", "same for random 10% subsets (95th percentile)"),
    ("anomaly_energy.sculpt_random_jsd_q95_keep0.01", "same for random 1% subsets (95th percentile)"),
    ("anomaly_energy.mass_pearson", "Pearson(E, M) on QCD"),
    ("anomaly_energy.mass_distance_corr", "distance corr.(E, M) on QCD"),
)


def target_checks(mean: dict[str, float]) -> list[tuple[str, str, bool]]:
    """The CPU preset's targets on the mean over seeds: ``(target, measured, met)`` rows.

    Generation: JSD(pT) and JSD(M) at least 10x below the noise-initialised chains'. Anomaly
    detection with E(x): AUC(top) >= 0.62, AUC(H) >= 0.70. No significant sculpting: the QCD mass JSD
    after the 50% and 10% energy cuts within the 95th percentile of random subsets of the same size.
    """
    rows = []
    for name in ("pt", "mass"):
        generated, noise = mean[f"generated.jsd_{name}"], mean[f"noise_init.jsd_{name}"]
        rows.append((f"JSD({'pT' if name == 'pt' else 'M'}) <= noise-initialised / 10 = {_fmt(noise / 10)}",
                     _fmt(generated), generated <= noise / 10))
    for signal, label, floor in (("top", "top", 0.62), ("h_hh_4b", "H", 0.70)):
        value = mean[f"anomaly_energy.auc_{signal}"]
        rows.append((f"AUC {label}, E(x) >= {floor}", _fmt(value), value >= floor))
    for keep in ("0.5", "0.1"):
        value, reference = mean[f"anomaly_energy.sculpt_jsd_keep{keep}"], mean.get(
            f"anomaly_energy.sculpt_random_jsd_q95_keep{keep}", float("nan"))
        rows.append((f"mass JSD after E cut keeping {float(keep):.0%} <= random-subset q95 = {_fmt(reference)}",
                     _fmt(value), bool(value <= reference)))
    return rows


def _fmt(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else str(value)


def _images(four_vectors: np.ndarray, mask: np.ndarray) -> np.ndarray:
    pt, eta, phi = constituent_pt_eta_phi(four_vectors, mask)
    return jet_images(pt, eta, phi, mask)


def write_seed_plots(plot_dir: Path, *, tests, scores, noise_energy, real, generated, rows) -> None:
    """The figures of one seed: observables, constituents, images, ROC, energies, sculpting, training."""
    (real_p4, real_mask, real_features), (gen_p4, gen_mask, gen_features) = real, generated
    names = ("Pythia QCD", "EBM")
    plot_observable_histograms(jet_observables(real_p4, real_mask), jet_observables(gen_p4, gen_mask),
                               plot_dir / "observables.png", names=names)
    plot_constituent_features(real_features, real_mask, gen_features, gen_mask, plot_dir / "constituents.png",
                              feature_names=("log pT [log GeV]", "eta_rel", "phi_rel"), names=names)
    plot_average_images({"Pythia QCD": _images(real_p4, real_mask), "EBM": _images(gen_p4, gen_mask)},
                        plot_dir / "average_images.png")
    labels_qcd = np.zeros(len(scores["qcd"]["energy"]))
    curves = {}
    for key, score_name in (("energy", "E(x)"), ("score_norm", "||grad E|| raw")):
        for signal in ("top", "h_hh_4b"):
            labels = np.concatenate([labels_qcd, np.ones(len(scores[signal][key]))])
            curves[f"{signal}, {score_name}"] = roc_curve(labels, np.concatenate([scores["qcd"][key],
                                                                                   scores[signal][key]]))
    plot_roc_curves(curves, plot_dir / "roc.png")
    plot_score_distributions({"QCD": scores["qcd"]["energy"], "top": scores["top"]["energy"],
                              "H->hh->4b": scores["h_hh_4b"]["energy"], "noise": noise_energy},
                             plot_dir / "energies.png", xlabel="energy E(x)")
    plot_mass_sculpting(tests["qcd"].jets[:, 3], scores["qcd"]["energy"], plot_dir / "mass_sculpting.png")
    train_rows = [r for r in rows if "event" not in r]
    if train_rows:
        plot_training_curves(train_rows, plot_dir / "training.png",
                             keys=("loss", "e_pos", "e_neg", "gap", "grad_norm", "chain_grad_norm"))
    eval_rows = [r for r in rows if r.get("event") == "eval"]
    if eval_rows:
        plot_training_curves(eval_rows, plot_dir / "validation.png")


def write_seed_report(run_dir: Path, results: dict, **plot_inputs) -> None:
    """``plots/*.png`` and ``report.md`` of one seed."""
    rows = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    write_seed_plots(run_dir / "plots", rows=rows, **plot_inputs)
    flat = flatten(results)
    lines = [f"# EBM for jets, seed {results['seed']}", "", "| quantity | this run | paper |", "| --- | ---: | ---: |"]
    for key, label in REPORT_ROWS:
        if key in flat:
            paper = PAPER.get(key)
            lines.append(f"| {label} | {_fmt(flat[key])} | {_fmt(paper[0]) + ' ± ' + _fmt(paper[1]) if paper else ''} |")
    lines += ["", "Plots: " + ", ".join(f"[{p.stem}](plots/{p.name})" for p in sorted((run_dir / "plots").glob("*.png")))]
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")


def write_summary(out_dir: Path, config, per_seed: list[dict], *, record: dict | None = None,
                  seed_dirs: list[Path] | None = None, extra_lines: list[str] = ()) -> dict:
    """Mean ± std over seeds (sample std) next to the paper; ``summary.json`` and ``report.md`` with the
    provenance ``record`` (``run.json``), ``extra_lines`` and links to the seed reports in ``seed_dirs``
    (default ``out_dir/seed_<s>``)."""
    flats = [flatten(r) for r in per_seed]
    keys = sorted(set.intersection(*(set(f) for f in flats)))
    stats = summarise_over_seeds([{k: f[k] for k in keys} for f in flats], ddof=1 if len(flats) > 1 else 0)
    stats = {k: (result.value, result.error) for k, result in stats.items()}
    summary = {"num_seeds": len(per_seed), "seeds": [r["seed"] for r in per_seed],
               "mean": {k: float(s[0]) for k, s in stats.items()},
               "std": {k: float(s[1]) for k, s in stats.items()},
               "config": dataclasses.asdict(config)}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=list))
    lines = [f"# EBM for jets: preset `{config.name}`, {len(per_seed)} seed(s)", "",
             f"Model: {config.model.num_layers} x {config.model.d_model} transformer, {config.model.num_heads} heads, "
             f"ff {config.model.ff_dim}; padding `{config.cd.padding_mode}`; {config.run.num_steps} CD iterations of "
             f"batch {config.cd.batch_size}, K = {config.cd.num_langevin_steps}; training jets "
             f"{config.data.num_train_jets} (R = {config.data.jet_radius}); test jets {config.data.num_test_jets} per class; "
             f"features, chains and model in the `{config.data.feature_space}` space; "
             f"{config.run.num_generated_jets} generated jets.",
             "", "## Against the paper, in the paper's conventions", "", f"Data for every row: {DATA_NOTE}.", "",
             "| quantity | this work (mean ± std) | paper (5 seeds) | what differs |", "| --- | ---: | ---: | --- |"]
    for key, label, paper_mean, paper_std, note in PAPER_ROWS:
        if key in stats:
            paper = f"{_fmt(paper_mean)} ± {_fmt(paper_std)}" if paper_mean is not None else ""
            lines.append(f"| {label} | {_fmt(stats[key][0])} ± {_fmt(stats[key][1])} | {paper} | {note} |")
    lines += ["", "## All quantities", "", "| quantity | this work (mean ± std) |", "| --- | ---: |"]
    lines += [f"| {label} | {_fmt(stats[key][0])} ± {_fmt(stats[key][1])} |" for key, label in REPORT_ROWS
              if key in stats]
    lines += ["", "## Targets of the CPU preset (on the mean over seeds)", "", "| target | measured | met |",
              "| --- | ---: | --- |"]
    lines += [f"| {target} | {measured} | {'yes' if met else 'no'} |" for target, measured, met in
              target_checks(summary["mean"])]
    seed_dirs = seed_dirs or [out_dir / f"seed_{seed}" for seed in summary["seeds"]]
    lines += list(extra_lines) + ["", "## Provenance", ""] + provenance_lines(record)
    lines += ["", seed_report_links(summary["seeds"], seed_dirs, out_dir)]
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return summary


def write_report(out_dir: Path, config, per_seed: list[dict], *, record: dict | None = None,
                 seed_dirs: list[Path]) -> dict:
    """`write_summary` over ``seed_dirs`` (one run, or a seed sweep over runs) into ``out_dir``, with the
    validation learning curve of those seeds (``learning_curve.{png,json,md}``) when they logged one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with_curves = [d for d in seed_dirs if (d / "metrics.jsonl").exists()
                   and any(row.get("event") == "eval" for row in read_metrics(d / "metrics.jsonl"))]
    extra = []
    if with_curves:
        write_learning_curve({config.name: with_curves}, out_dir)
        extra = ["", "## Learning curve", "", "![learning curve](learning_curve.png) ([table](learning_curve.md))"]
    return write_summary(out_dir, config, per_seed, record=record, seed_dirs=seed_dirs, extra_lines=extra)
