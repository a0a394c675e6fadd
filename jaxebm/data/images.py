"""Jet images: constituent pT deposited on an (eta, phi) pixel grid centred on the jet.

Orientation (the same as a plotted matrix with ``imshow``): column index grows with eta (eta to
the right), row index falls with phi (row 0 at the top holds the largest phi). So "12 o'clock" is
+phi, and after `jaxebm.data.preprocess.center_rotate_flip_nae` the principal axis is vertical and
the hardest region is in the lower-left quadrant (rows >= P/2, columns < P/2).

Pixel ``(row, col)`` covers ``eta in [(col - P/2) * d_eta, (col - P/2 + 1) * d_eta)`` and
``phi in ((P/2 - row - 1) * d_phi, (P/2 - row) * d_phi]`` for ``P = num_pixels``, so the grid is
centred on ``(0, 0)``: with 40 pixels the window is ``|eta| < 0.58`` and ``|phi| < 0.70``.

Example:
    >>> eta, phi = center_rotate_flip_nae(pt, eta_rel, phi_rel, mask)  # doctest: +SKIP
    >>> images = jet_images(pt, eta, phi, mask, sigma=1.0)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage

from jaxebm.data.preprocess import check_particle_arrays
from jaxebm.errors import JetInputError

__all__ = ["REMAP_NORMS", "jet_images", "pixel_indices"]

REMAP_NORMS = ("sum", "none")  # after I -> I^n: divide by the image's new sum (the public code's), or not


def pixel_indices(
    eta: np.ndarray, phi: np.ndarray, num_pixels: int, pixel_size: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel ``(row, col)`` of each constituent and whether it falls inside the window.

    Args:
      eta, phi: ``(n_jets, N)`` angles relative to the jet axis.
      num_pixels: pixels per side ``P``.
      pixel_size: ``(d_eta, d_phi)`` pixel widths.

    Returns:
      ``(row, col, inside)``, each ``(n_jets, N)``: int row and column (meaningful where inside),
      bool inside.
    """
    d_eta, d_phi = pixel_size
    half = num_pixels / 2
    col = np.floor(np.asarray(eta, np.float64) / d_eta + half)
    row = np.floor(half - np.asarray(phi, np.float64) / d_phi)
    inside = (col >= 0) & (col < num_pixels) & (row >= 0) & (row < num_pixels)
    return np.where(inside, row, 0).astype(np.int64), np.where(inside, col, 0).astype(np.int64), inside


def jet_images(
    pt: Any,
    eta_rel: Any,
    phi_rel: Any,
    mask: Any,
    *,
    num_pixels: int = 40,
    pixel_size: tuple[float, float] = (0.029, 0.035),
    sigma: float | None = None,
    pt_power: float = 1.0,
    pt_power_norm: str = "sum",
    normalize: bool = True,
) -> np.ndarray:
    """Pixelise jets: each pixel holds the summed pT of the constituents inside it.

    Steps, in order:

    1. Deposit the pT of every real constituent in its pixel (see the module docstring for the
       grid). Constituents outside the window are dropped.
    2. ``normalize``: divide by the jet's scalar sum of constituent pT, dropped constituents
       included, so an image sums to 1 when every constituent lies inside (less otherwise).
       Jets without pT stay all-zero.
    3. ``sigma``: Gaussian filter of width ``sigma`` pixels over the two image axes only
       (``scipy.ndimage.gaussian_filter``, zero outside the window, truncated at 4 sigma); it
       conserves the sum of an image whose content lies away from the edges.
    4. ``pt_power``: remap every pixel intensity ``I -> I ** pt_power`` (the NAE dark-jet remap,
       ``n`` in {0.5, 0.3, 0.2, 0.1, 0.01}), after normalising and filtering; 1 leaves it as is.
       ``pt_power_norm="sum"`` then divides each remapped image by its sum (the public NAE code's
       ``Reweight``: ``img**n / sum(img**n)``), so every non-empty image sums to 1 again; "none" keeps
       ``I ** n``.

    Args:
      pt: ``(n_jets, N)`` constituent pT in GeV.
      eta_rel, phi_rel: ``(n_jets, N)`` angles relative to the jet axis (centred / rotated).
      mask: bool ``(n_jets, N)``.
      num_pixels: pixels per side.
      pixel_size: ``(d_eta, d_phi)``; the NAE default is ``(0.029, 0.035)``.
      sigma: Gaussian filter width in pixels, or None for no filter.
      pt_power: exponent of the intensity remap, > 0.
      pt_power_norm: "sum" or "none", the remap's normalisation (step 4).
      normalize: divide by the jet pT (step 2).

    Returns:
      float32 ``(n_jets, num_pixels, num_pixels)``.
    """
    mask = check_particle_arrays(mask, pt=pt, eta_rel=eta_rel, phi_rel=phi_rel)
    if num_pixels < 1:
        raise JetInputError(f"num_pixels must be >= 1, got {num_pixels}")
    if pt_power <= 0:
        raise JetInputError(f"pt_power must be positive, got {pt_power}")
    if pt_power_norm not in REMAP_NORMS:
        raise JetInputError(f"pt_power_norm must be one of {REMAP_NORMS}, got {pt_power_norm!r}")
    if sigma is not None and sigma < 0:
        raise JetInputError(f"sigma must be non-negative, got {sigma}")
    num_jets = mask.shape[0]
    pt = np.where(mask, np.asarray(pt, np.float64), 0.0)
    row, col, inside = pixel_indices(eta_rel, phi_rel, num_pixels, pixel_size)
    keep = mask & inside
    jet_index = np.broadcast_to(np.arange(num_jets)[:, None], mask.shape)
    flat_index = (jet_index * num_pixels + row) * num_pixels + col
    images = np.bincount(flat_index[keep], weights=pt[keep], minlength=num_jets * num_pixels**2)
    images = images.reshape(num_jets, num_pixels, num_pixels)
    if normalize:
        total = pt.sum(axis=1)
        images = images / np.where(total > 0, total, 1.0)[:, None, None]
    if sigma:
        images = scipy.ndimage.gaussian_filter(images, sigma=(0, sigma, sigma), mode="constant")
    if pt_power != 1.0:
        images = np.maximum(images, 0.0) ** pt_power
        if pt_power_norm == "sum":
            total = images.sum(axis=(1, 2), keepdims=True)
            images = images / np.where(total > 0, total, 1.0)
    return images.astype(np.float32)
