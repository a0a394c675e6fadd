"""The field's metrics for generated jets, taggers and anomaly scores (numpy / scipy / POT).

Modules:
  result       ``MetricResult(value, error, settings, components)``: the metrics' return type.
  divergences  histogram JSD, exact 1-D Wasserstein-1, Gaussian-kernel MMD.
  jetnet       JetNet format conversion; W1M, W1P, W1EFP, FPD, KPD with the JetNet defaults.
  emd          exact energy mover's distance, coverage / minimum matching distance, EMD_sum.
  tagging      ROC, AUC (ties 1/2), 1/eps_B at eps_S, significance improvement, seed averages.
  sculpting    background mass after score cuts, JSD to the uncut mass, score-mass correlations.
  two_sample   classifier two-sample test (Flax MLP), held-out AUC and per-event weights.
"""

from jaxebm.metrics.divergences import (
    gaussian_mmd,
    histogram_edges,
    histogram_jsd,
    paper_jsd,
    jsd_from_histograms,
    normalised_histogram,
    wasserstein_1d,
)
from jaxebm.metrics.emd import (
    EMD_SUM_OBSERVABLES,
    CoverageMMD,
    coverage_mmd,
    emd_sum,
    emd_sum_observables,
    energy_movers_distance,
    pairwise_emd,
)
from jaxebm.metrics.jetnet import (
    JetNetJets,
    fpd,
    fpd_kpd_features,
    frechet_distance,
    jetnet_features,
    jetnet_jets,
    kpd,
    relative_jet_mass,
    unbiased_polynomial_mmd,
    w1efp,
    w1m,
    w1p,
)
from jaxebm.metrics.result import MetricInputError, MetricResult
from jaxebm.metrics.sculpting import (
    MassCut,
    SculptingResult,
    distance_correlation,
    mass_sculpting,
    pearson_correlation,
    top_score_fraction,
)
from jaxebm.metrics.tagging import (
    RocCurve,
    auc,
    background_rejection,
    roc_curve,
    significance_improvement,
    summarise_over_seeds,
    tagging_metrics,
)
from jaxebm.metrics.two_sample import MLPClassifier, TwoSampleResult, classifier_two_sample_test

__all__ = [
    "EMD_SUM_OBSERVABLES",
    "CoverageMMD",
    "JetNetJets",
    "MLPClassifier",
    "MassCut",
    "MetricInputError",
    "MetricResult",
    "RocCurve",
    "SculptingResult",
    "TwoSampleResult",
    "auc",
    "background_rejection",
    "classifier_two_sample_test",
    "coverage_mmd",
    "distance_correlation",
    "emd_sum",
    "emd_sum_observables",
    "energy_movers_distance",
    "fpd",
    "fpd_kpd_features",
    "frechet_distance",
    "gaussian_mmd",
    "histogram_edges",
    "histogram_jsd",
    "paper_jsd",
    "jetnet_features",
    "jetnet_jets",
    "jsd_from_histograms",
    "kpd",
    "mass_sculpting",
    "normalised_histogram",
    "pairwise_emd",
    "pearson_correlation",
    "relative_jet_mass",
    "roc_curve",
    "significance_improvement",
    "summarise_over_seeds",
    "tagging_metrics",
    "top_score_fraction",
    "unbiased_polynomial_mmd",
    "w1efp",
    "w1m",
    "w1p",
    "wasserstein_1d",
]
