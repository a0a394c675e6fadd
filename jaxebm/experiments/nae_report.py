"""Plots and reports of the NAE experiment (`jaxebm.experiments.nae`): per seed (energies, ROC, latent
landscape on the sphere, average images, training curves), per run (mean +- std over seeds next to the
paper), and the combined table of both directions and the dark-jet scan (`write_combined`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jaxebm.metrics.tagging import roc_curve
from jaxebm.plots import (plot_average_images, plot_roc_curves, plot_score_distributions, plot_training_curves,
                          save_figure)
from jaxebm.runs.records import atomic_write_text
from jaxebm.train.monitor import read_metrics

__all__ = ["PAPER", "ae_stage_title", "plot_latent_map", "plot_training", "to_lon_lat", "write_combined",
           "write_seed_report", "write_summary"]

# The paper's numbers (seed 002 Fig. 4 table and text; dissertation Table 5.11 for the Aachen dark jets,
# 5 runs): {direction: {"ae"/"nae": (AUC, 1/eps_B at eps_S = 0.2)}}; None where the paper gives none.
PAPER = {
    "tag_top": {"ae": (0.875, 68.0), "nae": (0.914, 80.0)},
    "tag_qcd": {"ae": (0.579, 12.0), "nae": (0.89, 350.0)},
}
PAPER_DARK = {0.5: (0.68, 15.0), 0.3: (0.746, 38.0), 0.2: (0.75, 33.0), 0.1: (0.767, 41.0), 0.01: (0.755, 41.0)}
ROLE_LABELS = {"tag_top": ("QCD (train)", "top"), "tag_qcd": ("top (train)", "QCD"),
               "tag_dark": ("QCD (train)", "dark (Aachen)")}
# ---------------------------------------------------------------------------------------------- latent map


def to_lon_lat(z: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (radians) of unit vectors ``z (..., 3)`` in ``frame``."""
    local = np.asarray(z) @ frame.T
    return np.arctan2(local[..., 1], local[..., 0]), np.arcsin(np.clip(local[..., 2], -1.0, 1.0))


def ae_stage_title(phase1: dict) -> str:
    """Title of the after-AE panel with the collapse-guard numbers of ``phase1`` (`_phase1_summary`)."""
    return (f"after AE pre-training: R = {float(phase1['latent_resultant_length']):.3f}, "
            f"MSE / mean-image MSE = {float(phase1['mse_over_mean_image_mse']):.3f}")


def plot_latent_map(maps: dict[str, dict], latents: dict[str, dict[str, np.ndarray]], labels: tuple[str, str],
                    path: Path, num_points: int = 400) -> Path:
    """Equirectangular maps of log10 H(z), one panel per stage (``{stage: latent_map output}``), with the
    latent chain paths (white) and encoded test jets of both classes (``latents[stage][role]``)."""
    fig = Figure(figsize=(6.2 * len(maps), 3.6), layout="constrained")
    for i, (stage, stage_map) in enumerate(maps.items()):
        ax = fig.add_subplot(1, len(maps), i + 1)
        frame = stage_map["map_frame"]
        image = ax.imshow(np.log10(np.maximum(stage_map["map_energy"], 1e-12)), origin="lower", cmap="viridis",
                          extent=(-180, 180, -90, 90), aspect="auto")
        fig.colorbar(image, ax=ax, label=r"$\log_{10} H(z)$")
        for role, colour, label in (("background", "tab:blue", labels[0]), ("signal", "tab:orange", labels[1])):
            lon, lat = to_lon_lat(latents[stage][role][:num_points], frame)
            ax.scatter(np.degrees(lon), np.degrees(lat), s=3, c=colour, label=label, alpha=0.7)
        lon, lat = np.degrees(to_lon_lat(stage_map["map_paths"], frame))
        for chain in range(lon.shape[1]):
            wraps = np.r_[False, np.abs(np.diff(lon[:, chain])) > 180]  # a path crossing the map's edge
            ax.plot(np.where(wraps, np.nan, lon[:, chain]), lat[:, chain], "w-", lw=0.7, alpha=0.8)
            ax.plot(lon[-1, chain], lat[-1, chain], "wx", ms=4)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
        ax.set_xlabel("longitude [deg]")
        ax.set_ylabel("latitude [deg]")
        ax.set_title(stage)
        ax.legend(loc="lower left", fontsize="x-small", markerscale=3)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- per seed


def write_seed_report(seed_dir: Path, config, results: dict, phase1: dict, tests: dict, energies: dict,
                      figures: dict) -> None:
    """Plots under ``seed_dir/plots`` and ``seed_dir/report.md`` of what evaluation computed: ``results``,
    the phase-1 summary, the test images and NAE energies by role, and ``figures``
    (`jaxebm.experiments.nae_eval.figure_inputs`)."""
    plots = seed_dir / "plots"
    labels = ROLE_LABELS[config.data.direction]
    for stage, stage_energies in (("ae", {r: phase1[f"energy_{r}"] for r in ("background", "signal")}),
                                  ("nae", energies)):
        plot_score_distributions({labels[0]: np.log10(stage_energies["background"]),
                                  labels[1]: np.log10(stage_energies["signal"])},
                                 plots / f"energy_{stage}.png", xlabel=rf"$\log_{{10}} E$ ({stage.upper()})")
    signal_labels = np.r_[np.zeros(len(energies["background"])), np.ones(len(energies["signal"]))]
    plot_roc_curves({f"AE (AUC {results['ae']['auc']:.3f})": roc_curve(
                         signal_labels, np.r_[phase1["energy_background"], phase1["energy_signal"]]),
                     f"NAE (AUC {results['nae']['auc']:.3f})": roc_curve(
                         signal_labels, np.r_[energies["background"], energies["signal"]])}, plots / "roc.png")
    num = config.run.num_plot_images
    if "map" in figures:
        ae_map = {key: phase1[key] for key in ("map_frame", "map_energy", "map_paths")}
        latents_ae = {r: phase1[f"latent_{r}"] for r in ("background", "signal")}
        title = ae_stage_title(phase1)
        plot_latent_map({title: ae_map, "after NAE training": figures["map"]},
                        {title: latents_ae, "after NAE training": figures["latents"]}, labels,
                        plots / "latent_landscape.png")
    plot_average_images({
        f"{labels[0]} input": tests["background"][:num],
        f"{labels[0]} NAE reconstruction": figures["reconstructions"]["background"],
        f"{labels[1]} input": tests["signal"][:num],
        f"{labels[1]} NAE reconstruction": figures["reconstructions"]["signal"],
        f"{labels[0]} AE reconstruction": phase1["recon_mean_background"][None],
        "NAE negative samples": figures["negatives"]}, plots / "images.png")
    plot_training(seed_dir, config.run.ae_steps)
    lines = [f"# NAE seed {results['seed']}: {config.data.direction} (pT^{config.data.pt_power:g})", "",
             "| model | AUC | 1/eps_B(eps_S = 0.2) |", "|---|---|---|"]
    for stage in ("ae", "nae"):
        lines.append(f"| {stage.upper()} | {results[stage]['auc']:.4f} | {results[stage]['inv_eps_b_0.2']:.1f} |")
    lines += ["", f"AE latent mean resultant length R = {results['ae']['latent_resultant_length']:.3f}, MSE / "
                  f"mean-image MSE = {results['ae']['mse_over_mean_image_mse']:.3f}; intensity scale c = "
                  f"{results['intensity_scale']:.4g}; commit {results['git_commit']}.",
              "", f"Selected NAE checkpoint: step {results['selected_step']} (AE phase: {results['ae_steps']} "
                  f"iterations, total {results['num_steps']}); training time {results['timing']['train_seconds']} s.",
              "", "Plots: " + ", ".join(f"plots/{p.name}" for p in sorted(plots.glob("*.png")))]
    atomic_write_text(seed_dir / "report.md", "\n".join(lines) + "\n")


def plot_training(seed_dir: Path, ae_steps: int) -> Path:
    """``plots/training.png``: log10 of the positive (data) and negative (chain) energies, the loss, chain
    acceptances and the parameter-gradient norm against the step; negatives from the NAE phase only
    (``ae_steps`` on)."""
    rows = []
    for row in read_metrics(seed_dir / "metrics.jsonl"):
        if "event" in row or "e_pos" not in row:
            continue
        is_nae = row["step"] > ae_steps
        logs = {"log10 E(x+)": np.log10(row["e_pos"])}
        if is_nae and row["e_neg"] > 0:
            logs["log10 E(x-)"] = np.log10(row["e_neg"])
        rows.append({**row, **logs, "loss": row["loss"]})
    keys = ["log10 E(x+)", "log10 E(x-)", "loss", "z_acceptance", "x_acceptance", "grad_norm"]
    return plot_training_curves(rows, seed_dir / "plots" / "training.png",
                                keys=[k for k in keys if any(k in row for row in rows)])


# ---------------------------------------------------------------------------------------------- per run


def _mean_std(values) -> list[float]:
    """``[mean, sample std]``; the std is NaN for one value or when a value is infinite."""
    values = np.asarray(values, np.float64)
    is_spread = len(values) > 1 and np.all(np.isfinite(values))
    return [float(values.mean()), float(values.std(ddof=1)) if is_spread else float("nan")]


def summarise(per_seed: list[dict]) -> dict:
    """Mean and std over seeds of each stage's AUC and 1/eps_B(0.2), of the AE's collapse-guard numbers
    (latent mean resultant length, MSE over mean-image MSE) and of the training time."""
    summary = {stage: {key: _mean_std([r[stage][key] for r in per_seed]) for key in ("auc", "inv_eps_b_0.2")}
               for stage in ("ae", "nae")}
    for key in ("latent_resultant_length", "mse_over_mean_image_mse"):
        summary["ae"][key] = _mean_std([r["ae"][key] for r in per_seed])
    summary["train_seconds"] = _mean_std([r["timing"]["train_seconds"] for r in per_seed])
    summary["seeds"] = [r["seed"] for r in per_seed]
    return summary


def _paper_for(direction: str, pt_power: float) -> dict:
    if direction == "tag_dark":
        paper = PAPER_DARK.get(round(pt_power, 4))
        return {"ae": None, "nae": paper}
    return PAPER[direction]


def _format(values: list[float], digits: int, num_background: int | None = None) -> str:
    """``mean ± std``; an infinite rejection (no background jet passes the cut in some seed) reads
    ``> N`` with N the number of background test jets, the resolution of the measurement."""
    mean, std = values
    if np.isinf(mean) and num_background is not None:
        return f"> {num_background}"
    return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")


def write_summary(out_dir: Path, config, per_seed: list[dict], *, record=None, seed_dirs=()) -> dict:
    """``summary.json`` and ``report.md`` of a run (one direction / pT power, all seeds)."""
    summary = {"direction": config.data.direction, "pt_power": config.data.pt_power, "preset": config.name,
               "num_test": config.data.num_test,
               **summarise(per_seed), "paper": _paper_for(config.data.direction, config.data.pt_power),
               "per_seed": per_seed}
    atomic_write_text(Path(out_dir) / "summary.json", json.dumps(summary, indent=2))
    paper = summary["paper"]
    lines = [f"# NAE {config.data.direction}, pT^{config.data.pt_power:g}, preset {config.name}, "
             f"seeds {summary['seeds']}", "", "| model | AUC | 1/eps_B(0.2) | paper AUC | paper 1/eps_B |",
             "|---|---|---|---|---|"]
    for stage in ("ae", "nae"):
        ref = paper.get(stage)
        lines.append(f"| {stage.upper()} | {_format(summary[stage]['auc'], 3)} | "
                     f"{_format(summary[stage]['inv_eps_b_0.2'], 1, config.data.num_test)} | "
                     f"{ref[0] if ref else '-'} | "
                     f"{ref[1] if ref else '-'} |")
    lines += ["", f"AE latent mean resultant length R: {_format(summary['ae']['latent_resultant_length'], 3)}; "
                  f"MSE / mean-image MSE: {_format(summary['ae']['mse_over_mean_image_mse'], 3)}.",
              "", f"Training time per seed: {_format(summary['train_seconds'], 0)} s."]
    atomic_write_text(Path(out_dir) / "report.md", "\n".join(lines) + "\n")
    return {**summary, "mean": {s: summary[s] for s in ("ae", "nae")}}


# ---------------------------------------------------------------------------------------------- combined


def _resultant(row: dict) -> str:
    """The AE latent mean resultant length of a results row, '-' for rows from before the collapse guard."""
    values = row["ae"].get("latent_resultant_length")
    return _format(values, 3) if values else "-"


def write_combined(run_dirs: dict[str, Path], out_dir: Path, *, data_summaries: dict | None = None,
                   notes: list[str] = ()) -> dict:
    """The results table of both directions and the dark-jet scan (``run_dirs``: label -> run directory
    holding ``summary.json``), with seed 0's plots copied to ``out_dir/<label>/``."""
    out_dir = Path(out_dir)
    rows = {}
    for label, run_dir in run_dirs.items():
        path = Path(run_dir) / "summary.json"
        if not path.exists():
            continue
        summary = json.loads(path.read_text())
        rows[label] = {key: summary[key] for key in ("direction", "pt_power", "num_test", "ae", "nae", "train_seconds",
                                                     "seeds", "paper")}
        first = sorted(Path(run_dir).glob("seed_*/plots"))
        if first:
            target = out_dir / label
            target.mkdir(parents=True, exist_ok=True)
            for png in first[0].glob("*.png"):
                shutil.copyfile(png, target / png.name)
            shutil.copyfile(first[0].parent / "report.md", target / "seed_report.md")
            for name in ("summary.json", "report.md"):
                shutil.copyfile(Path(run_dir) / name, target / f"run_{name}")
        data_path = Path(run_dir) / "data_summary.json"
        if data_summaries is not None and data_path.exists():
            data_summaries.update(json.loads(data_path.read_text()))
    lines = ["## Top vs QCD, both directions", "",
             "| direction | model | AUC | 1/eps_B(eps_S=0.2) | paper AUC | paper 1/eps_B | AE latent R | seeds "
             "| train s / seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        if row["direction"] == "tag_dark":
            continue
        for stage in ("ae", "nae"):
            ref = row["paper"].get(stage)
            lines.append(f"| {label} | {stage.upper()} | {_format(row[stage]['auc'], 3)} | "
                         f"{_format(row[stage]['inv_eps_b_0.2'], 1, row['num_test'])} | {ref[0] if ref else '-'} | "
                         f"{ref[1] if ref else '-'} | {_resultant(row)} | {len(row['seeds'])} | "
                         f"{row['train_seconds'][0]:.0f} |")
    dark = {label: row for label, row in rows.items() if row["direction"] == "tag_dark"}
    if dark:
        ordered = sorted(dark.values(), key=lambda r: -r["pt_power"])
        lines += ["", "## Dark (Aachen) vs QCD, 150-300 GeV, NAE", "",
                  "| n | " + " | ".join(f"{r['pt_power']:g}" for r in ordered) + " |",
                  "|---|" + "---|" * len(ordered),
                  "| AUC | " + " | ".join(_format(r["nae"]["auc"], 3) for r in ordered) + " |",
                  "| 1/eps_B(0.2) | "
                  + " | ".join(_format(r["nae"]["inv_eps_b_0.2"], 1, r["num_test"]) for r in ordered) + " |",
                  "| AUC, plain AE | " + " | ".join(_format(r["ae"]["auc"], 3) for r in ordered) + " |",
                  "| 1/eps_B(0.2), plain AE | "
                  + " | ".join(_format(r["ae"]["inv_eps_b_0.2"], 1, r["num_test"]) for r in ordered) + " |",
                  "| AE latent R | " + " | ".join(_resultant(r) for r in ordered) + " |",
                  "| paper AUC (Aachen) | " + " | ".join(str((r["paper"]["nae"] or ["-"])[0]) for r in ordered) + " |",
                  "| paper 1/eps_B(0.2) | " + " | ".join(str((r["paper"]["nae"] or ["-", "-"])[1]) for r in ordered)
                  + " |",
                  "| seeds | " + " | ".join(str(len(r["seeds"])) for r in ordered) + " |"]
    if data_summaries:
        lines += ["", "## Jet samples (Pythia 8, anti-kT R = 0.8; quantiles 16 / 50 / 84 %)", "",
                  "| sample | jets | mass [GeV] | constituents | median pT [GeV] |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {d['num_jets']} | {' / '.join(f'{v:g}' for v in d['mass_q16_50_84'])} | "
                  f"{' / '.join(f'{v:g}' for v in d['multiplicity_q16_50_84'])} | {d['pt_median']} |"
                  for name, d in data_summaries.items()]
    for note in notes:
        lines += ["", note]
    combined = {"rows": rows, "data": data_summaries or {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(combined, indent=2))
    atomic_write_text(out_dir / "results.md", "\n".join(lines) + "\n")
    return combined
