"""Evaluation bundles every generator and anomaly detector reports the same way.

`generation_quality` compares generated with real jets (both as four-vectors): the EBM paper's JSD of
jet pT, mass and M/pT, and the JetNet metrics W1M, W1P, FPD, KPD on the leading 30 particles.
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
    w1m,
    w1p,
)

__all__ = ["JSD_OBSERVABLES", "JSD_NUM_BINS", "jet_observables", "generation_quality", "anomaly_quality"]

JSD_OBSERVABLES = ("pt", "mass", "m_over_pt")
JSD_NUM_BINS = 50  # equal-width bins over the union range of both samples
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
      ``jsd_<obs>`` for pt, mass, m_over_pt (natural log, 50 shared equal-width bins), and
      ``w1m, w1m_err, w1p, w1p_err, fpd, fpd_err, kpd, kpd_err`` when ``with_jetnet``.
    """
    real_obs, gen_obs = jet_observables(real_p4, real_mask), jet_observables(gen_p4, gen_mask)
    out = {f"jsd_{name}": float(histogram_jsd(real_obs[name], gen_obs[name], num_bins=JSD_NUM_BINS))
           for name in JSD_OBSERVABLES}
    if with_jetnet:
        real_jets, gen_jets = _leading_particles(real_p4, real_mask), _leading_particles(gen_p4, gen_mask)
        real_efps, gen_efps = fpd_kpd_features(real_jets), fpd_kpd_features(gen_jets)
        for name, result in (("w1m", w1m(real_jets, gen_jets, seed=seed)), ("w1p", w1p(real_jets, gen_jets, seed=seed)),
                             ("fpd", fpd(real_efps, gen_efps, seed=seed)), ("kpd", kpd(real_efps, gen_efps, seed=seed))):
            out[name], out[f"{name}_err"] = float(result.value), float(result.error)
    return out


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
