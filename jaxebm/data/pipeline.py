"""From stored four-vectors to a constituent model's input space and back.

`ConstituentPipeline` is the one place that decides what an EBM sees: features ``(log pT, eta_rel,
phi_rel)`` of the hardest ``num_constituents`` constituents, centred and rotated as in the EBM paper,
standardised with training statistics (stored with a run), and how padding is treated:

- ``"zeros"`` (the paper's): padded slots hold raw zero features and count as constituents for the
  model (mask all True). Generated jets are mapped back with every slot as a constituent, so a
  generated "padding" slot near ``(0, 0, 0)`` becomes a 1 GeV particle at the jet axis, as in the
  paper. Real jets are evaluated with their true mask.
- ``"mask"``: padded slots are masked for the model and frozen in the chains; the multiplicity of a
  chain start is drawn from the training distribution.

    pipeline = ConstituentPipeline.fit(train_sample, num_constituents=40, padding_mode="mask")
    x, model_mask, real_mask = pipeline.transform(test_sample)
    four_vectors = pipeline.to_four_vectors(x, model_mask)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from jaxebm.data.io import JetSample
from jaxebm.data.preprocess import (
    Standardizer,
    center_rotate_ebm,
    constituent_features,
    features_to_four_vectors,
    pad_or_truncate,
)

__all__ = ["PADDING_MODES", "PAPER_NOISE_MEAN", "PAPER_NOISE_STD", "ConstituentPipeline"]

PADDING_MODES = ("zeros", "mask")
PAPER_NOISE_MEAN = (2.0, 0.0, 0.0)  # chain-start noise in raw (log pT [log GeV], eta, phi)
PAPER_NOISE_STD = (1.0, 0.1, 0.2)


def _raw_features(sample: JetSample, num_constituents: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, N, 3)`` centred, rotated, pT-ordered features of the first N constituents, and their mask."""
    features = constituent_features(sample.constituents, sample.mask, sample.jets)
    features = center_rotate_ebm(features, sample.mask)
    features, mask = pad_or_truncate(features, sample.mask, num_constituents)
    return features.astype(np.float32), mask


@dataclass(frozen=True)
class ConstituentPipeline:
    """Fitted preprocessing of one run (see module doc).

    num_constituents: N slots. padding_mode: "zeros" or "mask". standardizer: fitted on real
    constituents of the training jets. multiplicity_probs: ``(N + 1,)`` distribution of the number
    of real slots in training jets (chain starts in "mask" mode).
    """

    num_constituents: int
    padding_mode: str
    standardizer: Standardizer
    multiplicity_probs: tuple[float, ...]

    def __post_init__(self):
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        if len(self.multiplicity_probs) != self.num_constituents + 1:
            raise ValueError(f"multiplicity_probs must have {self.num_constituents + 1} entries, "
                             f"got {len(self.multiplicity_probs)}")

    @classmethod
    def fit(cls, sample: JetSample, *, num_constituents: int = 40, padding_mode: str = "zeros") -> ConstituentPipeline:
        """Fit the standardisation and the multiplicity distribution on training jets."""
        features, mask = _raw_features(sample, num_constituents)
        counts = np.bincount(mask.sum(axis=1), minlength=num_constituents + 1)
        return cls(num_constituents, padding_mode, Standardizer.fit(features, mask),
                   tuple(float(c) for c in counts / counts.sum()))

    def model_mask(self, real_mask: np.ndarray) -> np.ndarray:
        """The mask the model and the chains see: all True in "zeros" mode, the real mask otherwise."""
        return np.ones_like(real_mask, bool) if self.padding_mode == "zeros" else np.asarray(real_mask, bool)

    def transform(self, sample: JetSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored jets -> model inputs.

        Returns:
          x ``(n, N, 3)`` float32 standardised features, model_mask ``(n, N)`` (see `model_mask`),
          real_mask ``(n, N)`` True where a real constituent sits.
        """
        features, real_mask = _raw_features(sample, self.num_constituents)
        model_mask = self.model_mask(real_mask)
        return self.standardizer.apply(features, model_mask), model_mask, real_mask

    def to_raw_features(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Model-space ``x (n, N, 3)`` -> raw ``(log pT, eta_rel, phi_rel)``; zeros where ``mask`` is False."""
        return np.asarray(self.standardizer.invert(np.asarray(x, np.float32), np.asarray(mask, bool)))

    def to_four_vectors(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Model-space ``x (n, N, 3)`` with ``mask (n, N)`` -> massless ``(E, px, py, pz)`` ``(n, N, 4)`` in GeV,
        in the jet's centred frame (jet axis at eta = phi = 0)."""
        return features_to_four_vectors(self.to_raw_features(x, mask), mask)

    def noise_parameters(self, raw_mean=PAPER_NOISE_MEAN, raw_std=PAPER_NOISE_STD) -> dict[str, Any]:
        """Keyword arguments of `jaxebm.train.cd.make_noise_fn` for chain starts in model space: raw
        Gaussian noise (paper: log pT ~ N(2, 1), eta ~ N(0, 0.1^2), phi ~ N(0, 0.2^2)) mapped through
        the standardisation, with multiplicities in "mask" mode."""
        mean = (np.asarray(raw_mean) - self.standardizer.mean) / self.standardizer.std
        std = np.asarray(raw_std) / self.standardizer.std
        probs = np.asarray(self.multiplicity_probs) if self.padding_mode == "mask" else None
        return {"mean": mean.tolist(), "std": std.tolist(), "num_constituents": self.num_constituents,
                "multiplicity_probs": probs}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, stored with a run."""
        return {"num_constituents": self.num_constituents, "padding_mode": self.padding_mode,
                "standardizer": self.standardizer.to_dict(), "multiplicity_probs": list(self.multiplicity_probs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConstituentPipeline:
        """Inverse of `to_dict`."""
        return cls(int(data["num_constituents"]), str(data["padding_mode"]),
                   Standardizer.from_dict(data["standardizer"]), tuple(data["multiplicity_probs"]))
