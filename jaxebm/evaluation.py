"""Evaluation bundles every generator and anomaly detector reports the same way.

`generation_quality` compares generated with real jets (both as four-vectors, through the same path):
the JSD of jet pT, mass and M/pT in two conventions, and the JetNet metrics W1M, W1P, FPD, KPD on the
leading 30 particles. `selection_distance` is the unbinned checkpoint-selection criterion.

JSD conventions (both natural log, 50 equal-width bins on *fixed* ranges, never ranges taken from the
samples, so one outlier cannot move every bin):

- ``jsd_<obs>``: the textbook JSD (``0 <= JSD <= log 2``) on `JSD_RANGES` (jet pT [400, 800] GeV,
  mass [0, 400] GeV, M/pT [0, 0.8]), values outside counted in the outer bins.
- ``paper_jsd_<obs>``: the EBM paper's (Table 2, its public ``calc_js_div``): `PAPER_JSD_RANGES`
  (pT [200, 1000] GeV, mass [0, 500] GeV, as in the paper's code; M/pT [0, 1] is our choice, the code
  has none), values outside dropped, and the textbook JSD divided by the 50 bins.
`anomaly_quality` turns background and signal scores into AUC and 1/eps_B, and measures mass
sculpting of the background. Every number is a plain float in a flat dict (JSON-ready).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxebm.data.observables import jet_kinematics
from jaxebm.metrics import (
    auc,
    background_rejection,
    fpd,
    fpd_kpd_features,
    histogram_jsd,
    jetnet_features,
    jetnet_jets,
    kpd,
    mass_sculpting,
    paper_jsd,
    w1m,
    w1p,
    wasserstein_1d,
)

__all__ = ["JSD_OBSERVABLES", "JSD_NUM_BINS", "JSD_RANGES", "PAPER_JSD_RANGES", "jet_observables",
           "generation_quality", "selection_distance", "anomaly_quality"]

JSD_OBSERVABLES = ("pt", "mass", "m_over_pt")
JSD_NUM_BINS = 50
JSD_RANGES = {"pt": (400.0, 800.0), "mass": (0.0, 400.0), "m_over_pt": (0.0, 0.8)}
PAPER_JSD_RANGES = {"pt": (200.0, 1000.0), "mass": (0.0, 500.0), "m_over_pt": (0.0, 1.0)}
JETNET_NUM_PARTICLES = 30


def jet_observables(four_vectors: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Jet pT [GeV], mass [GeV], M/pT and multiplicity of ``(n, N, 4)`` four-vectors with ``mask (n, N)``."""
    return jet_kinematics(four_vectors, mask)


def _leading_particles(four_vectors: np.ndarray, mask: np.ndarray):
    """JetNet features of the leading 30 particles (by pT), as the community metrics use them."""
    jets = jetnet_features(four_vectors, mask)
    pt_rel = np.where(jets.mask, jets.particles[..., 2], -1.0)
    order = np.argsort(-pt_rel, axis=1)[:, :JETNET_NUM_PARTICLES]
    particles = np.take_along_axis(jets.particles, order[..., None], axis=1)
    return jetnet_jets(particles, np.take_along_axis(jets.mask, order, axis=1))


def generation_quality(real_p4: np.ndarray, real_mask: np.ndarray, gen_p4: np.ndarray, gen_mask: np.ndarray, *,
                       seed: int = 0, with_jetnet: bool = True) -> dict[str, float]:
    """Generated-vs-real metrics.

    Args:
      real_p4, gen_p4: ``(n, N, 4)`` ``(E, px, py, pz)`` in GeV; real_mask, gen_mask: ``(n, N)`` bool.
      with_jetnet: also compute W1M, W1P (x1e-3 conventions are left to the report), FPD, KPD.
    Returns:
      for pt, mass, m_over_pt: ``jsd_<obs>`` (textbook) and ``paper_jsd_<obs>`` (module doc), ``w1_<obs>``
      (exact 1-D Wasserstein-1 in GeV, GeV, 1); and ``w1m, w1m_err, w1p, w1p_err, fpd, fpd_err, kpd,
      kpd_err`` when ``with_jetnet``.
    """
    real_obs, gen_obs = jet_observables(real_p4, real_mask), jet_observables(gen_p4, gen_mask)
    out = {}
    for name in JSD_OBSERVABLES:
        real, gen = real_obs[name], gen_obs[name]
        out[f"jsd_{name}"] = histogram_jsd(real, gen, num_bins=JSD_NUM_BINS, value_range=JSD_RANGES[name])
        out[f"paper_jsd_{name}"] = paper_jsd(real, gen, PAPER_JSD_RANGES[name], num_bins=JSD_NUM_BINS)
        out[f"w1_{name}"] = wasserstein_1d(real, gen)
    if with_jetnet:
        real_jets, gen_jets = _leading_particles(real_p4, real_mask), _leading_particles(gen_p4, gen_mask)
        real_efps, gen_efps = fpd_kpd_features(real_jets), fpd_kpd_features(gen_jets)
        for name, result in (("w1m", w1m(real_jets, gen_jets, seed=seed)), ("w1p", w1p(real_jets, gen_jets, seed=seed)),
                             ("fpd", fpd(real_efps, gen_efps, seed=seed)), ("kpd", kpd(real_efps, gen_efps, seed=seed))):
            out[name], out[f"{name}_err"] = float(result.value), float(result.error)
    return out


def selection_distance(real_p4: np.ndarray, real_mask: np.ndarray, gen_p4: np.ndarray, gen_mask: np.ndarray, *,
                       num_bootstrap: int = 50, seed: int = 0) -> tuple[float, float]:
    """Unbinned distance of generated from real jets, for choosing a checkpoint, with its error.

    ``D = sum over jet pT, mass, M/pT of W1(real, gen) / std(real)`` (dimensionless; 0 for identical
    samples), and its bootstrap standard error from resampling the generated jets ``num_bootstrap``
    times. Unlike a 50-bin JSD of a few hundred jets, its noise is well below checkpoint differences.

    Returns:
      ``(D, error)``.
    """
    real_obs, gen_obs = jet_observables(real_p4, real_mask), jet_observables(gen_p4, gen_mask)
    scales = {name: float(np.std(real_obs[name])) or 1.0 for name in JSD_OBSERVABLES}

    def distance(rows: np.ndarray) -> float:
        return sum(wasserstein_1d(real_obs[n], gen_obs[n][rows]) / scales[n] for n in JSD_OBSERVABLES)

    num_gen = len(gen_mask)
    rng = np.random.default_rng(seed)
    replicas = [distance(rng.integers(0, num_gen, num_gen)) for _ in range(num_bootstrap)]
    return distance(np.arange(num_gen)), float(np.std(replicas, ddof=1))


def anomaly_quality(background: np.ndarray, signals: Mapping[str, np.ndarray], *,
                    background_mass: np.ndarray | None = None, signal_efficiency: float = 0.2) -> dict[str, float]:
    """AUC and ``1/eps_B`` at ``signal_efficiency`` of a score (higher = more anomalous) per signal.

    Args:
      background: ``(n_b,)`` scores of background jets; signals: name -> ``(n_s,)`` scores.
      background_mass: ``(n_b,)`` background jet masses [GeV]; adds the sculpting JSDs after cuts
        keeping 50/10/1% of the background, the 95th percentile of that JSD for random subsets of the
        same size (below it: no significant sculpting), and the score-mass Pearson and distance correlations.
    """
    out: dict[str, float] = {}
    for name, scores in signals.items():
        labels = np.concatenate([np.zeros(len(background)), np.ones(len(scores))])
        values = np.concatenate([background, scores])
        out[f"auc_{name}"] = float(auc(labels, values))
        out[f"inv_eps_b_{name}"] = float(background_rejection(labels, values, signal_efficiency))
    if background_mass is not None:
        sculpting = mass_sculpting(background_mass, background)
        for cut in sculpting.cuts:
            out[f"sculpt_jsd_keep{cut.background_efficiency:g}"] = float(cut.jsd)
            out[f"sculpt_random_jsd_q95_keep{cut.background_efficiency:g}"] = cut.random_jsd_q95
        out["mass_pearson"] = float(sculpting.pearson)
        out["mass_distance_corr"] = float(sculpting.distance_correlation)
    return out
