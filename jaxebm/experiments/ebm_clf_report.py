"""Plots and markdown reports of the hybrid EBM-classifier experiment (`jaxebm.experiments.ebm_clf`): one
report per seed, the summary of a variant over its seeds, and the comparison of the variants in the layout
of the paper's Table 6 (classification) and Table 3 (anomaly detection) with the CPU preset's checks."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from jaxebm.evaluation import jet_observables
from jaxebm.experiments.ebm_clf_data import CLASSES, SIGNALS
from jaxebm.experiments.reporting import flatten, provenance_lines, seed_report_links
from jaxebm.metrics import roc_curve, summarise_over_seeds
from jaxebm.plots import (
    plot_mass_sculpting,
    plot_observable_histograms,
    plot_roc_curves,
    plot_score_distributions,
    plot_training_curves,
    save_figure,
)
from jaxebm.runs.records import atomic_write_text

__all__ = ["CURVE_COLUMNS", "PAPER_TABLE3", "PAPER_TABLE6", "SCORE_LABELS", "comparison_checks", "curve_cells",
           "mean_curve", "plot_curves",
           "write_comparison", "write_report", "write_seed_report", "write_summary"]

# score key -> (label, group); groups as the paper's Table 3: mass-decorrelated and mass-correlated
SCORE_LABELS = {
    "energy": ("E(x)", "mass-decorrelated"),
    "score_norm": ("‖∇x E‖ (raw coordinates)", "mass-decorrelated"),
    "class_nll": ("-log p(QCD|x)", "mass-correlated"),
    "class_energy": ("-g(x)_QCD (QCD logit)", "mass-correlated"),
    "min_class_energy": ("min_y E(x, y)", "other"),
}
# The paper's numbers (5 seeds, 100k jets per class, Delphes-level jets, 8 x 128 transformer, GPU)
PAPER_TABLE6 = {"baseline": (0.871, 0.976, "ParticleNet"), "kappa1": (0.850, 0.969, "EBM-CLF κ = 1"),
                "kappa0.5": (0.708, 0.906, "EBM-CLF κ = 0.5"), "kappa0.1": (0.679, 0.852, "EBM-CLF κ = 0.1")}
PAPER_TABLE3 = {  # (variant, score) -> (AUC top, AUC H), mean ± std strings
    ("ebm", "energy"): ("0.679 ± 0.009", "0.794 ± 0.032"), ("ebm", "score_norm"): ("0.628", "0.738"),
    ("kappa1", "energy"): ("0.703 ± 0.020", "0.815 ± 0.018"),
    ("kappa1", "score_norm"): ("0.679 ± 0.040", "0.722 ± 0.028"),
    ("kappa1", "class_energy"): ("0.920 ± 0.002", "0.877 ± 0.008"),
    ("kappa1", "class_nll"): ("0.940 ± 0.002", "0.865 ± 0.012"),
}
VARIANT_ORDER = ("kappa1", "kappa1_cc", "kappa0.5", "kappa0.1", "baseline", "ebm")
VARIANT_LABELS = {"kappa1": "EBM-CLF κ = 1", "kappa1_cc": "EBM-CLF κ = 1, class-conditional training chains",
                  "kappa0.5": "EBM-CLF κ = 0.5", "kappa0.1": "EBM-CLF κ = 0.1",
                  "baseline": "supervised baseline (CE only)", "ebm": "plain EBM (CD only, same jets)"}


def _fmt(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else str(value)


def plot_confusion_matrix(matrix: np.ndarray, path: Path, *, title: str = "") -> Path:
    """Row-normalised confusion matrix ``(K, K)`` (rows: true class, columns: predicted), written atomically."""
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.6 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)


def confusion_matrix(values: dict[str, float]) -> np.ndarray:
    """``(K, K)`` from the ``confusion_<true>_<predicted>`` entries of a classification result."""
    return np.array([[values[f"confusion_{t}_{p}"] for p in CLASSES] for t in CLASSES])


def write_seed_plots(plot_dir: Path, results: dict, *, scores, masses, logits, real, generated, rows) -> None:
    """Confusion matrix, ROC per score, score distributions, QCD mass after cuts per score, generated jets
    per class, training curves."""
    if "classification" in results:
        plot_confusion_matrix(confusion_matrix(results["classification"]), plot_dir / "confusion.png",
                              title=f"{results['variant']}, seed {results['seed']}")
    curves = {}
    for name in scores["qcd"]:
        for signal in SIGNALS:
            labels = np.r_[np.zeros(len(scores["qcd"][name])), np.ones(len(scores[signal][name]))]
            curves[f"{signal}, {SCORE_LABELS[name][0]}"] = roc_curve(
                labels, np.r_[scores["qcd"][name], scores[signal][name]])
        plot_score_distributions({p: s[name] for p, s in scores.items()}, plot_dir / f"scores_{name}.png",
                                 xlabel=SCORE_LABELS[name][0])
        plot_mass_sculpting(masses["qcd"], scores["qcd"][name], plot_dir / f"mass_sculpting_{name}.png")
    plot_roc_curves(curves, plot_dir / "roc.png")
    probs = {p: np.exp(g - g.max(axis=1, keepdims=True)) for p, g in logits.items()}
    plot_score_distributions({p: v[:, 0] / v.sum(axis=1) for p, v in probs.items()}, plot_dir / "p_qcd.png",
                             xlabel="p(QCD | x)")
    for name, (gen_p4, gen_mask) in generated.items():
        plot_observable_histograms(jet_observables(*real[name]), jet_observables(gen_p4, gen_mask),
                                   plot_dir / f"generated_{name}.png", names=(f"Pythia {name}", "EBM-CLF chains"))
    train_rows = [r for r in rows if "event" not in r]
    if train_rows:
        plot_training_curves(train_rows, plot_dir / "training.png",
                             keys=("loss", "cd", "ce", "accuracy", "e_pos", "e_neg", "gap", "grad_norm"))


def _seed_lines(flat: dict[str, float]) -> list[str]:
    lines = ["| quantity | value |", "| --- | ---: |"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in sorted(flat.items())
              if not key.startswith("confusion") and "random_jsd" not in key]
    return lines


CURVE_PANELS = (("E(x) AUC against QCD", ("energy_auc_top", "energy_auc_h_hh_4b")),
                ("-log p(QCD|x) AUC against QCD", ("class_nll_auc_top", "class_nll_auc_h_hh_4b")),
                ("top-1 accuracy (QCD / W / top)", ("top1",)))


def plot_curves(series: dict[str, dict], path: Path) -> Path:
    """Curves over training, one panel per `CURVE_PANELS` entry (one colour per series, from 20 distinct ones; top
    solid, H dashed; one legend for all panels below them): ``series = {label: curve}`` with a curve
    ``{"step": [...], key: [...]}`` (`ebm_clf.training_curve`), optionally ``key + "_std"`` drawn as a band."""
    colours = matplotlib.colormaps["tab10" if len(series) <= 10 else "tab20"]
    series_colours = [colours(j % colours.N) for j in range(len(series))]
    columns = min(3, len(series))
    legend_rows = -(-len(series) // columns)
    legend_height = 0.3 + 0.2 * legend_rows  # inches
    fig = Figure(figsize=(4.4 * len(CURVE_PANELS), 3.4 + legend_height))
    for i, (title, keys) in enumerate(CURVE_PANELS):
        ax = fig.add_subplot(1, len(CURVE_PANELS), i + 1)
        for colour, curve in zip(series_colours, series.values()):
            for key in keys:
                if not curve.get(key):
                    continue
                steps, mean = np.asarray(curve["step"]), np.asarray(curve[key])
                ax.plot(steps, mean, marker="o", ms=3, color=colour, ls="--" if key.endswith("h_hh_4b") else "-")
                if curve.get(key + "_std"):
                    std = np.asarray(curve[key + "_std"])
                    ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2)
        if i < 2:
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("training iteration")
        ax.set_title(title + (" (top solid, H dashed)" if len(keys) > 1 else ""), fontsize=9)
    handles = [Line2D([], [], color=colour, marker="o", ms=3) for colour in series_colours]
    fig.legend(handles, list(series), loc="lower center", ncol=columns, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    return save_figure(fig, path)


def write_seed_report(run_dir: Path, results: dict, *, rows: list[dict], curve: dict, **plot_inputs) -> None:
    """``curve.json`` (the curves over training), ``plots/*.png`` and ``report.md`` of one seed; ``rows``: its
    ``metrics.jsonl`` rows (training curves)."""
    write_seed_plots(run_dir / "plots", results, rows=rows, **plot_inputs)
    atomic_write_text(run_dir / "curve.json", json.dumps(curve, indent=1))
    if curve["step"]:
        plot_curves({f"seed {results['seed']}": curve}, run_dir / "plots" / "curves.png")
    lines = [f"# EBM-CLF, variant {results['variant']}, seed {results['seed']} (step {results['step']})", ""]
    lines += _seed_lines(flatten(results))
    lines += ["", "Plots: " + ", ".join(f"[{p.stem}](plots/{p.name})" for p in sorted((run_dir / "plots").glob("*.png")))]
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")


def write_summary(out_dir: Path, config, per_seed: list[dict], *, record: dict | None = None,
                  seed_dirs: list[Path] | None = None) -> dict:
    """Mean ± std over seeds (sample std) of every number: ``summary.json`` and ``report.md``."""
    flats = [{k: v for k, v in flatten(r).items() if k not in ("seed", "step")} for r in per_seed]
    keys = sorted(set.intersection(*(set(f) for f in flats)))
    stats = summarise_over_seeds([{k: f[k] for k in keys} for f in flats], ddof=1 if len(flats) > 1 else 0)
    summary = {"variant": per_seed[0]["variant"], "num_seeds": len(per_seed), "seeds": [r["seed"] for r in per_seed],
               "steps": [r["step"] for r in per_seed],
               "mean": {k: float(s.value) for k, s in stats.items()}, "std": {k: float(s.error) for k, s in stats.items()},
               "config": dataclasses.asdict(config)}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=list))
    lines = [f"# EBM-CLF: preset `{config.name}`, variant `{summary['variant']}`, {len(per_seed)} seed(s)", "",
             _setup_line(config), "", "| quantity | mean ± std |", "| --- | ---: |"]
    lines += [f"| {k} | {_fmt(summary['mean'][k])} ± {_fmt(summary['std'][k])} |" for k in keys
              if "random_jsd" not in k]
    seed_dirs = seed_dirs or [out_dir / f"seed_{s}" for s in summary["seeds"]]
    lines += ["", "## Provenance", ""] + provenance_lines(record)
    lines += ["", seed_report_links(summary["seeds"], seed_dirs, out_dir)]
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return summary


def write_report(out_dir: Path, config, per_seed: list[dict], *, record: dict | None = None,
                 seed_dirs: list[Path]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_summary(out_dir, config, per_seed, record=record, seed_dirs=seed_dirs)


def _setup_line(config) -> str:
    m, cd, data = config.model, config.cd, config.data
    return (f"Model: {m.num_layers} x {m.d_model} transformer, {m.num_heads} heads, ff {m.ff_dim}, {m.num_classes} "
            f"logits; {config.run.num_steps} iterations of batch {cd.batch_size}, K = {cd.num_langevin_steps} "
            f"Langevin steps (cd_weight {cd.cd_weight:g}, κ = {cd.classifier_weight:g}, class-conditional chains "
            f"{'on' if cd.class_conditional else 'off'}); {data.num_train_jets} training jets per class "
            f"(QCD / W / top, R = {data.jet_radius}), {data.num_test_jets} test jets per class.")


def _cell(summary: dict | None, key: str) -> str:
    if summary is None or key not in summary["mean"]:
        return ""
    std = summary["std"][key] if summary["num_seeds"] > 1 else float("nan")
    return f"{summary['mean'][key]:.3f}" + (f" ± {std:.3f}" if np.isfinite(std) else "")


def comparison_checks(summaries: dict[str, dict], curves: dict[str, dict] | None = None) -> list[tuple[str, str, str]]:
    """The CPU preset's checks on the means: ``(check, measured, "met" / "not met" / "not run")``;
    ``curves``: mean curves over training per variant (`mean_curve`), for the turnaround check."""
    mean = {v: s["mean"] for v, s in summaries.items()}
    curves = curves or {}

    def status(needed, condition) -> str:
        return "not run" if not all(v in mean for v in needed) else ("met" if condition() else "not met")

    def values(variants, key) -> str:
        return " vs ".join(f"{mean[v][key]:.3f}" for v in variants if v in mean and key in mean[v])

    energy_top, energy_h = "anomaly_energy.auc_top", "anomaly_energy.auc_h_hh_4b"
    kappa1_curve = curves.get("kappa1", {})
    drops = {k: max(kappa1_curve[k]) - kappa1_curve[k][-1] for k in ("energy_auc_top", "energy_auc_h_hh_4b")
             if kappa1_curve.get(k)}
    rows = [("κ = 1 top-1 accuracy within 0.05 of the supervised baseline (paper: 0.021 below ParticleNet)",
             values(("kappa1", "baseline"), "classification.top1"),
             status(("kappa1", "baseline"), lambda: mean["kappa1"]["classification.top1"]
                    >= mean["baseline"]["classification.top1"] - 0.05)),
            ("κ = 1 E(x) AUC >= 0.65 (top) and >= 0.75 (H) at the last iteration (paper 0.703 / 0.815)",
             f"{values(('kappa1',), energy_top)} / {values(('kappa1',), energy_h)}",
             status(("kappa1",), lambda: mean["kappa1"][energy_top] >= 0.65 and mean["kappa1"][energy_h] >= 0.75)),
            ("κ = 1 E(x) AUC curves (mean over seeds) end within 0.03 of their maximum: no turnaround",
             ", ".join(f"{k.removeprefix('energy_auc_')} drop {d:.3f}" for k, d in drops.items()),
             "not run" if not drops else ("met" if max(drops.values()) <= 0.03 else "not met")),
            ("marginal training chains (κ = 1) give a higher E(x) AUC for H than class-conditional ones (κ = 1 cc)",
             values(("kappa1", "kappa1_cc"), energy_h),
             status(("kappa1", "kappa1_cc"), lambda: mean["kappa1"][energy_h] > mean["kappa1_cc"][energy_h])),
            ("hybrid (κ = 1) E(x) AUC for H not below the plain EBM's (same jets, iterations, backbone)",
             values(("kappa1", "ebm"), energy_h),
             status(("kappa1", "ebm"), lambda: mean["kappa1"][energy_h] >= mean["ebm"][energy_h])),
            ("top-1 accuracy ordered κ = 1 > 0.5 > 0.1 (paper's Table 6)",
             " > ".join(f"{mean[v]['classification.top1']:.3f}" for v in ("kappa1", "kappa0.5", "kappa0.1")
                        if v in mean),
             status(("kappa1", "kappa0.5", "kappa0.1"), lambda: mean["kappa1"]["classification.top1"]
                    > mean["kappa0.5"]["classification.top1"] > mean["kappa0.1"]["classification.top1"]))]
    return rows


def mean_curve(curves: list[dict]) -> dict:
    """Mean and std (``key + "_std"``, sample std) over seeds of curves over training, at the steps all share."""
    steps = sorted(set.intersection(*(set(c["step"]) for c in curves)))
    out = {"step": steps, "num_seeds": len(curves)}
    for key in (k for k in curves[0] if k not in ("step", "num_seeds")):
        stacked = np.array([[c[key][c["step"].index(s)] for s in steps] for c in curves])
        out[key] = stacked.mean(axis=0).tolist()
        out[key + "_std"] = (stacked.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(steps))).tolist()
    return out


def _variant_curves(run_dirs: dict[str, Path], summaries: dict[str, dict]) -> dict[str, dict]:
    """Mean curve over training per variant, from its seeds' ``curve.json`` (variants without any: left out)."""
    out = {}
    for variant, s in summaries.items():
        paths = [run_dirs[variant] / f"seed_{seed}" / "curve.json" for seed in s["seeds"]]
        curves = [json.loads(p.read_text()) for p in paths if p.is_file()]
        if curves and all(c["step"] for c in curves):
            out[variant] = mean_curve(curves)
    return out


CURVE_COLUMNS = ("E(x) AUC top | E(x) AUC H | -log p(QCD\\|x) AUC top | -log p(QCD\\|x) AUC H | top-1",
                 ("energy_auc_top", "energy_auc_h_hh_4b", "class_nll_auc_top", "class_nll_auc_h_hh_4b", "top1"))


def curve_cells(curve: dict, index: int) -> str:
    """The `CURVE_COLUMNS` cells of a mean curve (`mean_curve`) at one point, with ``± std`` for several seeds."""
    return " | ".join(f"{curve[k][index]:.3f}" + (f" ± {curve[k + '_std'][index]:.3f}" if curve["num_seeds"] > 1 else "")
                      for k in CURVE_COLUMNS[1])


def _curve_table(curves: dict[str, dict]) -> list[str]:
    lines = ["## Curves over training (mean ± std over seeds; test jets; ![curves](curves.png))", "",
             f"| model | iteration | {CURVE_COLUMNS[0]} |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant in VARIANT_ORDER:
        curve = curves.get(variant)
        for i, step in enumerate(curve["step"] if curve else []):
            lines.append(f"| {VARIANT_LABELS[variant]} | {step} | {curve_cells(curve, i)} |")
    return lines


def _table6(summaries: dict[str, dict]) -> list[str]:
    lines = ["## Table 6 layout: QCD / W / top classification", "",
             "| model | seeds | top-1 | top-2 | paper top-1 | paper top-2 (paper model) |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for variant in VARIANT_ORDER:
        s = summaries.get(variant)
        if s is None or "classification.top1" not in s["mean"]:
            continue
        paper = PAPER_TABLE6.get(variant)
        lines.append(f"| {VARIANT_LABELS[variant]} | {s['num_seeds']} | {_cell(s, 'classification.top1')} | "
                     f"{_cell(s, 'classification.top2')} | {paper[0] if paper else ''} | "
                     f"{f'{paper[1]} ({paper[2]})' if paper else ''} |")
    lines += ["", "Confusion matrices (mean over seeds; rows: true class, columns: predicted):", ""]
    for variant in VARIANT_ORDER:
        s = summaries.get(variant)
        if s is not None and "classification.top1" in s["mean"]:
            lines.append(f"- {VARIANT_LABELS[variant]}: ![confusion {variant}](confusion_{variant}.png)")
    return lines


def _table3(summaries: dict[str, dict]) -> list[str]:
    lines = ["## Table 3 layout: anomaly detection against QCD (AUC, 1/eps_B at eps_S = 0.2)", "",
             "| model | score | group (the paper's) | AUC top | AUC H | 1/eps_B top | 1/eps_B H | QCD mass JSD after cut keeping 10% "
             "(random-subset q95) | paper AUC top | paper AUC H |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant in VARIANT_ORDER:
        s = summaries.get(variant)
        if s is None:
            continue
        for score, (label, group) in SCORE_LABELS.items():
            key = f"anomaly_{score}"
            if f"{key}.auc_top" not in s["mean"] or (variant == "ebm" and group != "mass-decorrelated"):
                continue  # the plain EBM's logits were never trained to classify
            paper = PAPER_TABLE3.get((variant, score), ("", ""))
            sculpt = f"{_cell(s, key + '.sculpt_jsd_keep0.1')} ({_cell(s, key + '.sculpt_random_jsd_q95_keep0.1')})"
            lines.append(f"| {VARIANT_LABELS[variant]} | {label.replace('|', chr(92) + '|')} | {group} | {_cell(s, key + '.auc_top')} | "
                         f"{_cell(s, key + '.auc_h_hh_4b')} | {_cell(s, key + '.inv_eps_b_top')} | "
                         f"{_cell(s, key + '.inv_eps_b_h_hh_4b')} | {sculpt} | {paper[0]} | {paper[1]} |")
    return lines


def _generation_table(summaries: dict[str, dict]) -> list[str]:
    lines = ["## Generated jets (class \"all\": chains on E(x); per class: chains on E(x, y) of models trained with "
             "class-conditional chains; textbook JSD, 50 bins)", "",
             "| model | class | JSD(pT) | JSD(M) | JSD(M/pT) | W1(M) [GeV] |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for variant in VARIANT_ORDER:
        s = summaries.get(variant)
        if s is None:
            continue
        for name in (*CLASSES, "all"):
            key = f"generated_{name}"
            if f"{key}.jsd_pt" in s["mean"]:
                lines.append(f"| {VARIANT_LABELS[variant]} | {name} | {_cell(s, key + '.jsd_pt')} | "
                             f"{_cell(s, key + '.jsd_mass')} | {_cell(s, key + '.jsd_m_over_pt')} | "
                             f"{_cell(s, key + '.w1_mass')} |")
    return lines


def write_comparison(run_dirs: dict[str, Path], out_dir: Path, *, notes: list[str] = ()) -> dict:
    """Tables 6 and 3 (and generation per class) over the variants' runs ``{variant: run dir}`` (each with a
    ``summary.json``) into ``out_dir/comparison.{md,json}``, with the confusion matrices as PNG and the checks."""
    summaries = {v: json.loads((d / "summary.json").read_text()) for v, d in run_dirs.items()
                 if (d / "summary.json").is_file()}
    if not summaries:
        raise FileNotFoundError(f"no summary.json under {', '.join(map(str, run_dirs.values()))}")
    for variant, s in summaries.items():
        if "classification.top1" in s["mean"]:
            plot_confusion_matrix(confusion_matrix({k.removeprefix("classification."): v for k, v in s["mean"].items()
                                                    if k.startswith("classification.")}),
                                  out_dir / f"confusion_{variant}.png", title=VARIANT_LABELS[variant])
    any_config = next(iter(summaries.values()))["config"]
    curves = _variant_curves(run_dirs, summaries)
    if curves:
        plot_curves({VARIANT_LABELS[v]: curves[v] for v in VARIANT_ORDER if v in curves}, out_dir / "curves.png")
    checks = comparison_checks(summaries, curves)
    lines = ["# EBM-CLF against the supervised baseline and the plain EBM", "",
             f"Preset `{any_config['name']}`. " + ", ".join(
                 f"{v}: {s['num_seeds']} seed(s), {s['steps'][0]} iterations" for v, s in summaries.items()) + ".",
             *notes, "", *_table6(summaries), "", *_table3(summaries), "", *_curve_table(curves), "",
             *_generation_table(summaries), "",
             "## Checks of the CPU preset (means over seeds)", "", "| check | measured | status |", "| --- | --- | --- |",
             *[f"| {c} | {m} | {s} |" for c, m, s in checks]]
    atomic_write_text(out_dir / "comparison.md", "\n".join(lines) + "\n")
    atomic_write_text(out_dir / "comparison.json", json.dumps(
        {"checks": [{"check": c, "measured": m, "status": s} for c, m, s in checks],
         "summaries": {v: {k: s[k] for k in ("num_seeds", "seeds", "steps", "mean", "std")} for v, s in summaries.items()},
         "curves": curves},
        indent=2))
    return summaries
