"""The JetNet generative metrics: W1M, W1P, W1EFP, FPD and KPD (arXiv:2106.11535, 2211.10295).

Definitions and defaults follow the community package (``jetnet.evaluation``):

- Jets are compared in the JetNet particle format ``(eta_rel, phi_rel, pT_rel)`` with an
  explicit mask (``JetNetJets``); padded particles never enter a metric.
- **W1M**: 1-D W1 between the *relative* jet masses, i.e. the mass of the sum of massless
  four-vectors built from ``(pT_rel, eta_rel, phi_rel)`` (dimensionless, ~ m / pT_jet).
- **W1P**: 1-D W1 of each particle feature over all real particles of the sampled jets;
  ``value`` = mean over the three features, ``error`` = ``sqrt(sum std_f^2) / 3``;
  per-feature ``(mean, std)`` in ``components``.
- **W1EFP**: the same for the 5 prime EFPs with n = 4, d = 4 (hadronic measure, beta = 1).
- W1 metrics: ``num_batches = 5`` batches of ``batch_size = 50_000`` jets drawn with
  replacement from each sample; ``value`` = mean, ``error`` = std (ddof = 0) over batches.
- **FPD**: Frechet distance between Gaussian fits of the 36 EFPs with d <= 4, every
  feature divided by the real sample's max |value|; evaluated at ``num_points = 10`` batch
  sizes evenly spaced in 1/N from ``min_samples = 20_000`` to ``max_samples = 50_000``
  (``num_batches = 20`` draws each, averaged), fitted with ``FPD(N) = FPD_inf + slope / N``
  (both coefficients >= 0, least squares); ``value`` = FPD_inf, ``error`` = its standard
  error from the fit.
- **KPD**: unbiased MMD^2 with the kernel ``k(x, y) = (x . y / d + 1)^4`` on the same
  normalised features, ``num_batches = 10`` batches of ``batch_size = 5_000``;
  ``value`` = median, ``error`` = half the 16.275-83.725 percentile range (as in JetNet).

Small samples: a batch never exceeds the smaller sample (FPD scales its whole batch-size
range by the same factor); the sizes actually used are in ``MetricResult.settings`` with
``is_scaled_down``. Random draws come from ``np.random.default_rng(seed)`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.optimize import nnls

from jaxebm.data.observables import efps_d4, efps_w1
from jaxebm.metrics.divergences import wasserstein_1d
from jaxebm.metrics.result import MetricInputError, MetricResult, as_rng, resample_indices

__all__ = [
    "JetNetJets",
    "fpd",
    "fpd_kpd_features",
    "frechet_distance",
    "jetnet_features",
    "jetnet_jets",
    "kpd",
    "relative_jet_mass",
    "unbiased_polynomial_mmd",
    "w1efp",
    "w1m",
    "w1p",
]

PARTICLE_FEATURES = ("eta_rel", "phi_rel", "pt_rel")
_KERNEL_CHUNK = 1024


class JetNetJets(NamedTuple):
    """Jets in the JetNet particle format.

    Attributes:
        particles: float64 ``(n_jets, n_max, 3)`` ``(eta_rel, phi_rel, pT_rel)``; padded
            slots hold zeros.
        mask: bool ``(n_jets, n_max)``, True for a real particle.
        mass: float64 ``(n_jets,)`` relative jet mass (see ``relative_jet_mass``).
    """

    particles: np.ndarray
    mask: np.ndarray
    mass: np.ndarray


def relative_jet_mass(particles, mask) -> np.ndarray:
    """Mass of the sum of massless four-vectors ``(pT_rel, eta_rel, phi_rel)`` per jet.

    Args:
        particles: ``(n_jets, n_max, 3)`` ``(eta_rel, phi_rel, pT_rel)``; mask: ``(n_jets, n_max)``.

    Returns:
        ``(n_jets,)`` dimensionless mass (GeV / GeV); ~ m / pT_jet for untruncated jets.
    """
    eta, phi, pt = np.moveaxis(np.asarray(particles, np.float64), -1, 0)
    pt = np.where(mask, pt, 0.0)
    energy = np.sum(pt * np.cosh(eta), axis=1)
    px, py = np.sum(pt * np.cos(phi), axis=1), np.sum(pt * np.sin(phi), axis=1)
    pz = np.sum(pt * np.sinh(eta), axis=1)
    return np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))


def jetnet_jets(particles, mask) -> JetNetJets:
    """Wrap JetNet-format arrays ``(n, n_max, 3)`` + mask, computing the relative mass."""
    particles = np.asarray(particles, np.float64)
    mask = np.asarray(mask, bool)
    if particles.ndim != 3 or particles.shape[2] < 3 or mask.shape != particles.shape[:2]:
        raise MetricInputError(
            f"particles must be (n_jets, n_max, 3) with mask (n_jets, n_max), got "
            f"{particles.shape} and {mask.shape}"
        )
    particles = np.where(mask[..., None], particles[..., :3], 0.0)
    return JetNetJets(particles, mask, relative_jet_mass(particles, mask))


def jetnet_features(constituents, mask) -> JetNetJets:
    """Convert four-momenta to the JetNet format, relative to the jet of the masked constituents.

    Args:
        constituents: ``(n_jets, n_max, 4)`` ``(E, px, py, pz)`` in GeV (the file schema).
        mask: bool ``(n_jets, n_max)``.

    Returns:
        ``JetNetJets`` with ``eta_rel = eta - eta_jet``, ``phi_rel = phi - phi_jet`` wrapped to
        (-pi, pi], ``pT_rel = pT / pT_jet``; the jet axis and pT are those of the sum of the
        masked constituents (for truncated files: of the stored constituents).
    """
    constituents = np.asarray(constituents, np.float64)
    mask = np.asarray(mask, bool)
    if constituents.ndim != 3 or constituents.shape[2] != 4 or mask.shape != constituents.shape[:2]:
        raise MetricInputError(
            f"constituents must be (n_jets, n_max, 4) with mask (n_jets, n_max), got "
            f"{constituents.shape} and {mask.shape}"
        )
    p4 = np.where(mask[..., None], constituents, 0.0)
    pt = np.hypot(p4[..., 1], p4[..., 2])
    eta = np.arcsinh(np.divide(p4[..., 3], pt, out=np.zeros_like(pt), where=pt > 0))
    phi = np.arctan2(p4[..., 2], p4[..., 1])
    jet = p4.sum(axis=1)
    jet_pt = np.hypot(jet[:, 1], jet[:, 2])
    if np.any(jet_pt <= 0):
        raise MetricInputError("jetnet_features: a jet has zero transverse momentum")
    jet_eta = np.arcsinh(jet[:, 3] / jet_pt)
    jet_phi = np.arctan2(jet[:, 2], jet[:, 1])
    phi_rel = np.pi - np.mod(np.pi - (phi - jet_phi[:, None]), 2.0 * np.pi)
    particles = np.stack([eta - jet_eta[:, None], phi_rel, pt / jet_pt[:, None]], axis=-1)
    return jetnet_jets(particles, mask)


def _batch_settings(num_real: int, num_gen: int, num_batches: int, batch_size: int, seed) -> dict:
    if num_batches < 1 or batch_size < 2:
        raise MetricInputError(
            f"need num_batches >= 1 and batch_size >= 2: {num_batches}, {batch_size}"
        )
    used = min(batch_size, num_real, num_gen)
    if used < 2:
        raise MetricInputError(f"need at least 2 jets per sample, got {num_real} and {num_gen}")
    return {
        "num_batches": num_batches,
        "batch_size": used,
        "requested_batch_size": batch_size,
        "is_scaled_down": used < batch_size,
        "seed": seed if isinstance(seed, int) else "generator",
    }


def _batched_w1(
    real_values_fn: Callable[[np.ndarray], np.ndarray],
    gen_values_fn: Callable[[np.ndarray], np.ndarray],
    num_real: int,
    num_gen: int,
    settings: dict,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(num_batches, k)`` W1 per column of ``*_values_fn(jet_indices) -> (m, k)``."""
    rows = []
    for _ in range(settings["num_batches"]):
        real_values = real_values_fn(resample_indices(rng, num_real, settings["batch_size"]))
        gen_values = gen_values_fn(resample_indices(rng, num_gen, settings["batch_size"]))
        if len(real_values) == 0 or len(gen_values) == 0:
            rows.append(np.full(real_values.shape[1], np.inf))
            continue
        rows.append(
            [
                wasserstein_1d(real_values[:, k], gen_values[:, k])
                for k in range(real_values.shape[1])
            ]
        )
    return np.asarray(rows, dtype=np.float64)


def _averaged_result(w1s: np.ndarray, names, settings: dict) -> MetricResult:
    """Mean over features of the batch means; error = quadrature sum of stds / n_features."""
    means, stds = w1s.mean(axis=0), w1s.std(axis=0)
    components = {name: (float(m), float(s)) for name, m, s in zip(names, means, stds, strict=True)}
    error = float(np.sqrt(np.sum(stds**2)) / len(names))
    return MetricResult(float(means.mean()), error, settings, components)


def w1m(
    real: JetNetJets, gen: JetNetJets, *, num_batches: int = 5, batch_size: int = 50_000, seed=0
) -> MetricResult:
    """W1 between relative jet masses (dimensionless); mean +- std over resampled batches."""
    settings = _batch_settings(len(real.mass), len(gen.mass), num_batches, batch_size, seed)
    w1s = _batched_w1(
        lambda idx: real.mass[idx, None],
        lambda idx: gen.mass[idx, None],
        len(real.mass),
        len(gen.mass),
        settings,
        as_rng(seed),
    )
    return MetricResult(float(w1s.mean()), float(w1s.std()), settings)


def w1p(
    real: JetNetJets, gen: JetNetJets, *, num_batches: int = 5, batch_size: int = 50_000, seed=0
) -> MetricResult:
    """W1 of (eta_rel, phi_rel, pT_rel) over the real (masked) particles of resampled jets."""
    settings = _batch_settings(len(real.mask), len(gen.mask), num_batches, batch_size, seed)
    w1s = _batched_w1(
        lambda idx: real.particles[idx][real.mask[idx]],
        lambda idx: gen.particles[idx][gen.mask[idx]],
        len(real.mask),
        len(gen.mask),
        settings,
        as_rng(seed),
    )
    return _averaged_result(w1s, PARTICLE_FEATURES, settings)


def w1efp(
    real: JetNetJets, gen: JetNetJets, *, num_batches: int = 5, batch_size: int = 50_000, seed=0
) -> MetricResult:
    """W1 of the 5 prime EFPs with n = 4, d = 4 (``jaxebm.data.observables.efps_w1``).

    As in JetNet the energies are the unnormalised ``pT_rel`` (energyflow's ``normed=None``).
    """

    def efps(jets: JetNetJets) -> np.ndarray:
        eta, phi, pt = np.moveaxis(jets.particles, -1, 0)
        return np.asarray(efps_w1(pt, eta, phi, jets.mask, normed=False), np.float64)

    real_efps, gen_efps = efps(real), efps(gen)
    settings = _batch_settings(len(real_efps), len(gen_efps), num_batches, batch_size, seed)
    w1s = _batched_w1(
        lambda idx: real_efps[idx],
        lambda idx: gen_efps[idx],
        len(real_efps),
        len(gen_efps),
        settings,
        as_rng(seed),
    )
    return _averaged_result(w1s, [f"efp_{k}" for k in range(real_efps.shape[1])], settings)


def fpd_kpd_features(jets: JetNetJets) -> np.ndarray:
    """The 36 EFPs with d <= 4 (hadronic measure, beta = 1) used by FPD and KPD: ``(n, 36)``.

    Energies are the unnormalised ``pT_rel``, as in JetNet (energyflow's ``normed=None``).
    """
    eta, phi, pt = np.moveaxis(jets.particles, -1, 0)
    return np.asarray(efps_d4(pt, eta, phi, jets.mask, normed=False), np.float64)


def _check_features(real, gen) -> tuple[np.ndarray, np.ndarray]:
    real, gen = np.asarray(real, np.float64), np.asarray(gen, np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise MetricInputError(
            f"features must be (n, d) with equal d, got {real.shape} and {gen.shape}"
        )
    if not (np.all(np.isfinite(real)) and np.all(np.isfinite(gen))):
        raise MetricInputError("features contain non-finite values")
    return real, gen


def _normalise_by_real_max(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide every feature by the real sample's max |value| (features that are all 0: by 1)."""
    scale = np.max(np.abs(real), axis=0)
    scale[scale == 0] = 1.0
    return real / scale, gen / scale


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians.

    ``Tr (S1 S2)^(1/2)`` is evaluated as ``Tr (S1^(1/2) S2 S1^(1/2))^(1/2)`` (same eigenvalues,
    symmetric, so real and stable for positive semi-definite inputs).
    """
    mean1, mean2 = np.atleast_1d(mean1), np.atleast_1d(mean2)
    cov1, cov2 = np.atleast_2d(cov1), np.atleast_2d(cov2)
    eigvals, eigvecs = np.linalg.eigh(cov1)
    sqrt_cov1 = (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T
    inner = sqrt_cov1 @ cov2 @ sqrt_cov1
    trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)))
    diff = mean1 - mean2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)


def _fpd_batch_sizes(
    num_available: int, min_samples: int, max_samples: int, num_points: int
) -> tuple[np.ndarray, bool]:
    """Batch sizes evenly spaced in 1/N; scaled by num_available / max_samples if needed."""
    if not 2 <= min_samples < max_samples or num_points < 2:
        raise MetricInputError(
            f"need 2 <= min_samples < max_samples and num_points >= 2, got "
            f"{min_samples}, {max_samples}, {num_points}"
        )
    is_scaled_down = num_available < max_samples
    if is_scaled_down:
        min_samples = max(2, int(min_samples * num_available / max_samples))
        max_samples = num_available
    sizes = (1.0 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype(int)
    if len(np.unique(sizes)) < 2:
        raise MetricInputError(f"too few samples ({num_available}) for an FPD extrapolation")
    return sizes, is_scaled_down


def _extrapolate_to_infinite_n(batch_sizes: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Least squares ``values = a + b / N`` with a, b >= 0; returns (a, standard error of a)."""
    design = np.stack([np.ones(len(batch_sizes)), 1.0 / batch_sizes], axis=1)
    coeffs, _ = nnls(design, values)
    residuals = values - design @ coeffs
    variance = residuals @ residuals / max(len(values) - 2, 1)
    cov = variance * np.linalg.inv(design.T @ design)
    return float(coeffs[0]), float(np.sqrt(cov[0, 0]))


def fpd(
    real,
    gen,
    *,
    min_samples: int = 20_000,
    max_samples: int = 50_000,
    num_batches: int = 20,
    num_points: int = 10,
    seed=0,
) -> MetricResult:
    """Frechet physics distance between feature sets ``(n, d)`` (e.g. ``fpd_kpd_features``).

    Example:
        >>> rng = np.random.default_rng(1)
        >>> result = fpd(rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)))
        >>> result.settings["is_scaled_down"], result.value < 0.01
        (True, True)
    """
    real, gen = _normalise_by_real_max(*_check_features(real, gen))
    sizes, is_scaled_down = _fpd_batch_sizes(
        min(len(real), len(gen)), min_samples, max_samples, num_points
    )
    rng = as_rng(seed)
    means = []
    for size in sizes:
        values = []
        for _ in range(num_batches):
            x = real[resample_indices(rng, len(real), size)]
            y = gen[resample_indices(rng, len(gen), size)]
            values.append(
                frechet_distance(
                    x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
                )
            )
        means.append(np.mean(values))
    value, error = _extrapolate_to_infinite_n(sizes.astype(np.float64), np.asarray(means))
    settings = {
        "batch_sizes": sizes.tolist(),
        "num_batches": num_batches,
        "is_scaled_down": is_scaled_down,
        "seed": seed if isinstance(seed, int) else "generator",
    }
    return MetricResult(value, error, settings)


def _polynomial_kernel_sum(x: np.ndarray, y: np.ndarray) -> float:
    """``sum_ij (x_i . y_j / d + 1)^4``, in row chunks to bound memory."""
    total = 0.0
    for start in range(0, len(x), _KERNEL_CHUNK):
        kernel = x[start : start + _KERNEL_CHUNK] @ (y.T / x.shape[1])
        kernel += 1.0
        kernel *= kernel  # two in-place squarings: much faster than a generic power
        kernel *= kernel
        total += float(kernel.sum())
    return total


def unbiased_polynomial_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel ``(x . y / d + 1)^4`` (within-sample diagonals dropped)."""
    n, m, d = len(x), len(y), x.shape[1]
    diag_x = np.sum((np.sum(x * x, axis=1) / d + 1.0) ** 4)
    diag_y = np.sum((np.sum(y * y, axis=1) / d + 1.0) ** 4)
    k_xx = (_polynomial_kernel_sum(x, x) - diag_x) / (n * (n - 1))
    k_yy = (_polynomial_kernel_sum(y, y) - diag_y) / (m * (m - 1))
    return k_xx + k_yy - 2.0 * _polynomial_kernel_sum(x, y) / (n * m)


def kpd(real, gen, *, num_batches: int = 10, batch_size: int = 5_000, seed=0) -> MetricResult:
    """Kernel physics distance between feature sets ``(n, d)``: median +- half 16-84% range."""
    real, gen = _normalise_by_real_max(*_check_features(real, gen))
    settings = _batch_settings(len(real), len(gen), num_batches, batch_size, seed)
    rng = as_rng(seed)
    values = [
        unbiased_polynomial_mmd(
            real[resample_indices(rng, len(real), settings["batch_size"])],
            gen[resample_indices(rng, len(gen), settings["batch_size"])],
        )
        for _ in range(num_batches)
    ]
    low, high = np.percentile(values, [16.275, 83.725])
    return MetricResult(float(np.median(values)), float((high - low) / 2), settings)
