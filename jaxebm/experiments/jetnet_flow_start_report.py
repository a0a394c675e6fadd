"""The ``ebm_flow_start`` trade-off curve: W1M, W1P and FPD against gradient evaluations per jet.

Per seed (`write_seed_curve`): the curve `jaxebm.experiments.jetnet_bench_eval.flow_start_curve` computed
(the flow-start chain at each K of ``ebm_flow_start.sweep`` from each proposal row's jets, beside the seed's
200-step EBM and truth rows), written to ``flow_start_curve.json`` and ``plots/flow_start_curve.png``. Over
seeds (`write_summary_curve`): mean +- std per K, the same two files in the run directory and a table for
``report.md``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxebm.plots import save_figure
from jaxebm.runs.records import atomic_write_json

__all__ = ["CURVE_COLUMNS", "plot_curve", "summarise_curves", "write_seed_curve", "write_summary_curve"]

CURVE_COLUMNS = (("w1m", "W1M", 1e3), ("w1p", "W1P", 1e3), ("fpd", "FPD", 1e3))  # (key, label, factor shown)


def write_seed_curve(seed_dir: Path, curve: dict) -> None:
    """``flow_start_curve.json`` and ``plots/flow_start_curve.png`` of one seed's curve
    (`jetnet_bench_eval.flow_start_curve`)."""
    atomic_write_json(seed_dir / "flow_start_curve.json", curve, sort_keys=False)
    plot_curve(curve, seed_dir / "plots" / "flow_start_curve.png")


def _mean_std(rows: list[dict]) -> dict[str, list[float]]:
    """``[mean, std]`` over seeds of each metric's value."""
    return {key: [float(np.mean([r[key][0] for r in rows])), float(np.std([r[key][0] for r in rows]))]
            for key, _, _ in CURVE_COLUMNS}


def summarise_curves(curves: list[dict]) -> dict:
    """Per-seed curves -> the same layout with ``[mean, std over seeds]`` per metric (std 0 for one seed)."""
    summary = {name: [{"grad_evals_per_jet": point["grad_evals_per_jet"],
                       **_mean_std([c["curves"][name][i] for c in curves])} for i, point in enumerate(points)]
               for name, points in curves[0]["curves"].items()}
    return {"num_seeds": len(curves), "curves": summary,
            "ebm": {"grad_evals_per_jet": curves[0]["ebm"]["grad_evals_per_jet"],
                    **_mean_std([c["ebm"] for c in curves])},
            "truth": _mean_std([c["truth"] for c in curves])}


def plot_curve(curve: dict, path: Path) -> None:
    """Three panels (W1M, W1P, FPD x1e-3, log scale) against gradient evaluations per jet (symlog): one
    flow-start curve per proposal with its error bars, the 200-step EBM as a star, the truth floor dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_COLUMNS), figsize=(4.2 * len(CURVE_COLUMNS), 3.6))
    for axis, (key, label, factor) in zip(axes, CURVE_COLUMNS):
        lowest = np.inf
        for name, points in curve["curves"].items():
            values = np.array([p[key] for p in points]) * factor
            axis.errorbar([p["grad_evals_per_jet"] for p in points], values[:, 0], yerr=values[:, 1], marker="o",
                          capsize=3, label=f"EBM from {name} jets")
            lowest = min(lowest, values[:, 0].min())
        ebm = np.array(curve["ebm"][key]) * factor
        axis.errorbar([curve["ebm"]["grad_evals_per_jet"]], [ebm[0]], yerr=[ebm[1]], marker="*", ms=12,
                      color="C3", capsize=3, label="EBM from noise")
        truth = curve["truth"][key][0] * factor
        if truth > 0:
            axis.axhline(truth, color="0.5", ls="--", label="truth floor")
        axis.set_xscale("symlog", linthresh=10)
        ticks = sorted({p["grad_evals_per_jet"] for points in curve["curves"].values() for p in points}
                       | {curve["ebm"]["grad_evals_per_jet"]})
        axis.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        axis.minorticks_off()
        if lowest > 0 and ebm[0] > 0:
            axis.set_yscale("log")
        axis.set_xlabel("gradient evaluations per jet")
        axis.set_ylabel(f"{label} x1e-3")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def _cell(pair: list[float], factor: float) -> str:
    return f"{pair[0] * factor:.3g} ± {pair[1] * factor:.2g}"


def write_summary_curve(out_dir: Path, per_seed: list[dict]) -> list[str]:
    """The run's curve over the seeds that have one (``flow_start_curve.json``, ``plots/flow_start_curve.png``);
    returns the markdown lines for ``report.md`` (none when no seed has a curve)."""
    curves = [s["flow_start_curve"] for s in per_seed if "flow_start_curve" in s]
    if not curves:
        return []
    summary = summarise_curves(curves)
    atomic_write_json(out_dir / "flow_start_curve.json", summary, sort_keys=False)
    plot_curve(summary, out_dir / "plots" / "flow_start_curve.png")
    header = ("| chain | gradient evaluations per jet | "
              + " | ".join(f"{label} x1e-3" for _, label, _ in CURVE_COLUMNS) + " |")
    rows = [f"| from {name} jets | {p['grad_evals_per_jet']} | "
            + " | ".join(_cell(p[k], f) for k, _, f in CURVE_COLUMNS) + " |"
            for name, points in summary["curves"].items() for p in points]
    ebm = summary["ebm"]
    rows.append(f"| from noise (EBM row) | {ebm['grad_evals_per_jet']} | "
                + " | ".join(_cell(ebm[k], f) for k, _, f in CURVE_COLUMNS) + " |")
    return ["EBM chains started from the jets of a proposal row (ebm_flow_start), quality against gradient "
            f"evaluations per jet ({summary['num_seeds']} seeds, mean ± std; "
            "`flow_start_curve.json`, `plots/flow_start_curve.png`):", "", header,
            "|" + "---|" * (len(CURVE_COLUMNS) + 2), *rows, ""]
