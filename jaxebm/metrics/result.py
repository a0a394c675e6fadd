"""The one return type of every batched metric, and the resampling helpers they share."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["MetricInputError", "MetricResult", "as_rng", "mean_and_std", "resample_indices"]

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


class MetricInputError(ValueError):
    """A metric received arrays of the wrong shape, too few samples, or non-finite values."""


class MetricResult(NamedTuple):
    """A metric value with its uncertainty and the settings that produced it.

    Attributes:
        value: the reported number (e.g. the mean over batches, an extrapolated intercept).
        error: its uncertainty, defined by the metric (std over batches, fit error, ...);
            NaN where the metric has no error estimate.
        settings: the settings actually used (batch sizes after any scaling down for small
            samples, seed, ...), so a result can be reproduced and compared.
        components: per-feature ``(value, error)`` pairs for metrics averaged over features
            (W1P, W1EFP, EMD_sum); empty otherwise.
    """

    value: float
    error: float
    settings: Mapping[str, Any] = _EMPTY
    components: Mapping[str, tuple[float, float]] = _EMPTY


def as_rng(seed: int | np.random.Generator) -> np.random.Generator:
    """``np.random.default_rng(seed)``, or ``seed`` itself when it already is a Generator."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def resample_indices(rng: np.random.Generator, num_items: int, batch_size: int) -> np.ndarray:
    """``batch_size`` indices into ``range(num_items)`` drawn uniformly with replacement."""
    return rng.integers(0, num_items, size=batch_size)


def mean_and_std(values, *, ddof: int = 0) -> tuple[float, float]:
    """Mean and standard deviation (``ddof`` as in numpy) of a 1-D sequence, as floats.

    The std of a single value is reported as 0.0 (not NaN) when ``ddof=0``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise MetricInputError(f"expected a non-empty 1-D sequence, got shape {values.shape}")
    if values.size <= ddof:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=ddof))
