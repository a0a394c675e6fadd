"""Plots and reports of the JetNet-style benchmark (`jaxebm.experiments.jetnet_bench`), drawn from what
`jaxebm.experiments.jetnet_bench_eval` computed. The summary (mean +- std over seeds) sits beside the
paper's Table 8 and the field's truth floors, with the report lines met / not met.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxebm.data.io import JetSample
from jaxebm.plots import save_figure
from jaxebm.runs.records import atomic_write_json, atomic_write_text

__all__ = ["METRICS", "summarise", "target_checks", "write_data_summary", "write_report",
           "write_seed_report", "write_summary"]

# (key, label, factor shown, unit note)
METRICS = (
    ("w1m", "W1M", 1e3, "x1e-3"), ("w1p", "W1P", 1e3, "x1e-3"), ("w1efp", "W1EFP", 1e5, "x1e-5"),
    ("fpd", "FPD", 1e3, "x1e-3"), ("kpd", "KPD", 1e6, "x1e-6"), ("cov", "COV", 1.0, ""),
    ("mmd", "MMD", 1.0, "pT_rel EMD"), ("emd_sum", "EMD_sum", 1.0, "GeV"),
)
ROWS = ("truth", "convae", "convae_nf", "nf", "ebm", "ebm_flow_start")
LABELS = {"truth": "truth (train vs test)", "convae": "ConVAE", "convae_nf": "ConVAE+NF", "nf": "NF", "ebm": "EBM",
          "ebm_flow_start": "EBM from flow jets"}
# Paper (seed 004) Table 8, gluon, 30 particles, in the units of METRICS (W1EFP x1e-5; FPND not ours).
PAPER = {
    "convae": {"w1m": 9.1, "w1p": 8.5, "w1efp": 576, "cov": 0.32, "mmd": 0.036, "emd_sum": 0.0033, "fpnd": 43.6},
    "convae_nf": {"w1m": 4.5, "w1p": 5.3, "w1efp": 197, "cov": 0.38, "mmd": 0.034, "emd_sum": 0.0026, "fpnd": 34.3},
    "nf": {"w1m": 12.7, "w1p": 8.5, "w1efp": 8600, "cov": 0.38, "mmd": 0.033, "emd_sum": 0.0049, "fpnd": 93.6},
    "mpgan": {"w1m": 0.7, "w1p": 0.9, "w1efp": 0.7, "cov": 0.56, "mmd": 0.037, "fpnd": 0.12},
}
# REFERENCE.md section 4: JetNet gluon truth vs truth (Kansal et al. protocol) and MPGAN, same units.
FIELD_TRUTH = {"w1p": 0.14, "w1m": 0.46, "fpd": 0.14, "kpd": 1.8}
FIELD_MPGAN = {"w1p": 0.27, "w1m": 0.7, "fpd": 0.41, "kpd": 0.0}


def _fraction_per_unit(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram normalised to all ``values`` (not only those inside ``edges``): fraction per unit of the
    observable, so a sample mostly outside the plotted range shows low bins instead of failing to normalise."""
    counts, _ = np.histogram(values, edges)
    return counts / (max(len(values), 1) * np.diff(edges))


def plot_observables(per_model: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """One figure: each observable's normalised histograms for all models over the test jets, with
    model / test ratio panels (written atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = (("mass", "relative jet mass"), ("eta_rel", "particle eta_rel"), ("phi_rel", "particle phi_rel"),
             ("pt_rel", "particle pT_rel (log10)"), ("multiplicity", "particles per jet"))
    fig, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 5.5), sharex="col",
                             gridspec_kw={"height_ratios": (3, 1)})
    for column, (key, label) in enumerate(names):
        transform = (lambda v: np.log10(np.clip(v, 1e-6, None))) if key == "pt_rel" else (lambda v: v)
        reference = transform(per_model["test"][key])
        if key == "multiplicity":
            edges = np.arange(reference.min() - 5.5, reference.max() + 1.5, 1.0)
        else:
            edges = np.linspace(*np.percentile(reference, [0.5, 99.5]), 41)
        ref_hist = _fraction_per_unit(reference, edges)
        centres = 0.5 * (edges[1:] + edges[:-1])
        axes[0, column].fill_between(centres, ref_hist, step="mid", color="0.85", label="test jets")
        for name, values in per_model.items():
            if name == "test":
                continue
            hist = _fraction_per_unit(transform(values[key]), edges)
            axes[0, column].step(centres, hist, where="mid", label=LABELS.get(name, name))
            ratio = np.divide(hist, ref_hist, out=np.full_like(hist, np.nan), where=ref_hist > 0)
            axes[1, column].step(centres, ratio, where="mid")
        axes[1, column].axhline(1.0, color="k", lw=0.5)
        axes[1, column].set_ylim(0, 2)
        axes[1, column].set_xlabel(label)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].set_ylabel("model / test")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def write_seed_report(seed_dir: Path, results: dict, per_model: dict[str, dict[str, np.ndarray]]) -> None:
    """``observables.npz``, ``plots/observables.png`` and ``report.md`` of one seed; ``per_model``: the
    observables (`jaxebm.experiments.jetnet_bench_eval.observables`) of the test jets and of each sample."""
    np.savez_compressed(seed_dir / "observables.npz",
                        **{f"{model}/{key}": v for model, obs in per_model.items() for key, v in obs.items()})
    plot_observables(per_model, seed_dir / "plots" / "observables.png")
    atomic_write_text(seed_dir / "report.md", "\n".join(
        [f"# JetNet-style benchmark, seed {results['seed']}", ""]
        + _table({name: {k: tuple(v) for k, v in m.items()} for name, m in results["metrics"].items()}) + [""]))


def _load_observables(seed_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    with np.load(seed_dir / "observables.npz") as data:
        per_model: dict[str, dict[str, np.ndarray]] = {}
        for name in data.files:
            model, key = name.split("/")
            per_model.setdefault(model, {})[key] = data[name]
    return per_model


def _fmt(value: float, factor: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    scaled = value * factor
    return f"{scaled:.3g}" if abs(scaled) < 1e4 else f"{scaled:.2e}"


def _table(rows: dict[str, dict[str, tuple[float, float]]]) -> list[str]:
    header = "| model | " + " | ".join(f"{label} {unit}".strip() for _, label, _, unit in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for name in (r for r in ROWS if r in rows):
        cells = [f"{_fmt(rows[name][k][0], f)} ± {_fmt(rows[name][k][1], f)}" if k in rows[name] else "n/a"
                 for k, _, f, _ in METRICS]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines


def summarise(per_seed: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{row: {metric: (mean over seeds, std over seeds)}}`` (std 0 for one seed)."""
    summary = {}
    for name in per_seed[0]["metrics"]:
        summary[name] = {}
        for key in per_seed[0]["metrics"][name]:
            values = np.array([s["metrics"][name][key][0] for s in per_seed])
            summary[name][key] = (float(values.mean()), float(values.std()))
    return summary


def target_checks(summary: dict, per_seed: list[dict]) -> list[tuple[str, bool | None]]:
    """The issue's report lines: (text, met) with met None when a row is missing."""
    def better(a: str, b: str, key: str):
        if a not in summary or b not in summary:
            return None
        return summary[a][key][0] < summary[b][key][0]

    checks = [("ConVAE+NF better than ConVAE on W1M (the paper's claim)", better("convae_nf", "convae", "w1m"))]
    for key in ("w1m", "w1p", "fpd"):
        checks.append((f"EBM better than ConVAE+NF on {key.upper()}", better("ebm", "convae_nf", key)))
    minutes = [(sum(s["train_seconds"].values()) + sum(s["generation_seconds"].values())
                + s["evaluation_seconds"]) / 60 for s in per_seed]
    checks.append((f"whole CPU table <= 45 min per seed (measured: {', '.join(f'{m:.1f}' for m in minutes)} min; "
                   "shared machine, data generation not included)", max(minutes) <= 45))
    return checks


def _ratio_table(summary: dict) -> list[str]:
    keys = [(k, label) for k, label, _, _ in METRICS]
    lines = ["| model | " + " | ".join(label for _, label in keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name in (r for r in ROWS if r in summary and r != "truth"):
        cells = []
        for key, _ in keys:
            if key not in summary[name] or key not in summary.get("truth", {}):
                cells.append("n/a")
                continue
            floor = summary["truth"][key][0]
            cells.append(f"{summary[name][key][0] / floor:.3g}" if floor > 0 else "floor <= 0")
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines


def _paper_table() -> list[str]:
    keys = ("w1m", "w1p", "w1efp", "cov", "mmd", "emd_sum", "fpnd")
    lines = ["| model (paper Table 8, JetNet gluon, GPU) | W1M x1e-3 | W1P x1e-3 | W1EFP x1e-5 | COV | MMD | "
             "EMD_sum | FPND |", "|" + "---|" * 8]
    for name, label in (("convae", "ConVAE"), ("convae_nf", "ConVAE+NF"), ("nf", "NF"), ("mpgan", "MPGAN")):
        lines.append(f"| {label} | " + " | ".join(str(PAPER[name].get(k, "n/a")) for k in keys) + " |")
    lines.append("| JetNet gluon truth floor (REFERENCE.md 4) | " + f"{FIELD_TRUTH['w1m']} | {FIELD_TRUTH['w1p']} | "
                 "n/a | n/a | n/a | n/a | n/a (FPD x1e-3 0.14, KPD x1e-6 1.8) |")
    return lines


def write_summary(out_dir: Path, config, per_seed: list[dict], *, record: dict | None = None,
                  seed_dirs: list[Path] | None = None) -> dict:
    """``summary.json``, ``report.md`` and ``plots/observables.png`` (first seed) over the seeds."""
    summary = summarise(per_seed)
    checks = target_checks(summary, per_seed)
    timing = {name: float(np.mean([s["train_seconds"].get(name, 0.0) for s in per_seed]))
              for name in per_seed[0]["train_seconds"]}
    result = {"mean": {name: {k: list(v) for k, v in row.items()} for name, row in summary.items()},
              "seeds": [s["seed"] for s in per_seed], "checks": [[text, met] for text, met in checks],
              "train_seconds_mean": timing,
              "generation_seconds_mean": {name: float(np.mean([s["generation_seconds"][name] for s in per_seed]))
                                          for name in per_seed[0]["generation_seconds"]},
              "evaluation_seconds_mean": float(np.mean([s["evaluation_seconds"] for s in per_seed])),
              "num_test_jets": per_seed[0]["num_test_jets"],
              "sample_info": {s["seed"]: s["sample_info"] for s in per_seed}}
    atomic_write_json(out_dir / "summary.json", result, sort_keys=False)
    if seed_dirs:
        plot_observables(_load_observables(seed_dirs[0]), out_dir / "plots" / "observables.png")
    from jaxebm.experiments.jetnet_flow_start_report import write_summary_curve  # it imports this module
    lines = [f"# JetNet-style benchmark ({config.name} preset, {config.data.jet_type} jets)", "",
             f"Seeds {result['seeds']}; {result['num_test_jets']} test jets, the same number generated per model; "
             "mean ± std over seeds. FPND: not computed (needs JetNet's pretrained ParticleNet, not downloadable "
             "here). EMD_sum in GeV (paper's definition), not for the EBM rows (relative coordinates).", "",
             *_table(summary), "", "Ratio to the truth floor (model / truth, mean over seeds):", "",
             *_ratio_table(summary), "", *write_summary_curve(out_dir, per_seed), *_paper_table(), "",
             "Report lines:", "",
             *[f"- {'met' if met else 'NOT met' if met is not None else 'n/a'}: {text}" for text, met in checks],
             "", "Training seconds per seed (mean): " + json.dumps({k: round(v, 1) for k, v in timing.items()}),
             "Generation seconds for the test-size sample (mean): "
             + json.dumps({k: round(v, 2) for k, v in result["generation_seconds_mean"].items()}),
             f"Evaluation seconds (mean): {result['evaluation_seconds_mean']:.1f}", ""]
    if record is not None:
        lines += [f"Run: {record.get('created', '')} commit {record.get('git_commit')}", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    return result


def write_report(out_dir: Path, config, per_seed: list[dict], *, record: dict | None = None,
                 seed_dirs: list[Path] | None = None) -> dict:
    """Same as `write_summary` (``jaxebm report``)."""
    return write_summary(out_dir, config, per_seed, record=record, seed_dirs=seed_dirs)


def write_data_summary(out_dir: Path, sample: JetSample, splits, timing: dict | None) -> dict:
    """``data_summary.json``: split sizes, jet pT / mass / multiplicity quantiles, Pythia rate."""
    q = (16, 50, 84)
    summary = {"num_train_val_test": [len(rows) for rows in splits],
               "jet_pt_q16_50_84": np.percentile(sample.jets[:, 0], q).tolist(),
               "jet_eta_q16_50_84": np.percentile(sample.jets[:, 1], q).tolist(),
               "jet_mass_q16_50_84": np.percentile(sample.jets[:, 3], q).tolist(),
               "n_particles_q16_50_84": np.percentile(sample.mask.sum(axis=1), q).tolist(),
               "fraction_with_30": float(np.mean(sample.mask.sum(axis=1) == sample.mask.shape[1])),
               "generation": timing}
    atomic_write_json(out_dir / "data_summary.json", summary)
    print("data:", json.dumps(summary))
    return summary

