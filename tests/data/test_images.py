"""Jet images: pixel placement, normalisation, Gaussian filter, pT^n remap, orientation."""

import numpy as np
import pytest

from jaxebm.data.images import jet_images
from jaxebm.data.preprocess import center_rotate_flip_nae
from jaxebm.errors import JetInputError

D_ETA, D_PHI = 0.029, 0.035


def narrow_jets(seed, num_jets=32, num_slots=40, spread=0.1, min_constituents=1):
    """Random (pt, eta, phi, mask) of jets well inside the 40 x 40 window; NaN in padded slots."""
    rng = np.random.default_rng(seed)
    pt = rng.exponential(10.0, (num_jets, num_slots))
    eta = np.clip(rng.normal(0, spread, (num_jets, num_slots)), -0.5, 0.5)
    phi = np.clip(rng.normal(0, spread, (num_jets, num_slots)), -0.6, 0.6)
    mask = np.arange(num_slots) < rng.integers(min_constituents, num_slots + 1, (num_jets, 1))
    garbage = [np.where(mask, x, np.nan) for x in (pt, eta, phi)]
    return (*garbage, mask)


def test_images_sum_to_one_when_all_constituents_are_inside():
    pt, eta, phi, mask = narrow_jets(0)
    images = jet_images(pt, eta, phi, mask)
    assert images.shape == (32, 40, 40) and images.dtype == np.float32
    np.testing.assert_allclose(images.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert np.all(images >= 0)


def test_unnormalised_pixels_hold_summed_pt():
    pt = np.array([[3.0, 4.0, 5.0]])
    eta, phi = np.array([[0.001, 0.002, 0.3]]), np.array([[0.001, 0.003, -0.3]])
    image = jet_images(pt, eta, phi, np.ones((1, 3), bool), normalize=False)[0]
    assert image[19, 20] == 7.0  # the first two share a pixel
    assert image.sum() == 12.0


@pytest.mark.parametrize(
    ("eta", "phi", "row", "col"),
    [
        (0.5 * D_ETA, 0.5 * D_PHI, 19, 20),  # just up and right of the centre
        (-0.5 * D_ETA, -0.5 * D_PHI, 20, 19),  # just down and left
        (-19.5 * D_ETA, 19.5 * D_PHI, 0, 0),  # top-left corner: small eta, large phi
        (19.5 * D_ETA, -19.5 * D_PHI, 39, 39),  # bottom-right corner
        (3.5 * D_ETA, -7.5 * D_PHI, 27, 23),
    ],
)
def test_single_constituent_lands_in_the_expected_pixel(eta, phi, row, col):
    image = jet_images(np.array([[2.0]]), np.array([[eta]]), np.array([[phi]]), np.ones((1, 1), bool))[0]
    assert image[row, col] == 1.0
    assert np.count_nonzero(image) == 1


def test_constituents_outside_the_window_are_dropped():
    pt = np.array([[1.0, 3.0, 1.0]])
    eta, phi = np.array([[0.0, 0.9, 0.0]]), np.array([[0.0, 0.0, -0.8]])
    image = jet_images(pt, eta, phi, np.ones((1, 3), bool))[0]
    assert image.sum() == pytest.approx(0.2)
    assert image[20, 20] == pytest.approx(0.2)


def test_padded_slots_never_enter_an_image():
    pt, eta, phi, mask = narrow_jets(1)
    zeros = [np.where(mask, x, 0.0) for x in (pt, eta, phi)]
    np.testing.assert_array_equal(jet_images(pt, eta, phi, mask), jet_images(*zeros, mask))


def test_gaussian_filter_conserves_the_sum_and_spreads():
    pt, eta, phi, mask = narrow_jets(2, spread=0.05)
    sharp = jet_images(pt, eta, phi, mask)
    smooth = jet_images(pt, eta, phi, mask, sigma=1.0)
    np.testing.assert_allclose(smooth.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert np.all(smooth.max(axis=(1, 2)) < sharp.max(axis=(1, 2)))
    single = jet_images(np.array([[1.0]]), np.array([[0.0]]), np.array([[0.0]]), np.ones((1, 1), bool), sigma=1.0)[0]
    np.testing.assert_allclose(single, single.T, atol=1e-7)  # isotropic around pixel (20, 20)
    assert np.unravel_index(np.argmax(single), single.shape) == (20, 20)


def test_pt_power_remaps_normalised_pixel_intensities():
    """Default: the public code's renormalised remap I^n / sum(I^n); "none": plain I^n."""
    pt, eta, phi, mask = narrow_jets(3)
    linear = jet_images(pt, eta, phi, mask).astype(np.float64)
    for power in (0.5, 0.1, 0.01):
        remapped = jet_images(pt, eta, phi, mask, pt_power=power, pt_power_norm="none")
        np.testing.assert_allclose(remapped, linear**power, rtol=1e-5)
        renormalised = jet_images(pt, eta, phi, mask, pt_power=power)
        np.testing.assert_allclose(renormalised, linear**power / np.sum(linear**power, axis=(1, 2), keepdims=True),
                                   rtol=1e-5)
        np.testing.assert_allclose(renormalised.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    filtered = jet_images(pt, eta, phi, mask, sigma=1.0).astype(np.float64)
    np.testing.assert_allclose(jet_images(pt, eta, phi, mask, sigma=1.0, pt_power=0.3, pt_power_norm="none"),
                               filtered**0.3, rtol=1e-4)
    with pytest.raises(JetInputError, match="pt_power_norm"):
        jet_images(pt, eta, phi, mask, pt_power=0.3, pt_power_norm="max")


def test_nae_preprocessing_puts_the_hardest_region_lower_left():
    # (one or two constituents end up on the vertical axis, between pixel columns: no side is harder)
    pt, eta, phi, mask = narrow_jets(4, spread=0.08, min_constituents=3)
    eta, phi = center_rotate_flip_nae(pt, eta, phi, mask)
    images = jet_images(pt, eta, phi, mask)
    assert np.all(images[:, :, :20].sum(axis=(1, 2)) >= images[:, :, 20:].sum(axis=(1, 2)) - 1e-6)  # left
    assert np.all(images[:, 20:, :].sum(axis=(1, 2)) >= images[:, :20, :].sum(axis=(1, 2)) - 1e-6)  # lower


def test_bad_arguments_are_rejected():
    pt, eta, phi, mask = narrow_jets(5, num_jets=2)
    with pytest.raises(JetInputError, match="phi_rel"):
        jet_images(pt, eta, phi[:, :3], mask)
    with pytest.raises(JetInputError, match="pt_power"):
        jet_images(pt, eta, phi, mask, pt_power=0.0)
