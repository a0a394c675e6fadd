"""Mass sculpting: does cutting on a score distort the background jet-mass distribution?

- Cuts: for each background efficiency f (default 50%, 10%, 1%), keep the ``round(f n)``
  background jets with the highest scores (ties broken by input order, so exactly that many
  are kept); the threshold is the lowest kept score.
- Sculpting JSD: ``histogram_jsd`` between the kept and the uncut masses on ``num_bins``
  equal-width bins over the uncut range (natural log; 0 = shape unchanged, log 2 = disjoint).
  Finite samples give a small positive bias, of order ``num_bins / (8 n_kept)``; the reference for
  "significant" is the 95th percentile of the same JSD for uniformly random subsets of the same
  size (``num_random`` draws): a cut whose JSD stays below it does not sculpt at that sample size.
- Correlations: Pearson's r, and the distance correlation of Szekely, Rizzo and Bakirov
  (2007; biased V-statistic, in [0, 1], 0 iff independent in the large-sample limit). The
  distance correlation needs ``n^2`` memory and time, so it is computed on a random subsample
  of ``max_samples`` jets (default 2,000: ~32 MB per distance matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxebm.metrics.divergences import histogram_edges, jsd_from_histograms, normalised_histogram
from jaxebm.metrics.result import MetricInputError, as_rng

__all__ = [
    "MassCut",
    "SculptingResult",
    "distance_correlation",
    "mass_sculpting",
    "pearson_correlation",
    "top_score_fraction",
]


class MassCut(NamedTuple):
    """Background kept by one score cut.

    Attributes:
        background_efficiency: requested kept fraction f.
        threshold: lowest kept score.
        kept_mass: ``(round(f n),)`` masses of the kept jets (GeV).
        jsd: JSD between the kept and the uncut mass histograms.
        random_jsd_q95: 95th percentile of that JSD for random subsets of the same size.
    """

    background_efficiency: float
    threshold: float
    kept_mass: np.ndarray
    jsd: float
    random_jsd_q95: float


class SculptingResult(NamedTuple):
    """All cuts plus the score-mass correlations and the shared histogram edges (GeV)."""

    cuts: tuple[MassCut, ...]
    pearson: float
    distance_correlation: float
    edges: np.ndarray


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise MetricInputError(f"need two 1-D arrays of equal length >= 2: {x.shape}, {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise MetricInputError("inputs contain non-finite values")
    return x, y


def top_score_fraction(score, fraction: float) -> tuple[np.ndarray, float]:
    """Indices of the ``round(fraction n)`` (>= 1) highest scores, and the lowest kept score."""
    score = np.asarray(score, np.float64)
    if not 0.0 < fraction <= 1.0:
        raise MetricInputError(f"fraction must be in (0, 1], got {fraction}")
    num_kept = max(1, round(fraction * len(score)))
    kept = np.argsort(-score, kind="stable")[:num_kept]
    return kept, float(score[kept[-1]])


def pearson_correlation(x, y) -> float:
    """Pearson's r of two 1-D samples (0 if either is constant)."""
    x, y = _check_pair(x, y)
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / norm) if norm > 0 else 0.0


def _double_centred_distances(values: np.ndarray) -> np.ndarray:
    distances = np.abs(values[:, None] - values[None, :])
    return distances - distances.mean(0)[None, :] - distances.mean(1)[:, None] + distances.mean()


def distance_correlation(x, y, *, max_samples: int = 2_000, seed=0) -> float:
    """Distance correlation ``dCor(x, y)`` (V-statistic) on at most ``max_samples`` pairs.

    ``dCor^2 = dCov^2(x, y) / sqrt(dVar^2(x) dVar^2(y))`` with double-centred |x_i - x_j|
    matrices; a random subsample (without replacement, ``np.random.default_rng(seed)``) is
    used when there are more than ``max_samples`` pairs. Returns 0 if either is constant.
    """
    x, y = _check_pair(x, y)
    if len(x) > max_samples:
        subset = as_rng(seed).choice(len(x), size=max_samples, replace=False)
        x, y = x[subset], y[subset]
    a, b = _double_centred_distances(x), _double_centred_distances(y)
    dcov_sq, dvar_x, dvar_y = np.mean(a * b), np.mean(a * a), np.mean(b * b)
    if dvar_x <= 0 or dvar_y <= 0:
        return 0.0
    return float(np.sqrt(max(dcov_sq, 0.0) / np.sqrt(dvar_x * dvar_y)))


def mass_sculpting(
    mass,
    score,
    *,
    background_efficiencies: Sequence[float] = (0.5, 0.1, 0.01),
    num_bins: int = 40,
    max_samples: int = 2_000,
    num_random: int = 200,
    seed=0,
) -> SculptingResult:
    """Background mass after score cuts, their JSD to the uncut mass, and correlations.

    Args:
        mass: ``(n,)`` background jet masses (GeV); score: ``(n,)`` (higher = kept first).
        background_efficiencies: kept fractions f of the background.
        num_bins: equal-width mass bins over the uncut range.
        max_samples: subsample for the distance correlation. num_random: random subsets per cut for
            the no-sculpting reference. seed: of both.
    """
    mass, score = _check_pair(mass, score)
    if num_random < 1:
        raise MetricInputError(f"num_random must be >= 1, got {num_random}")
    edges = histogram_edges(mass, mass, num_bins=num_bins, binning="union")
    uncut = normalised_histogram(mass, edges)
    rng = as_rng(seed)
    cuts = []
    for fraction in background_efficiencies:
        kept, threshold = top_score_fraction(score, fraction)
        jsd = jsd_from_histograms(normalised_histogram(mass[kept], edges), uncut)
        random_jsds = [jsd_from_histograms(normalised_histogram(rng.choice(mass, len(kept), replace=False), edges),
                                           uncut) for _ in range(num_random)]
        cuts.append(MassCut(float(fraction), threshold, mass[kept], jsd, float(np.quantile(random_jsds, 0.95))))
    return SculptingResult(
        tuple(cuts),
        pearson_correlation(mass, score),
        distance_correlation(mass, score, max_samples=max_samples, seed=seed),
        edges,
    )
