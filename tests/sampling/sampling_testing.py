"""Targets and MCSE-based assertions shared by the sampling tests.

Estimates come from many independent chains, so they are i.i.d. across chains and the Monte Carlo
standard error is the sample std / sqrt(n_chains); tolerances are K_SIGMA standard errors.
"""
import jax.numpy as jnp
import numpy as np

K_SIGMA = 5.0


def gaussian_energy(mean, cov):
    """Batched energy of N(mean, cov): `x (B, d) -> (B,)`."""
    mean = jnp.asarray(mean, jnp.float32)
    precision = jnp.asarray(np.linalg.inv(np.asarray(cov, np.float64)), jnp.float32)

    def energy_fn(x):
        centred = x - mean
        return 0.5 * jnp.einsum("bi,ij,bj->b", centred, precision, centred)

    return energy_fn


def assert_close_iid(values, expected, k=K_SIGMA, what="estimate"):
    """|mean(values) - expected| < k * SE over the leading (chain) axis, elementwise."""
    values = np.asarray(values, np.float64)
    estimate = values.mean(axis=0)
    se = values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])
    z = np.abs(estimate - expected) / np.maximum(se, 1e-12)
    assert np.all(z < k), f"{what}: {estimate} vs {expected}, |z| = {z} (SE {se})"


def assert_moments(samples, mean, cov, k=K_SIGMA):
    """Means and covariance entries of `samples (n, d)` match `mean (d,)`, `cov (d, d)`."""
    samples = np.asarray(samples, np.float64)
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    assert_close_iid(samples, mean, k, "mean")
    centred = samples - mean
    products = centred[:, :, None] * centred[:, None, :]
    assert_close_iid(products, cov, k, "covariance")


def assert_two_sample_close(a, b, k=K_SIGMA, what="estimate"):
    """Means over the leading axis of two independent samples agree within k combined SEs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    se = np.sqrt(a.var(axis=0, ddof=1) / a.shape[0] + b.var(axis=0, ddof=1) / b.shape[0])
    z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / np.maximum(se, 1e-12)
    assert np.all(z < k), f"{what}: {a.mean(axis=0)} vs {b.mean(axis=0)}, |z| = {z}"
