"""Constituent features for the models: kinematics, centring, rotation, padding, standardisation.

Array conventions (see docs/CONTRACTS.md):

- four-momenta ``constituents``: ``(n_jets, N, 4)`` = ``(E, px, py, pz)`` in GeV;
- ``mask``: bool ``(n_jets, N)``, True for a real constituent. Padded slots are identified by the
  mask only; every function here ignores their values (garbage, NaN or inf included) and writes
  zeros into them;
- model features: ``(n_jets, N, 3)`` = ``(log pT, eta_rel, phi_rel)`` with pT in GeV (natural log)
  and ``phi_rel`` wrapped to ``(-pi, pi]``.

All functions are vectorised over jets (no Python loop over jets). Float outputs keep the input's
float precision (float32 in, float32 out; float64 in, float64 out); intermediate sums use float64.

Example:
    >>> feats = constituent_features(constituents, mask)  # doctest: +SKIP
    >>> feats = center_rotate_ebm(feats, mask)  # doctest: +SKIP
    >>> scaler = Standardizer.fit(feats, mask)  # doctest: +SKIP
    >>> model_input = scaler.apply(feats, mask)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.data.io import massless_four_vectors
from jaxebm.errors import JetInputError

__all__ = [
    "Standardizer",
    "center_rotate_ebm",
    "center_rotate_flip_nae",
    "check_particle_arrays",
    "constituent_features",
    "constituent_pt_eta_phi",
    "features_to_four_vectors",
    "pad_or_truncate",
    "wrap_phi",
]


def check_particle_arrays(mask: Any, **arrays: Any) -> np.ndarray:
    """Check that each named array has the mask's ``(n_jets, N)`` shape as its leading axes.

    Args:
      mask: bool-like ``(n_jets, N)``.
      **arrays: named arrays whose first two axes must equal ``mask.shape``.

    Returns:
      The mask as a numpy bool array.

    Raises:
      JetInputError: naming the offending argument and its shape.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise JetInputError(f"mask must be (n_jets, N), got shape {mask.shape}")
    if mask.dtype != bool:
        raise JetInputError(f"mask must be boolean, got dtype {mask.dtype}")
    for name, array in arrays.items():
        shape = np.shape(array)
        if tuple(shape[:2]) != mask.shape:
            raise JetInputError(
                f"{name} has shape {shape}, expected leading axes (n_jets, N) = {mask.shape} from mask"
            )
    return mask


def _float_dtype(array: np.ndarray) -> np.dtype:
    return np.result_type(array.dtype, np.float32)


def wrap_phi(phi: Any) -> Any:
    """Wrap angles to ``(-pi, pi]``; works on numpy and jax arrays alike."""
    return np.pi - (np.pi - phi) % (2 * np.pi)


def _pt_eta_phi_from_momenta(px, py, pz):
    """Float64 ``(pt, eta, phi)`` of momenta; zero pT gives eta = phi = 0 (no division by zero)."""
    pt = np.hypot(px, py)
    has_pt = pt > 0
    eta = np.where(has_pt, np.arcsinh(pz / np.where(has_pt, pt, 1.0)), 0.0)
    phi = np.where(has_pt, wrap_phi(np.arctan2(py, px)), 0.0)  # arctan2(-0.0, -1) is -pi
    return pt, eta, phi


def constituent_pt_eta_phi(constituents: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transverse momentum, pseudorapidity and azimuth of every constituent.

    Args:
      constituents: ``(n_jets, N, 4)`` four-momenta ``(E, px, py, pz)`` in GeV.
      mask: bool ``(n_jets, N)``.

    Returns:
      ``(pt, eta, phi)``, each ``(n_jets, N)``: pt in GeV, phi in ``(-pi, pi]``. Padded slots and
      constituents with zero pT hold zeros in all three.
    """
    constituents = np.asarray(constituents)
    dtype = _float_dtype(constituents)
    return tuple(values.astype(dtype) for values in _constituent_pt_eta_phi64(constituents, mask))


def _constituent_pt_eta_phi64(constituents: np.ndarray, mask: Any) -> tuple[np.ndarray, ...]:
    mask = check_particle_arrays(mask, constituents=constituents)
    if constituents.ndim != 3 or constituents.shape[-1] != 4:
        raise JetInputError(f"constituents must be (n_jets, N, 4), got shape {constituents.shape}")
    momenta = np.where(mask[..., None], constituents[..., 1:].astype(np.float64), 0.0)
    return _pt_eta_phi_from_momenta(*np.moveaxis(momenta, -1, 0))


def _jet_eta_phi(constituents: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 ``(eta, phi)`` of the summed four-momentum of the real constituents, each (n_jets,)."""
    momentum = np.where(mask[..., None], constituents[..., 1:].astype(np.float64), 0.0).sum(axis=1)
    _, eta, phi = _pt_eta_phi_from_momenta(*momentum.T)
    return eta, phi


def constituent_features(constituents: Any, mask: Any, jets: Any = None) -> np.ndarray:
    """Model features ``(log pT, eta_rel, phi_rel)`` relative to the jet axis.

    Args:
      constituents: ``(n_jets, N, 4)`` four-momenta ``(E, px, py, pz)`` in GeV.
      mask: bool ``(n_jets, N)``.
      jets: optional ``(n_jets, 5)`` jet summary ``(pt, eta, phi, mass, n_constituents)``; its eta
        and phi define the axis. Without it the axis is the (pseudorapidity, azimuth) of the summed
        four-momentum of the real constituents.

    Returns:
      ``(n_jets, N, 3)``: natural log of pT in GeV (a real constituent with zero pT gets the log of
      the smallest positive float of the dtype instead of -inf), ``eta - jet_eta`` and
      ``phi - jet_phi`` wrapped to ``(-pi, pi]``. Padded slots are zero.
    """
    constituents = np.asarray(constituents)
    pt, eta, phi = _constituent_pt_eta_phi64(constituents, mask)
    mask = np.asarray(mask)
    dtype = _float_dtype(constituents)
    if jets is None:
        jet_eta, jet_phi = _jet_eta_phi(constituents, mask)
    else:
        jets = np.asarray(jets)
        if jets.shape != (mask.shape[0], 5):
            raise JetInputError(f"jets must be (n_jets, 5) = ({mask.shape[0]}, 5), got shape {jets.shape}")
        jet_eta, jet_phi = jets[:, 1].astype(np.float64), jets[:, 2].astype(np.float64)
    log_pt = np.log(np.maximum(pt, np.finfo(dtype).tiny))
    eta_rel = eta - jet_eta[:, None]
    phi_rel = wrap_phi(phi - jet_phi[:, None])
    features = np.stack([log_pt, eta_rel, phi_rel], axis=-1)
    return np.where(mask[..., None], features, 0.0).astype(dtype)


def features_to_four_vectors(features: Any, mask: Any, jet_eta: Any = 0.0, jet_phi: Any = 0.0) -> np.ndarray:
    """Massless four-momenta from model features: the inverse of `constituent_features`.

    Args:
      features: ``(n_jets, N, 3)`` = ``(log pT, eta_rel, phi_rel)``.
      mask: bool ``(n_jets, N)``.
      jet_eta, jet_phi: the jet axis to add back, scalars or ``(n_jets,)``.

    Returns:
      ``(n_jets, N, 4)`` = ``(E, px, py, pz)`` in GeV with ``E = |p|``; padded slots are zero.
    """
    features = np.asarray(features)
    mask = check_particle_arrays(mask, features=features)
    if features.ndim != 3 or features.shape[-1] != 3:
        raise JetInputError(f"features must be (n_jets, N, 3), got shape {features.shape}")
    values = np.where(mask[..., None], features.astype(np.float64), 0.0)
    pt = np.exp(values[..., 0])
    eta = values[..., 1] + np.reshape(np.asarray(jet_eta, np.float64), (-1, 1))
    phi = values[..., 2] + np.reshape(np.asarray(jet_phi, np.float64), (-1, 1))
    return np.where(mask[..., None], massless_four_vectors(pt, eta, phi), 0.0).astype(_float_dtype(features))


def _weighted_centroid(weights: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of (eta, phi) per jet, each ``(n_jets, 1)``; zero for jets without weight."""
    total = weights.sum(axis=1, keepdims=True)
    safe_total = np.where(total > 0, total, 1.0)
    return (weights * eta).sum(1, keepdims=True) / safe_total, (weights * phi).sum(1, keepdims=True) / safe_total


def _rotate(eta: np.ndarray, phi: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate points counter-clockwise by ``angle`` (per jet, ``(n_jets,)``) about the origin."""
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return cos * eta - sin * phi, sin * eta + cos * phi


def _angle_to_vertical(direction_eta: np.ndarray, direction_phi: np.ndarray) -> np.ndarray:
    """Counter-clockwise angle that turns each direction to +phi; zero for a zero direction."""
    is_zero = (direction_eta == 0) & (direction_phi == 0)
    return np.where(is_zero, 0.0, np.pi / 2 - np.arctan2(direction_phi, direction_eta))


def center_rotate_ebm(features: Any, mask: Any) -> np.ndarray:
    """The EBM paper's centring and principal-axis rotation of constituent features.

    1. Centre: subtract the pT-weighted centroid of (eta_rel, phi_rel), so it sits at (0, 0).
    2. Rotate about the origin so that the principal axis
       ``(sum_i eta_i E_i / R_i, sum_i phi_i E_i / R_i)``, ``R_i = sqrt(eta_i^2 + phi_i^2)``,
       points along +phi (vertically up). Only features are given, so ``E_i`` is taken as
       ``pT_i = exp(log pT_i)`` (the paper's E; the two agree up to cosh(eta), and the jets are
       central). Constituents at ``R_i = 0`` contribute nothing; a jet whose axis vector vanishes
       (a single constituent, say) is not rotated.

    Args:
      features: ``(n_jets, N, 3)`` = ``(log pT, eta_rel, phi_rel)``.
      mask: bool ``(n_jets, N)``.

    Returns:
      ``(n_jets, N, 3)`` with log pT unchanged and the angles transformed; padded slots are zero.
    """
    features = np.asarray(features)
    mask = check_particle_arrays(mask, features=features)
    values = np.where(mask[..., None], features.astype(np.float64), 0.0)
    pt = np.where(mask, np.exp(values[..., 0]), 0.0)
    eta_center, phi_center = _weighted_centroid(pt, values[..., 1], values[..., 2])
    eta, phi = values[..., 1] - eta_center, values[..., 2] - phi_center
    radius = np.hypot(eta, phi)
    weight = np.where(radius > 0, pt / np.where(radius > 0, radius, 1.0), 0.0)
    angle = _angle_to_vertical((weight * eta).sum(1), (weight * phi).sum(1))
    eta, phi = _rotate(eta, phi, angle)
    rotated = np.stack([values[..., 0], eta, phi], axis=-1)
    return np.where(mask[..., None], rotated, 0.0).astype(_float_dtype(features))


def center_rotate_flip_nae(pt: Any, eta: Any, phi: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """The NAE jet-image preprocessing: centre, rotate to 12 o'clock, flip the hardest part lower-left.

    1. Centre on the pT-weighted (kT-weighted) centroid of (eta, phi).
    2. Rotate about the origin so the principal axis of the pT-weighted inertia tensor
       ``C = sum_i pT_i (x_i x_i^T)``, ``x_i = (eta_i, phi_i)``, (the eigenvector of the larger
       eigenvalue: the direction of largest spread) points along phi (12 o'clock).
    3. Flip (mirror) ``eta -> -eta`` if more pT lies at ``eta > 0`` than at ``eta < 0``, and
       ``phi -> -phi`` if more pT lies at ``phi > 0`` than at ``phi < 0``. Afterwards the pT
       at ``eta < 0`` (left) and at ``phi < 0`` (lower) is at least that on the other side, so the
       hardest region is in the lower-left quadrant of a `jaxebm.data.images.jet_images` image
       (eta to the right, phi up). Ties are not flipped.

    Inputs are angles relative to the jet axis (e.g. ``eta_rel``, ``phi_rel`` from
    `constituent_features`), so no azimuth wraps inside a jet.

    Args:
      pt: ``(n_jets, N)`` transverse momenta (any positive weight; only ratios matter).
      eta, phi: ``(n_jets, N)`` angles relative to the jet axis.
      mask: bool ``(n_jets, N)``.

    Returns:
      ``(eta, phi)``, each ``(n_jets, N)``; pT is unchanged and not returned. Padded slots are zero.
    """
    mask = check_particle_arrays(mask, pt=pt, eta=eta, phi=phi)
    dtype = _float_dtype(np.asarray(eta))
    weights = np.where(mask, np.asarray(pt, np.float64), 0.0)
    eta = np.where(mask, np.asarray(eta, np.float64), 0.0)
    phi = np.where(mask, np.asarray(phi, np.float64), 0.0)
    eta_center, phi_center = _weighted_centroid(weights, eta, phi)
    eta, phi = eta - eta_center, phi - phi_center
    c_ee, c_pp, c_ep = (weights * eta * eta).sum(1), (weights * phi * phi).sum(1), (weights * eta * phi).sum(1)
    axis_angle = 0.5 * np.arctan2(2 * c_ep, c_ee - c_pp)  # direction of the major axis
    eta, phi = _rotate(eta, phi, np.pi / 2 - axis_angle)
    flip_eta = (weights * (eta > 0)).sum(1) > (weights * (eta < 0)).sum(1)
    flip_phi = (weights * (phi > 0)).sum(1) > (weights * (phi < 0)).sum(1)
    eta = np.where(flip_eta[:, None], -eta, eta)
    phi = np.where(flip_phi[:, None], -phi, phi)
    return np.where(mask, eta, 0.0).astype(dtype), np.where(mask, phi, 0.0).astype(dtype)


def pad_or_truncate(features: Any, mask: Any, num_constituents: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``num_constituents`` real constituents of each jet, padding with zeros.

    Real constituents are moved to the front in their given order (the schema stores them
    pT-ordered, so these are the hardest ones); slots beyond a jet's multiplicity are zero-padded
    and masked out.

    Args:
      features: ``(n_jets, N, ...)`` any per-constituent array (features or four-momenta).
      mask: bool ``(n_jets, N)``.
      num_constituents: the output's constituent axis length, >= 1.

    Returns:
      ``(features (n_jets, num_constituents, ...), mask (n_jets, num_constituents))``.
    """
    features = np.asarray(features)
    mask = check_particle_arrays(mask, features=features)
    if num_constituents < 1:
        raise JetInputError(f"num_constituents must be >= 1, got {num_constituents}")
    order = np.argsort(~mask, axis=1, kind="stable")[:, :num_constituents]
    new_mask = np.take_along_axis(mask, order, axis=1)
    index = order.reshape(order.shape + (1,) * (features.ndim - 2))
    new_features = np.take_along_axis(features, index, axis=1)
    new_features = np.where(new_mask.reshape(index.shape), new_features, 0)
    missing = num_constituents - new_mask.shape[1]
    if missing > 0:
        new_mask = np.pad(new_mask, ((0, 0), (0, missing)))
        new_features = np.pad(new_features, [(0, 0), (0, missing)] + [(0, 0)] * (features.ndim - 2))
    return new_features, new_mask


def _namespace(array: Any):
    return jnp if isinstance(array, jax.Array) else np


@dataclasses.dataclass(frozen=True, eq=False)
class Standardizer:
    """Per-feature affine standardisation fitted on real constituents only.

    Store it with a run (`to_dict` / `from_dict`, JSON-friendly) so samples can be mapped back to
    physical units. `apply` and `invert` accept numpy or jax arrays (jittable) and return the
    input's array type and dtype; padded slots come out as zeros.

    Attributes:
      mean: ``(F,)`` per-feature mean over real constituents.
      std: ``(F,)`` per-feature standard deviation; a feature without spread gets 1.
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self):
        mean, std = np.array(self.mean, np.float64), np.array(self.std, np.float64)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise JetInputError(f"mean and std must both be (F,), got shapes {mean.shape} and {std.shape}")
        if not np.all(std > 0):
            raise JetInputError(f"std must be positive, got {std}")
        mean.flags.writeable = std.flags.writeable = False
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def fit(cls, features: Any, mask: Any) -> Standardizer:
        """Statistics of ``features (n_jets, N, F)`` over the slots where ``mask (n_jets, N)`` holds."""
        features = np.asarray(features)
        mask = check_particle_arrays(mask, features=features)
        if features.ndim != 3:
            raise JetInputError(f"features must be (n_jets, N, F), got shape {features.shape}")
        if not mask.any():
            raise JetInputError("mask selects no constituent: cannot fit a Standardizer")
        real = features[mask].astype(np.float64)
        std = real.std(axis=0)
        return cls(mean=real.mean(axis=0), std=np.where(std > 0, std, 1.0))

    def _check(self, features: Any, mask: Any) -> None:
        """Shape-only checks, so that `apply` / `invert` trace under `jax.jit`."""
        if np.ndim(features) != 3 or tuple(np.shape(features)[:2]) != tuple(np.shape(mask)):
            raise JetInputError(
                f"features must be (n_jets, N, F) with mask (n_jets, N), got shapes "
                f"{np.shape(features)} and {np.shape(mask)}"
            )
        if features.shape[-1] != self.mean.shape[0]:
            raise JetInputError(
                f"features have {features.shape[-1]} features, the Standardizer {self.mean.shape[0]}"
            )

    def apply(self, features: Any, mask: Any) -> Any:
        """``(features - mean) / std`` on real constituents, zeros elsewhere; ``(n_jets, N, F)``."""
        self._check(features, mask)
        xp = _namespace(features)
        scaled = (features - self.mean) / self.std
        return xp.where(xp.asarray(mask)[..., None], scaled, 0).astype(features.dtype)

    def invert(self, features: Any, mask: Any) -> Any:
        """``features * std + mean`` on real constituents, zeros elsewhere; ``(n_jets, N, F)``."""
        self._check(features, mask)
        xp = _namespace(features)
        restored = features * self.std + self.mean
        return xp.where(xp.asarray(mask)[..., None], restored, 0).astype(features.dtype)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}`` as plain floats (JSON-serialisable)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Standardizer:
        """Inverse of `to_dict`."""
        missing = {"mean", "std"} - set(data)
        if missing:
            raise JetInputError(f"Standardizer dict lacks keys {sorted(missing)}")
        return cls(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]))
