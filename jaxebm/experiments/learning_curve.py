"""Learning curves of EBM runs (`jaxebm.experiments.ebm`): validation distances against CD iterations.

Each seed directory logs ``eval`` rows to its ``metrics.jsonl``: the checkpoint-selection distance
``D`` (sum of W1 of jet pT, mass and M/pT over the real spread, with its bootstrap error) and the JSDs
of pT, M and M/pT between validation-length chains and validation QCD jets. The figure shows ``D`` with
its error bars and the selected checkpoint of each run; the table lists, per run, the checkpoints
whose ``D`` is within one error of the selected one (the selection cannot tell them apart). The runs
of one or more variants (preset, length, size, data) go on one figure, next to the noise-initialised
chains and the truth-vs-truth floor from the runs' ``results.json``, with a table of the curve and of
each variant's test-set results at its selected checkpoint:

    write_learning_curve(parse_variants(["cpu=runs/ebm_jets/cpu/seed_*"]), Path("runs/curves"))
    python -m experiments.ebm_learning_curve "cpu=runs/ebm_jets/cpu/seed_*" \\
        "cpu, 2400 iterations=runs/ebm_jets/cpu_long/seed_0" --out runs/ebm_jets/cpu

A run is made longer with ``--extend --set run.num_steps=<more>``: training resumes from its last
checkpoint. Writes ``<out>/learning_curve.png``, ``<out>/learning_curve.json`` and
``<out>/learning_curve.md``.
"""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jaxebm.plots import save_figure
from jaxebm.runs.records import atomic_write_text
from jaxebm.train.monitor import read_metrics

CURVE_KEYS = {"val_distance": "selection distance D", "val_jsd_pt": "JSD(pT)", "val_jsd_mass": "JSD(M)",
              "val_jsd_m_over_pt": "JSD(M/pT)"}
ERROR_KEYS = {"val_distance": "val_distance_err"}
LEVEL_SECTIONS = {"noise_init": "noise-initialised chains", "truth_vs_truth": "truth vs truth"}
FINAL_KEYS = {  # results.json entries of the test-set evaluation at the selected checkpoint
    "best_step": "checkpoint", "generated.jsd_pt": "JSD(pT)", "generated.jsd_mass": "JSD(M)",
    "generated.jsd_m_over_pt": "JSD(M/pT)", "anomaly_energy.auc_top": "AUC top, E",
    "anomaly_energy.auc_h_hh_4b": "AUC H, E", "anomaly_score_norm.auc_top": "AUC top, ‖grad E‖",
    "anomaly_score_norm.auc_h_hh_4b": "AUC H, ‖grad E‖",
}


def read_curve(run_dir: Path) -> dict[str, list[float]]:
    """``{"step": [...], "val_jsd_pt": [...], ...}`` from the eval rows of ``run_dir/metrics.jsonl``.

    A step evaluated twice (a resumed run repeats its last evaluation) keeps its latest value.
    """
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (not an ebm_jets seed directory?)")
    rows = {int(r["step"]): r for r in read_metrics(path) if r.get("event") == "eval"}
    if not rows:
        raise ValueError(f"{path}: no validation ('eval') rows")
    steps = sorted(rows)
    keys = list(CURVE_KEYS) + list(ERROR_KEYS.values())
    return {"step": steps, **{k: [float(rows[s].get(k, np.nan)) for s in steps] for k in keys}}


def read_results(run_dirs: list[Path]) -> list[dict]:
    """The ``results.json`` of each run that has finished (has one)."""
    return [json.loads((d / "results.json").read_text()) for d in run_dirs if (d / "results.json").exists()]


def mean_levels(results: list[dict]) -> dict[str, dict[str, float]]:
    """Mean JSDs of the noise-initialised chains and of truth vs truth over ``results``."""
    return {section: {k: float(np.mean([r[section].get(k.removeprefix("val_"), np.nan) for r in results]))
                      for k in CURVE_KEYS}
            for section in LEVEL_SECTIONS if results}


def final_values(results: list[dict]) -> dict[str, list[float]]:
    """``{key: [value per run]}`` of ``FINAL_KEYS`` over ``results``."""
    def lookup(result: dict, key: str) -> float:
        section, _, name = key.partition(".")
        return float(result[section][name] if name else result[section])

    return {key: [lookup(r, key) for r in results] for key in FINAL_KEYS}


def parse_variants(specs: list[str]) -> dict[str, list[Path]]:
    """``["label=glob", ...]`` -> ``{label: [run directories]}``; each glob must match a directory."""
    variants: dict[str, list[Path]] = {}
    for spec in specs:
        label, sep, pattern = spec.partition("=")
        if not sep or not label or not pattern:
            raise ValueError(f"variant {spec!r}: expected LABEL=DIRECTORY_GLOB")
        dirs = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
        if not dirs:
            raise FileNotFoundError(f"variant {label!r}: no directory matches {pattern!r}")
        variants.setdefault(label, []).extend(dirs)
    return variants


def plot_learning_curves(curves: dict[str, dict[str, dict]], levels: dict[str, dict[str, float]], path: Path) -> None:
    """One panel per JSD (log scale): a line per run, coloured by variant, and the reference levels."""
    fig = Figure(figsize=(4.4 * len(CURVE_KEYS), 3.4))
    colours = [f"C{i}" for i in range(10)]
    for panel, (key, label) in enumerate(CURVE_KEYS.items()):
        ax = fig.add_subplot(1, len(CURVE_KEYS), panel + 1)
        for colour, (variant, runs) in zip(colours, curves.items()):
            for i, curve in enumerate(runs.values()):
                ax.errorbar(curve["step"], curve[key], yerr=curve.get(ERROR_KEYS.get(key, ""), None), fmt="o-", ms=3,
                            capsize=2, color=colour, label=variant if i == 0 else None)
                if key in ERROR_KEYS:
                    best = int(np.nanargmin(curve[key]))
                    ax.plot(curve["step"][best], curve[key][best], "*", ms=11, color=colour)
        if "noise_init" in levels:
            ax.axhline(levels["noise_init"][key], color="k", ls="--", lw=1, label="noise-initialised chains")
            ax.axhline(levels["noise_init"][key] / 10, color="k", ls=":", lw=1, label="target: noise / 10")
        if "truth_vs_truth" in levels:
            ax.axhline(levels["truth_vs_truth"][key], color="grey", ls="-.", lw=1, label="truth vs truth")
        ax.set(yscale="log", xlabel="CD iteration", ylabel=f"validation {label}")
        if panel == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def curve_table(curves: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown rows: per variant and evaluated step, the mean ± std over its runs of each JSD."""
    lines = ["| variant | iteration | runs | " + " | ".join(CURVE_KEYS.values()) + " |",
             "| --- | ---: | ---: |" + " ---: |" * len(CURVE_KEYS)]
    for variant, runs in curves.items():
        steps = sorted({s for curve in runs.values() for s in curve["step"]})
        for step in steps:
            values = {k: [c[k][c["step"].index(step)] for c in runs.values() if step in c["step"]] for k in CURVE_KEYS}
            cells = [f"{np.mean(v):.3g} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.2g}" for v in values.values()]
            lines.append(f"| {variant} | {step} | {len(values['val_distance'])} | " + " | ".join(cells) + " |")
    return lines


def selection_table(curves: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown rows: per run, the selected checkpoint, its ``D ± error`` and the checkpoints within one
    error of it (statistically as good)."""
    lines = ["| variant | run | selected | D ± error | within one error of the selected |", "| --- | --- | ---: | ---: | --- |"]
    for variant, runs in curves.items():
        for run_dir, curve in runs.items():
            values, errors = np.asarray(curve["val_distance"]), np.asarray(curve["val_distance_err"])
            if np.all(np.isnan(values)):
                continue
            best = int(np.nanargmin(values))
            ties = [str(s) for s, v in zip(curve["step"], values) if v <= values[best] + errors[best]]
            lines.append(f"| {variant} | {Path(run_dir).name} | {curve['step'][best]} | "
                         f"{values[best]:.3g} ± {errors[best]:.2g} | {', '.join(ties)} |")
    return lines


def final_table(finals: dict[str, dict[str, list[float]]]) -> list[str]:
    """Markdown rows: per variant, the mean ± std over its runs of the test-set results."""
    lines = ["| variant | runs | " + " | ".join(FINAL_KEYS.values()) + " |",
             "| --- | ---: |" + " ---: |" * len(FINAL_KEYS)]
    for variant, values in finals.items():
        cells = [f"{np.mean(v):.0f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.0f}" if key == "best_step"
                 else f"{np.mean(v):.3g} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.2g}" for key, v in values.items()]
        lines.append(f"| {variant} | {len(values['best_step'])} | " + " | ".join(cells) + " |")
    return lines


def write_learning_curve(variants: dict[str, list[Path]], out_dir: Path) -> dict:
    """Figure, JSON and markdown of the learning curves of ``variants``; returns the JSON content."""
    curves = {label: {str(d): read_curve(d) for d in dirs} for label, dirs in variants.items()}
    results = {label: read_results(dirs) for label, dirs in variants.items()}
    levels = mean_levels([r for variant_results in results.values() for r in variant_results])
    plot_learning_curves(curves, levels, out_dir / "learning_curve.png")
    finals = {label: final_values(variant_results) for label, variant_results in results.items() if variant_results}
    content = {"curves": curves, "levels": levels, "final": finals}
    lines = ["# Learning curves: validation distances against CD iterations", "",
             "Validation chains are the generation chains cut to `run.val_chain_steps` steps, on validation QCD jets.", ""]
    lines += ["Reference levels (mean over runs): " + "; ".join(
        f"{LEVEL_SECTIONS[s]} " + ", ".join(f"{CURVE_KEYS[k]} {v:.3g}" for k, v in lv.items()) for s, lv in levels.items()),
        ""] if levels else []
    lines += curve_table(curves) + ["", "![learning curves](learning_curve.png)", "",
                                    "## Checkpoint selection and its uncertainty", ""] + selection_table(curves) + [""]
    if finals:
        lines += ["## Test sets at the selected checkpoint", "",
                  "Generation: 200-step chains vs test QCD; anomaly AUCs on the test QCD, top and H -> hh -> 4b jets.", ""]
        lines += final_table(finals)
    atomic_write_text(out_dir / "learning_curve.json", json.dumps(content, indent=2))
    atomic_write_text(out_dir / "learning_curve.md", "\n".join(lines) + "\n")
    return content
