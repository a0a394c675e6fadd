"""Figures for reports: every function draws one PNG at ``path`` and returns that path.

Files are written atomically (a temporary file in the same directory renamed over ``path``), so a
failed write never destroys the previous figure.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure``, saved
through the Agg renderer), so no global backend or pyplot state is touched and nothing leaks
between calls. Histograms of real vs generated samples are normalised to unit area; their
error bars and bands are Poisson (``sqrt(count)`` per bin, scaled like the histogram), and the
ratio panel shows generated / real with both samples' uncertainties.
"""

from __future__ import annotations

import math
import os
import pathlib
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxebm.metrics.sculpting import mass_sculpting
from jaxebm.metrics.tagging import RocCurve

__all__ = [
    "OBSERVABLE_LABELS",
    "plot_average_images",
    "plot_constituent_features",
    "plot_mass_sculpting",
    "plot_observable_histograms",
    "plot_roc_curves",
    "plot_score_distributions",
    "plot_training_curves",
]

DPI = 120
OBSERVABLE_LABELS = {
    "pt": r"jet $p_T$ [GeV]",
    "eta": r"jet $\eta$",
    "phi": r"jet $\phi$ [rad]",
    "mass": "jet mass [GeV]",
    "m_over_pt": r"jet $M / p_T$",
    "multiplicity": "number of constituents",
    "tau21": r"$\tau_{21}$",
    "tau32": r"$\tau_{32}$",
    "eta_rel": r"constituent $\eta^{\mathrm{rel}}$",
    "phi_rel": r"constituent $\phi^{\mathrm{rel}}$ [rad]",
    "pt_rel": r"constituent $p_T^{\mathrm{rel}} = p_T / p_T^{\mathrm{jet}}$",
    "log_pt": r"constituent $\log(p_T / \mathrm{GeV})$",
}


def save_figure(fig: Figure, path, dpi: int = DPI) -> pathlib.Path:
    """Write ``fig`` to ``path`` atomically: into a temporary file in the same directory, then renamed
    over ``path``, so a failed write (e.g. a full disk) leaves the previous file intact and no temp file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fig.savefig(temp_path, format=path.suffix[1:].lower() or "png", dpi=dpi, bbox_inches="tight")
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)
    return path


def _plot_edges(real: np.ndarray, num_bins: int) -> np.ndarray:
    """Equal-width bins over the 0.1-99.9% quantile range of the real sample, widened by 10% on
    each side (generated values outside land in the outer bins, so tails stay visible)."""
    low, high = np.quantile(real, [0.001, 0.999])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    margin = 0.1 * (high - low)
    return np.linspace(low - margin, high + margin, num_bins + 1)


def _density_with_errors(values: np.ndarray, edges: np.ndarray):
    """Unit-area histogram and its Poisson error; values outside go to the outer bins."""
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    scale = 1.0 / (len(values) * np.diff(edges))
    return counts * scale, np.sqrt(counts) * scale


def _draw_comparison(top, bottom, real, gen, *, label: str, num_bins: int, names: tuple[str, str]):
    """Main panel (both densities) and ratio panel (gen / real) for one 1-D observable."""
    real = np.asarray(real, np.float64).ravel()
    gen = np.asarray(gen, np.float64).ravel()
    edges = _plot_edges(real, num_bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    real_density, real_error = _density_with_errors(real, edges)
    gen_density, gen_error = _density_with_errors(gen, edges)
    top.stairs(real_density, edges, color="black", label=names[0])
    top.fill_between(
        edges, np.r_[real_density - real_error, 0], np.r_[real_density + real_error, 0],
        step="post", color="grey", alpha=0.35, linewidth=0,
    )  # fmt: skip
    top.stairs(gen_density, edges, color="tab:red", label=names[1])
    top.errorbar(centres, gen_density, yerr=gen_error, fmt="none", ecolor="tab:red", lw=0.8)
    top.set_ylabel("normalised entries")
    top.legend(frameon=False, fontsize="small")
    occupied = real_density > 0
    ratio = np.full_like(real_density, np.nan)
    ratio[occupied] = gen_density[occupied] / real_density[occupied]
    real_rel = np.divide(real_error, real_density, out=np.zeros_like(real_error), where=occupied)
    gen_rel = np.divide(gen_error, gen_density, out=np.zeros_like(gen_error), where=gen_density > 0)
    bottom.fill_between(
        edges, np.r_[1 - real_rel, 1], np.r_[1 + real_rel, 1],
        step="post", color="grey", alpha=0.35, linewidth=0,
    )  # fmt: skip
    bottom.errorbar(centres, ratio, yerr=ratio * gen_rel, fmt="o", ms=2.5, color="tab:red", lw=0.8)
    bottom.axhline(1.0, color="black", lw=0.8)
    bottom.set_ylim(0.5, 1.5)
    bottom.set_ylabel(f"{names[1]} / {names[0]}", fontsize="small")
    bottom.set_xlabel(label)


def _comparison_grid(
    real: Mapping[str, np.ndarray],
    gen: Mapping[str, np.ndarray],
    path,
    *,
    labels: Mapping[str, str] | None,
    num_bins: int,
    names: tuple[str, str],
) -> pathlib.Path:
    keys = [key for key in real if key in gen]
    if not keys:
        raise ValueError("real and gen share no observable names")
    labels = {**OBSERVABLE_LABELS, **(labels or {})}
    num_cols = min(3, len(keys))
    num_rows = math.ceil(len(keys) / num_cols)
    fig = Figure(figsize=(4.2 * num_cols, 4.4 * num_rows))
    cells = fig.add_gridspec(num_rows, num_cols, hspace=0.3, wspace=0.35)
    for i, key in enumerate(keys):
        panels = cells[divmod(i, num_cols)].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.12)
        top = fig.add_subplot(panels[0])
        bottom = fig.add_subplot(panels[1], sharex=top)
        top.tick_params(labelbottom=False)
        _draw_comparison(
            top, bottom, real[key], gen[key],
            label=labels.get(key, key), num_bins=num_bins, names=names,
        )  # fmt: skip
    return save_figure(fig, path)


def plot_observable_histograms(
    real: Mapping[str, np.ndarray],
    gen: Mapping[str, np.ndarray],
    path,
    *,
    labels: Mapping[str, str] | None = None,
    num_bins: int = 40,
    names: tuple[str, str] = ("Real", "Generated"),
) -> pathlib.Path:
    """Real vs generated histograms with ratio panels, one per observable both mappings share.

    Args:
        real, gen: ``{name: (n,) values}``, e.g. ``jet_kinematics`` outputs (GeV for pT, mass).
        path: output PNG.
        labels: axis labels per name (defaults in ``OBSERVABLE_LABELS``, else the name).
        num_bins: equal-width bins over the real sample's 0.1-99.9% range, widened by 10% per side.
        names: legend names of the two samples.
    """
    return _comparison_grid(real, gen, path, labels=labels, num_bins=num_bins, names=names)


def plot_constituent_features(
    real_particles,
    real_mask,
    gen_particles,
    gen_mask,
    path,
    *,
    feature_names: Sequence[str] = ("eta_rel", "phi_rel", "pt_rel"),
    num_bins: int = 40,
    names: tuple[str, str] = ("Real", "Generated"),
) -> pathlib.Path:
    """Histograms of each constituent feature over real (masked) constituents of all jets.

    Args:
        *_particles: ``(n_jets, n_max, n_features)``; *_mask: bool ``(n_jets, n_max)``.
        feature_names: one name per feature (labels from ``OBSERVABLE_LABELS``).
    """
    real = np.asarray(real_particles)[np.asarray(real_mask, bool)]
    gen = np.asarray(gen_particles)[np.asarray(gen_mask, bool)]
    real_map = {name: real[:, k] for k, name in enumerate(feature_names)}
    gen_map = {name: gen[:, k] for k, name in enumerate(feature_names)}
    return _comparison_grid(real_map, gen_map, path, labels=None, num_bins=num_bins, names=names)


def plot_roc_curves(curves: Mapping[str, RocCurve], path) -> pathlib.Path:
    """ROC curves as background rejection ``1/eps_B`` (log) vs signal efficiency ``eps_S``.

    Args:
        curves: ``{legend label: RocCurve}`` (``jaxebm.metrics.roc_curve``); points with
            ``eps_B = 0`` are not drawn. The dashed line is a random classifier, ``1/eps_S``.
    """
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    for label, curve in curves.items():
        eps_s, eps_b = np.asarray(curve[0]), np.asarray(curve[1])
        keep = eps_b > 0
        ax.plot(eps_s[keep], 1.0 / eps_b[keep], label=label)
    grid = np.linspace(0.01, 1.0, 200)
    ax.plot(grid, 1.0 / grid, "k--", lw=0.8, label=r"random ($1/\epsilon_S$)")
    ax.set_yscale("log")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(r"signal efficiency $\epsilon_S$")
    ax.set_ylabel(r"background rejection $1/\epsilon_B$")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def plot_score_distributions(
    scores: Mapping[str, np.ndarray], path, *, xlabel: str = "score", num_bins: int = 50
) -> pathlib.Path:
    """Unit-area histograms of a score per class (``{class name: (n,) scores}``) on shared bins."""
    values = [np.asarray(v, np.float64).ravel() for v in scores.values()]
    edges = np.linspace(min(v.min() for v in values), max(v.max() for v in values), num_bins + 1)
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.add_subplot()
    for label, v in zip(scores, values, strict=True):
        ax.hist(v, bins=edges, density=True, histtype="step", lw=1.4, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("normalised entries")
    ax.legend(frameon=False)
    return save_figure(fig, path)


def plot_mass_sculpting(
    mass,
    score,
    path,
    *,
    background_efficiencies: Sequence[float] = (0.5, 0.1, 0.01),
    num_bins: int = 40,
) -> pathlib.Path:
    """Background jet mass (GeV) before and after score cuts keeping each efficiency.

    The legend gives each cut's JSD to the uncut distribution (``mass_sculpting``).
    """
    result = mass_sculpting(
        mass, score, background_efficiencies=background_efficiencies, num_bins=num_bins
    )
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.add_subplot()
    ax.hist(np.asarray(mass), bins=result.edges, density=True, histtype="stepfilled",
            color="lightgrey", label="no cut")  # fmt: skip
    for cut in result.cuts:
        label = rf"$\epsilon_B$ = {cut.background_efficiency:g} (JSD {cut.jsd:.2g})"
        ax.hist(
            cut.kept_mass, bins=result.edges, density=True, histtype="step", lw=1.4, label=label
        )
    ax.set_xlabel("jet mass [GeV]")
    ax.set_ylabel("normalised entries")
    ax.set_title(
        f"Pearson {result.pearson:.2f}, dCor {result.distance_correlation:.2f}", fontsize=10
    )
    ax.legend(frameon=False, fontsize="small")
    return save_figure(fig, path)


def plot_average_images(
    images: Mapping[str, np.ndarray], path, *, is_log_scale: bool = True
) -> pathlib.Path:
    """Average jet images side by side (``{label: (n, H, W)}``, pixel = pT fraction).

    Axes are pixel indices in (eta, phi); with ``is_log_scale`` the colour is log10 of the
    mean (empty pixels masked).
    """
    fig = Figure(figsize=(4.6 * len(images), 3.8), layout="constrained")
    for i, (label, stack) in enumerate(images.items()):
        ax = fig.add_subplot(1, len(images), i + 1)
        mean = np.asarray(stack, np.float64).mean(axis=0)
        shown = np.ma.masked_less_equal(mean, 0.0) if is_log_scale else mean
        shown = np.ma.log10(shown) if is_log_scale else shown
        artist = ax.imshow(shown, origin="lower", cmap="viridis")
        fig.colorbar(
            artist, ax=ax, label=r"$\log_{10}$ mean pixel" if is_log_scale else "mean pixel"
        )
        ax.set_title(label)
        ax.set_xlabel(r"$\eta$ pixel")
        ax.set_ylabel(r"$\phi$ pixel")
    return save_figure(fig, path)


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def plot_training_curves(
    rows: Sequence[Mapping[str, object]],
    path,
    *,
    keys: Sequence[str] | None = None,
    step_key: str = "step",
) -> pathlib.Path:
    """One panel per logged quantity against the training step (``metrics.jsonl`` rows).

    Args:
        rows: dicts with ``step_key`` and numeric values; rows lacking a key are skipped for
            that key, non-numeric values are ignored.
        keys: quantities to plot (default: every numeric key except ``step_key``).
    """
    if keys is None:
        keys = sorted(
            {k for row in rows for k, v in row.items() if k != step_key and _is_number(v)}
        )
    if not keys:
        raise ValueError("plot_training_curves: no numeric quantities to plot")
    num_cols = min(3, len(keys))
    num_rows = math.ceil(len(keys) / num_cols)
    fig = Figure(figsize=(4.2 * num_cols, 3.0 * num_rows))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(num_rows, num_cols, i + 1)
        points = [
            (row[step_key], row[key])
            for row in rows
            if step_key in row and _is_number(row.get(key))
        ]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, lw=1.0)
        ax.set_xlabel(f"{step_key} (iterations)" if step_key == "step" else step_key)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.subplots_adjust(hspace=0.5, wspace=0.35)
    return save_figure(fig, path)
