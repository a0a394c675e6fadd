"""Scores of a generated sample against the test QCD jets, and the per-jet quantities behind them."""
from __future__ import annotations

import numpy as np

from jaxebm.data.pipeline import ConstituentPipeline
from jaxebm.evaluation import generation_quality, jet_observables, selection_distance
from jaxebm.experiments.generation_study.loading import LoadedRun
from jaxebm.experiments.generation_study.settings import FEATURES, HARD_LOG_PT, PT_OVERFLOW, PT_UNDERFLOW
from jaxebm.metrics import wasserstein_1d


def leading_log_pt(raw: np.ndarray, mask: np.ndarray, k: int = 3) -> np.ndarray:
    """``(n, k)`` log pT of the k hardest slots (descending; -inf where a jet has fewer)."""
    log_pt = np.where(mask, raw[..., 0], -np.inf)
    return -np.sort(-log_pt, axis=1)[:, :k]


def stats_of(p4: np.ndarray, raw: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    mask = np.asarray(mask, bool)
    finite = np.all(np.isfinite(p4), axis=(1, 2)) & np.all(np.isfinite(raw), axis=(1, 2))
    obs = jet_observables(np.where(finite[:, None, None], p4, 0.0), mask)
    slot_pt = np.where(mask, np.exp(np.clip(np.nan_to_num(raw[..., 0]), -50, 50)), 0.0)
    return {"p4": p4, "raw": raw, "mask": mask, "finite": finite, "pt": obs["pt"], "mass": obs["mass"],
            "lead": leading_log_pt(raw, mask), "num_hard": np.sum(mask & (raw[..., 0] > HARD_LOG_PT), axis=1),
            "scalar_pt": slot_pt.sum(axis=1), "lead_pt_share": slot_pt.max(axis=1) / np.maximum(slot_pt.sum(axis=1), 1e-9)}


def jet_stats(pipeline: ConstituentPipeline, x: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per-jet quantities of model-space features: four-vectors, raw features, observables, hard slots."""
    return stats_of(pipeline.to_four_vectors(x, mask), pipeline.to_raw_features(x, mask), mask)


def jet_stats_from_four_vectors(p4: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The same from four-vectors in the centred, rotated jet frame (e.g. a run's samples.h5): raw features
    (log pT, eta, phi) read back from them (zeros where ``mask`` is False)."""
    p4 = np.asarray(p4, np.float64)
    pt = np.hypot(p4[..., 1], p4[..., 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.stack([np.log(pt), np.arcsinh(p4[..., 3] / pt), np.arctan2(p4[..., 2], p4[..., 1])], axis=-1)
    raw = np.where(np.asarray(mask, bool)[..., None], raw, 0.0)
    return stats_of(p4, raw, mask)


def score(run: LoadedRun, x: np.ndarray | None, mask: np.ndarray, *, seed: int = 0,
          stats: dict | None = None) -> tuple[dict[str, float], dict]:
    """Every metric of one generated sample (model-space ``x``, model ``mask``, or precomputed ``stats``)
    and its per-jet stats.

    Jets with non-finite features (diverged chains) are dropped from the metrics and counted in
    ``nonfinite_frac``.
    """
    if stats is None:
        stats = jet_stats(run.pipeline, x, mask)
    ok = stats["finite"]
    metrics: dict[str, float] = {"nonfinite_frac": float(1 - ok.mean())}
    if ok.sum() < 2:
        return metrics, stats
    p4, m = stats["p4"][ok], mask[ok]
    metrics |= generation_quality(run.real_p4, run.real_mask, p4, m, with_jetnet=False)
    metrics["distance"], metrics["distance_err"] = selection_distance(run.real_p4, run.real_mask, p4, m, seed=seed)
    real_slots, gen_slots = run.real_raw[run.real_mask], stats["raw"][ok][m]
    for i, name in enumerate(FEATURES):
        metrics[f"w1_const_{name}"] = wasserstein_1d(real_slots[:, i], gen_slots[:, i])
    pt = stats["pt"][ok]
    metrics["frac_pt_over"] = float(np.mean(pt > PT_OVERFLOW))
    metrics["frac_pt_under"] = float(np.mean(pt < PT_UNDERFLOW))
    metrics["frac_pt_tail"] = float(np.mean(pt > run.tail_pt))
    tail = pt > run.tail_pt
    metrics["lead_log_pt"] = float(stats["lead"][ok][:, 0].mean())
    metrics["num_hard"] = float(stats["num_hard"][ok].mean())
    metrics["lead_log_pt_tail"] = float(stats["lead"][ok][tail, 0].mean()) if tail.any() else float("nan")
    metrics["num_hard_tail"] = float(stats["num_hard"][ok][tail].mean()) if tail.any() else float("nan")
    return metrics, stats


def real_reference(run: LoadedRun) -> dict[str, float]:
    """The same per-jet summaries for the test QCD jets (the targets)."""
    stats = stats_of(run.real_p4, run.real_raw, run.real_mask)
    pt, lead = stats["pt"], stats["lead"]
    return {"num_jets": int(len(pt)), "frac_pt_over": float(np.mean(pt > PT_OVERFLOW)), "tail_pt": run.tail_pt,
            "frac_pt_tail": float(np.mean(pt > run.tail_pt)),
            "frac_pt_under": float(np.mean(pt < PT_UNDERFLOW)), "lead_log_pt": float(lead[:, 0].mean()),
            "second_log_pt": float(lead[:, 1].mean()), "third_log_pt": float(lead[:, 2].mean()),
            "lead_log_pt_q99": float(np.quantile(lead[:, 0], 0.99)), "num_hard": float(stats["num_hard"].mean()),
            "lead_pt_share": float(stats["lead_pt_share"].mean()), "scalar_pt_median": float(np.median(stats["scalar_pt"])),
            "pt_q01_50_99": np.quantile(pt, [0.01, 0.5, 0.99]).tolist()}
