"""The generation study's figures: quality against cost, observables of chosen settings, the pT tails.

Every figure is written atomically by `jaxebm.plots.save_figure`.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from jaxebm.experiments.generation_study.loading import LoadedRun
from jaxebm.experiments.generation_study.settings import PT_OVERFLOW, PT_UNDERFLOW
from jaxebm.plots import plot_observable_histograms, save_figure

PLOT_NAMES = ("quality_vs_evals.png", "quality_vs_time.png", "observables_paper.png", "observables_recommended.png",
              "observables_paper_vs_recommended.png", "tails.png")
PLOT_METRICS = (("distance", "selection distance"), ("jsd_pt", "JSD(pT)"), ("jsd_mass", "JSD(M)"),
                ("w1_const_log_pt", "W1 constituent log pT"), ("w1_const_eta", "W1 constituent eta"),
                ("frac_pt_tail", "fraction in the pT plots' top bin"))


def _quality_panel(ax, rows: list[dict], metric: str, label: str, x_key: str, x_label: str) -> None:
    """One metric against ``x_key`` for every family, the run's own samples (a star) and the chain starts."""
    families = [f for f in dict.fromkeys(r["family"] for r in rows) if not f.endswith("_start") and f != "run_samples"]
    start_rows = {r["family"]: r for r in rows if r["family"].endswith("_start")}
    samples = next((r for r in rows if r["family"] == "run_samples"), None)
    palette = matplotlib.colormaps["tab20"]
    for i, fam in enumerate(families):
        pts = sorted((r[x_key], r.get(metric, np.nan)) for r in rows if r["family"] == fam)
        xs, ys = zip(*pts)
        start = next(r["start"] for r in rows if r["family"] == fam)
        sampler = next(r["sampler"] for r in rows if r["family"] == fam)
        ax.plot(xs, ys, marker="s" if sampler == "mala" else "o", ms=3.5, color=palette(i % 20),
                ls="--" if start == "buffer" else "-", label=fam)
    if samples is not None and np.isfinite(samples.get(x_key, np.nan)):
        ax.plot([samples[x_key]], [samples.get(metric, np.nan)], "k*", ms=10, label="run's samples.h5")
    for j, (fam, r) in enumerate(start_rows.items()):
        if np.isfinite(r.get(metric, np.nan)):
            ax.axhline(r[metric], color="grey", ls=["--", ":"][j % 2], lw=1, label=f"{fam} (0 steps)")
    ax.set_xscale("log")
    if x_key == "evals_per_jet":
        ticks = sorted({r["evals_per_jet"] for r in rows if r["evals_per_jet"]})
        ax.set_xticks([t for t in ticks if t in (25, 50, 100, 200, 400)] or ticks)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel(x_label)
    ax.set_ylabel(label)
    if metric != "frac_pt_tail":
        ax.set_yscale("log")


def plot_quality(rows: list[dict], path: Path, x_key: str, x_label: str, dpi: int = 110) -> Path:
    """Each `PLOT_METRICS` panel against ``x_key`` of the rows (evaluations or measured time per jet)."""
    fig = Figure(figsize=(15, 9))
    axes = fig.subplots(2, 3).ravel()
    for ax, (metric, label) in zip(axes, PLOT_METRICS):
        _quality_panel(ax, rows, metric, label, x_key, x_label)
    axes[0].legend(fontsize="x-small", ncol=2)
    fig.suptitle("dashed: chains from the replay buffer; squares: MALA; grey lines: the chain starts (0 steps)",
                 fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def observables_of(per_jet: dict) -> dict[str, np.ndarray]:
    """Jet pT, mass, M/pT and the hardest constituent's log pT of the finite jets of a sample, from its
    per-jet stats or the arrays of per_jet.npz (keys pt, mass, lead, finite)."""
    ok = np.asarray(per_jet["finite"], bool)
    pt, mass = np.asarray(per_jet["pt"], np.float64)[ok], np.asarray(per_jet["mass"], np.float64)[ok]
    return {"pt": pt, "mass": mass, "m_over_pt": np.where(pt > 0, mass / np.where(pt > 0, pt, 1.0), 0.0),
            "lead": np.asarray(per_jet["lead"], np.float64)[ok][:, 0]}


OVERLAY_LABELS = {"pt": "jet pT [GeV]", "mass": "jet mass [GeV]", "m_over_pt": "M / pT",
                  "lead": "hardest constituent log(pT / GeV)"}


def _overlay(real: dict, samples: dict[str, dict], tail_pt: float) -> Figure:
    """Every sample over the real jets per observable; the pT panel marks 400 and 800 GeV and ``tail_pt``."""
    fig = Figure(figsize=(16, 4))
    axes = fig.subplots(1, 4)
    for ax, key in zip(axes, OVERLAY_LABELS):
        lo, hi = np.quantile(real[key], [0.001, 0.999])
        if key == "pt":
            lo, hi = min(lo, 300.0), max(hi, 1000.0)
        edges = np.linspace(lo, hi, 51)
        ax.hist(np.clip(real[key], lo, hi), edges, density=True, histtype="stepfilled", color="lightgrey",
                label="real (test QCD)")
        for i, (name, obs) in enumerate(samples.items()):
            ax.hist(np.clip(obs[key], lo, hi), edges, density=True, histtype="step", lw=1.5, color=f"C{i}",
                    label=name)
        if key == "pt":
            for edge, style in ((PT_UNDERFLOW, ":"), (PT_OVERFLOW, ":"), (tail_pt, "--")):
                ax.axvline(edge, color="k", ls=style, lw=0.8)
        ax.set_xlabel(OVERLAY_LABELS[key])
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_observables(real: dict, samples: dict[str, dict], out: Path, tail_pt: float, dpi: int = 110) -> list[str]:
    """``observables_<tag>.png`` (real vs each sample, `jaxebm.plots.plot_observable_histograms`) and
    ``observables_paper_vs_recommended.png`` (all of them over the real jets; the pT panel marks 400 and
    800 GeV, the JSD range, and the tail edge). ``real``, ``samples``: `observables_of` dicts."""
    keys = ("pt", "mass", "m_over_pt")
    names = []
    for label, obs in samples.items():
        path = out / f"observables_{label.split(' ')[0]}.png"
        names.append(plot_observable_histograms({k: real[k] for k in keys}, {k: obs[k] for k in keys}, path,
                                                names=("Real", label)).name)
    names.append(save_figure(_overlay(real, samples, tail_pt), out / "observables_paper_vs_recommended.png", dpi).name)
    return names


def plot_tails(run: LoadedRun, stats: dict, path: Path, name: str, dpi: int = 110) -> Path:
    """Mean log pT per slot rank: real jets, generated jets in the pT overflow, the other generated jets."""
    real_sorted = -np.sort(-np.where(run.real_mask, run.real_raw[..., 0], -np.inf), axis=1)
    gen_raw = stats["raw"][stats["finite"]]
    gen_mask = stats["mask"][stats["finite"]]
    gen_sorted = -np.sort(-np.where(gen_mask, gen_raw[..., 0], -np.inf), axis=1)
    over = stats["pt"][stats["finite"]] > run.tail_pt
    edge = f"{run.tail_pt:.0f}"
    fig = Figure(figsize=(11, 4))
    ax, ax2 = fig.subplots(1, 2)
    ranks = np.arange(1, real_sorted.shape[1] + 1)
    for label, values, style in (("real", real_sorted, "k-"), (f"{name}, pT > {edge}", gen_sorted[over], "r-"),
                                 (f"{name}, pT <= {edge}", gen_sorted[~over], "b--")):
        if len(values):
            ax.plot(ranks, np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0), style,
                    label=f"{label} ({len(values)} jets)")
    ax.set_xlabel("slot rank by log pT")
    ax.set_ylabel("mean log(pT / GeV)")
    ax.legend(fontsize="small")
    real_cum = np.cumsum(np.where(np.isfinite(real_sorted), np.exp(real_sorted), 0), axis=1).mean(0)
    for label, values, style in (("real", None, "k-"), (f"{name}, pT > {edge}", gen_sorted[over], "r-"),
                                 (f"{name}, pT <= {edge}", gen_sorted[~over], "b--")):
        cum = real_cum if values is None else (np.cumsum(np.where(np.isfinite(values), np.exp(values), 0), axis=1)
                                               .mean(0) if len(values) else None)
        if cum is not None:
            ax2.plot(ranks, cum, style, label=label)
    ax2.set_xlabel("slot rank by log pT")
    ax2.set_ylabel("mean cumulative scalar pT [GeV]")
    ax2.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path, dpi)
