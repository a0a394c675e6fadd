"""Evaluation of the JetNet-style benchmark (`jaxebm.experiments.jetnet_bench`): every metric of every
generated sample against the test jets, and the observables its figures show.

Per model (``truth`` = training jets, the floor): W1M, W1P, W1EFP, FPD, KPD (`jaxebm.metrics.jetnet`,
JetNet's protocol with batches scaled down to the sample), coverage and MMD (`jaxebm.metrics.emd`, exact EMD
on pT_rel) and EMD_sum (GeV, the ConVAE paper's: jet mass, E, pT, eta, phi; not for the EBM, whose jets are
relative). FPND is not computed: it needs JetNet's pretrained ParticleNet, which cannot be downloaded here.
The ``ebm_flow_start`` trade-off curve (`flow_start_curve`): W1M, W1P and FPD of the chain at each K of the
sweep from each proposal row's jets, with the same code and seeds as the table.
"""
from __future__ import annotations

import time

import numpy as np

from jaxebm.metrics.emd import coverage_mmd, emd_sum, emd_sum_observables
from jaxebm.metrics.jetnet import JetNetJets, fpd, fpd_kpd_features, jetnet_features, kpd, w1efp, w1m, w1p

__all__ = ["evaluate_samples", "observables"]


def _clean(p4: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Drop jets with non-finite values; give a jet without particles its hardest slot (counted)."""
    p4, mask = np.asarray(p4, np.float64), np.asarray(mask, bool)
    finite = np.isfinite(np.where(mask[..., None], p4, 0.0)).all(axis=(1, 2))
    p4, mask = np.where(mask[..., None], p4, 0.0)[finite], mask[finite]
    empty = ~mask.any(axis=1)
    mask[empty, 0] = True
    p4[empty, 0] = (1.0, 1.0, 0.0, 0.0)
    pt_zero = mask & (np.hypot(p4[..., 1], p4[..., 2]) <= 0)
    mask &= ~pt_zero
    return p4, mask, {"num_dropped_non_finite": int((~finite).sum()), "num_empty": int(empty.sum())}


def evaluate_samples(test, samples: dict, *, seed: int, cov_num_batches: int, cov_batch_size: int) -> dict:
    """Every metric of every sample against the test jets (``(four-vectors, mask)`` pairs).

    Returns ``{"metrics": {row: {metric: [value, error]}}, "sample_info": ..., "evaluation_seconds": ...}``.
    """
    started = time.perf_counter()
    real = jetnet_features(*test)
    real_efps, real_observables = fpd_kpd_features(real), emd_sum_observables(*test)
    metrics, info = {}, {}
    for name, (p4, mask) in samples.items():
        p4, mask, info[name] = _clean(p4, mask)
        gen = jetnet_features(p4, mask)
        gen_efps = fpd_kpd_features(gen)
        cov = coverage_mmd(real, gen, num_batches=cov_num_batches, batch_size=cov_batch_size, seed=seed)
        row = {"w1m": w1m(real, gen, seed=seed), "w1p": w1p(real, gen, seed=seed),
               "w1efp": w1efp(real, gen, seed=seed), "fpd": fpd(real_efps, gen_efps, seed=seed),
               "kpd": kpd(real_efps, gen_efps, seed=seed), "cov": cov.coverage, "mmd": cov.minimum_matching_distance}
        if not name.startswith("ebm"):
            row["emd_sum"] = emd_sum(real_observables, emd_sum_observables(p4, mask))
        metrics[name] = {key: [float(r.value), float(r.error)] for key, r in row.items()}
    return {"metrics": metrics, "sample_info": info, "evaluation_seconds": time.perf_counter() - started}


def observables(p4: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Relative jet mass, particle (eta_rel, phi_rel, pT_rel) of real particles, multiplicity."""
    p4, mask, _ = _clean(p4, mask)
    jets = jetnet_features(p4, mask)
    particles = jets.particles[jets.mask]
    return {"mass": jets.mass, "eta_rel": particles[:, 0], "phi_rel": particles[:, 1], "pt_rel": particles[:, 2],
            "multiplicity": jets.mask.sum(axis=1).astype(np.float64)}


CURVE_METRICS = ("w1m", "w1p", "fpd")


def curve_quality(real: JetNetJets, real_efps: np.ndarray, p4: np.ndarray, mask: np.ndarray,
                  seed: int) -> dict[str, list[float]]:
    """``{w1m, w1p, fpd: [value, error]}`` of one sample (four-vectors ``(n, P, 4)``, mask) against ``real``
    (``real_efps = fpd_kpd_features(real)``), exactly as `evaluate_samples` computes them."""
    p4, mask, _ = _clean(p4, mask)
    gen = jetnet_features(p4, mask)
    row = {"w1m": w1m(real, gen, seed=seed), "w1p": w1p(real, gen, seed=seed),
           "fpd": fpd(real_efps, fpd_kpd_features(gen), seed=seed)}
    return {key: [float(r.value), float(r.error)] for key, r in row.items()}


def flow_start_curve(by_proposal: dict[str, dict[int, tuple]], test: tuple, metrics: dict, grad_evals: dict, *,
                     seed: int) -> dict:
    """One seed's curves from ``by_proposal`` ``{proposal: {K: (four-vectors, mask)}}`` against the test jets
    ``(p4, mask)``; ``metrics`` / ``grad_evals`` are the table's rows (the 200-step ``ebm`` and ``truth`` are
    copied beside the curves). Returns ``{"curves": {proposal: [point, ...]}, "ebm": ..., "truth": ...}``, a
    point ``{"grad_evals_per_jet": K, metric: [value, error]}``."""
    real = jetnet_features(*test)
    real_efps = fpd_kpd_features(real)
    curves = {name: [{"grad_evals_per_jet": k, **curve_quality(real, real_efps, *by_steps[k], seed)}
                     for k in sorted(by_steps)] for name, by_steps in by_proposal.items()}
    return {"curves": curves,
            "ebm": {"grad_evals_per_jet": grad_evals["ebm"], **{k: metrics["ebm"][k] for k in CURVE_METRICS}},
            "truth": {k: metrics["truth"][k] for k in CURVE_METRICS}}
