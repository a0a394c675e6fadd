"""From stored four-vectors to a constituent model's input space and back.

`ConstituentPipeline` is the one place that decides what an EBM sees: features ``(log pT, eta_rel,
phi_rel)`` of the hardest ``num_constituents`` constituents, centred and rotated as in the EBM paper,
in one of two feature spaces, and how padding is treated.

Feature spaces (where chains, data noise, chain starts and ``||grad_x E||`` live):

- ``"raw"`` (the paper's): ``(log pT [log GeV], eta_rel, phi_rel)`` as they are. A Langevin step of
  0.1 moves every feature by the same amount, so the angles (spread ~0.1-0.2) move fast relative to
  their spread and log pT (spread ~1) slowly.
- ``"standardized"``: each feature shifted and scaled by training statistics (stored with a run);
  same stationary density, different short-run dynamics: every feature moves at a rate relative to
  its own spread.

Padding modes:

- ``"zeros"`` (the paper's): padded slots hold raw zero features and count as constituents for the
  model (mask all True). Real *and* generated jets are mapped back to four-vectors with every slot a
  constituent (`jets_as_model_sees`), as the paper's code does: a slot near raw ``(0, 0, 0)`` is a
  1 GeV particle on the jet axis in both.
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

__all__ = ["FEATURE_SPACES", "PADDING_MODES", "PAPER_NOISE_MEAN", "PAPER_NOISE_STD", "ConstituentPipeline"]

PADDING_MODES = ("zeros", "mask")
FEATURE_SPACES = ("standardized", "raw")
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

    num_constituents: N slots. padding_mode: "zeros" or "mask". standardizer: raw -> model space;
    fitted on real constituents of the training jets ("standardized") or the identity ("raw").
    multiplicity_probs: ``(N + 1,)`` distribution of the number of real slots in training jets
    (chain starts in "mask" mode). feature_space: "standardized" or "raw".
    """

    num_constituents: int
    padding_mode: str
    standardizer: Standardizer
    multiplicity_probs: tuple[float, ...]
    feature_space: str = "standardized"

    def __post_init__(self):
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        if self.feature_space not in FEATURE_SPACES:
            raise ValueError(f"feature_space must be one of {FEATURE_SPACES}, got {self.feature_space!r}")
        if len(self.multiplicity_probs) != self.num_constituents + 1:
            raise ValueError(f"multiplicity_probs must have {self.num_constituents + 1} entries, "
                             f"got {len(self.multiplicity_probs)}")

    @classmethod
    def fit(cls, sample: JetSample, *, num_constituents: int = 40, padding_mode: str = "zeros",
            feature_space: str = "standardized") -> ConstituentPipeline:
        """Fit the standardisation (identity in "raw" space) and the multiplicity distribution on training jets."""
        features, mask = _raw_features(sample, num_constituents)
        counts = np.bincount(mask.sum(axis=1), minlength=num_constituents + 1)
        num_features = features.shape[-1]
        standardizer = (Standardizer.fit(features, mask) if feature_space == "standardized"
                        else Standardizer(np.zeros(num_features), np.ones(num_features)))
        return cls(num_constituents, padding_mode, standardizer, tuple(float(c) for c in counts / counts.sum()),
                   feature_space)

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

    @property
    def raw_scale(self) -> np.ndarray:
        """``(F,)`` d(raw feature) / d(model feature): divide a model-space gradient by it to get the
        gradient in the raw coordinates (the paper's ``||grad_x E||``)."""
        return self.standardizer.std

    def jets_as_model_sees(self, sample: JetSample) -> tuple[np.ndarray, np.ndarray]:
        """Stored jets -> model inputs -> four-vectors ``(n, N, 4)`` GeV and the mask ``(n, N)``: the
        path generated jets take (`to_four_vectors` of the model features with the model mask), so real
        and generated jets are compared like for like ("zeros" mode: padded slots are 1 GeV particles
        on the axis in both)."""
        x, model_mask, _ = self.transform(sample)
        return self.to_four_vectors(x, model_mask), model_mask

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
                "feature_space": self.feature_space, "standardizer": self.standardizer.to_dict(),
                "multiplicity_probs": list(self.multiplicity_probs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConstituentPipeline:
        """Inverse of `to_dict`."""
        return cls(int(data["num_constituents"]), str(data["padding_mode"]),
                   Standardizer.from_dict(data["standardizer"]), tuple(data["multiplicity_probs"]),
                   str(data.get("feature_space", "standardized")))
