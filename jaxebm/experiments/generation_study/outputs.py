"""The generation study's files: the parts computed from its rows, the plots, ``per_jet.npz``,
``generation_study.json`` and ``generation_study.md`` (each written atomically)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxebm.experiments.generation_study.figures import (PLOT_NAMES, observables_of, plot_observables, plot_quality,
                                                         plot_tails)
from jaxebm.experiments.generation_study.findings import findings
from jaxebm.experiments.generation_study.loading import LoadedRun
from jaxebm.experiments.generation_study.metrics import stats_of
from jaxebm.experiments.generation_study.report import write_markdown
from jaxebm.experiments.generation_study.selection import pick_budget_winners, recommend
from jaxebm.experiments.generation_study.settings import paper_reference
from jaxebm.experiments.generation_study.tails import tail_text
from jaxebm.runs.records import atomic_write_bytes, atomic_write_text

PER_JET_KEYS = ("pt", "mass", "lead", "num_hard", "lead_pt_share", "scalar_pt", "finite")


def to_json(value):
    """``value`` with numpy scalars and arrays as Python numbers and lists, non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    return value


def save_per_jet(path: Path, kept: dict, run: LoadedRun) -> None:
    """Per-jet summaries of every sample (``<setting>.<name>``: pt, mass, hardest three log pT, constituents
    above 100 GeV, the hardest one's share of the scalar pT, scalar pT sum, finite), and ``real.*``."""
    arrays = {}
    for setting, stats in {"real": stats_of(run.real_p4, run.real_raw, run.real_mask), **kept}.items():
        for name in PER_JET_KEYS:
            arrays[f"{setting}.{name}"] = np.asarray(stats[name], bool if name == "finite" else np.float32)
    atomic_write_bytes(path, lambda handle: np.savez_compressed(handle, **arrays))


def _derive(study: dict, notes: Path | None) -> dict | None:
    """Add the parts computed from ``study["rows"]`` (cost unit and estimates, budget winners,
    recommendation, findings, notes, tail tables) in place; returns the recommended row."""
    rows = study["rows"]
    measured = [r["us_per_jet"] / r["evals_per_jet"] for r in rows
                if r.get("evals_per_jet") and np.isfinite(r.get("us_per_jet", np.nan)) and r["us_per_jet"] > 0]
    study["unit_us_per_eval"] = min([study["grad_us_per_jet"]] + measured)
    for r in rows:
        r["est_us_per_jet"] = study["unit_us_per_eval"] * r["evals_per_jet"]
    most = max((r["evals_per_jet"] for r in rows), default=1)
    study["budgets"] = pick_budget_winners(rows, [1.001 * n * study["unit_us_per_eval"] for n in (0, 25, 50, 100, 200, 400)
                                                  if n <= most])
    recommendation, reason = recommend(rows)
    study["recommendation"] = {"setting": recommendation and recommendation["setting"],
                               "generation_config": recommendation and recommendation["generation_config"],
                               "reason": reason}
    study["findings"] = findings(rows)
    if notes is not None:
        study["notes"] = notes.read_text().strip()
    study["tail_text"] = tail_text(study["tails"])
    return recommendation


def _observable_samples(out: Path, labels: dict[str, str], kept: dict | None,
                        run: LoadedRun | None) -> tuple[dict, dict[str, dict]]:
    """`observables_of` the real jets and of each setting in ``labels`` (``{setting: label}``), from the
    per-jet stats ``kept`` or, without them, from the earlier study's ``out/per_jet.npz``."""
    if kept is not None:
        real = observables_of(stats_of(run.real_p4, run.real_raw, run.real_mask))
        return real, {label: observables_of(kept[s_]) for s_, label in labels.items()}
    with np.load(out / "per_jet.npz") as arrays:
        def sample(prefix):
            return observables_of({k: arrays[f"{prefix}.{k}"] for k in ("pt", "mass", "lead", "finite")})
        return sample("real"), {label: sample(s_) for s_, label in labels.items()}


def _plots(study: dict, out: Path, recommended: str | None, kept: dict | None, run: LoadedRun | None) -> list[str]:
    """Draw the plots (and, with ``kept``, write per_jet.npz); remove stale plots of an earlier study in
    ``out``; returns the file names of the plots."""
    rows = study["rows"]
    dpi = 50 if study.get("quick") else 110
    plots = [plot_quality(rows, out / "quality_vs_evals.png", "evals_per_jet", "energy-gradient evaluations per jet",
                          dpi).name,
             plot_quality(rows, out / "quality_vs_time.png", "us_per_jet", "measured wall time per jet [us]",
                          dpi).name]
    paper_setting = paper_reference(rows)
    chosen = [s_ for s_ in (paper_setting, recommended) if s_]
    labels = {s_: f"{'paper' if s_ == paper_setting else 'recommended'} ({s_})" for s_ in dict.fromkeys(chosen)}
    real, samples = _observable_samples(out, labels, kept, run)
    if samples:
        plots += plot_observables(real, samples, out, study["real"]["tail_pt"], dpi)
    if kept is None:
        plots += [name for name in study.get("plots", []) if name == "tails.png"]
    else:
        if paper_setting:
            plots.append(plot_tails(run, kept[paper_setting], out / "tails.png", paper_setting, dpi).name)
        save_per_jet(out / "per_jet.npz", kept, run)
    for stale in set(PLOT_NAMES) - set(plots):  # left over from an earlier study in the same directory
        (out / stale).unlink(missing_ok=True)
    return plots


def finish(study: dict, out: Path, notes: Path | None = None, kept: dict | None = None,
           run: LoadedRun | None = None) -> dict:
    """The parts computed from the rows (budgets, recommendation, findings, tail tables), the plots and
    the files. Without ``kept`` / ``run`` (``--report-only``) the observables plots are redrawn from the
    earlier study's per_jet.npz, and its tails plot and per_jet.npz are left as they are."""
    recommendation = _derive(study, notes)
    out.mkdir(parents=True, exist_ok=True)
    study["plots"] = _plots(study, out, recommendation and recommendation["setting"], kept, run)
    study = to_json(study)
    atomic_write_text(out / "generation_study.json", json.dumps(study, indent=2))
    write_markdown(out / "generation_study.md", study)
    return study
