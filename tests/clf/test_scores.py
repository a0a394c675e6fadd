"""The one anomaly-score API (`jaxebm.inference.anomaly_scores`): every score against a direct computation or
finite differences, every score's orientation (larger = more anomalous), and a non-constituent model
(an image reconstruction error, as the normalized autoencoder's) plugged into the same API."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.inference import SCORE_NAMES, anomaly_scores, model_outputs_fn
from jaxebm.models import TransformerConfig, TransformerEnergy

CENTRES = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # class y: constituents near CENTRES[y]


def quadratic_logits(params, x, mask):
    """``g(x)_y = -params * sum over real slots |x_n - c_y|^2``: class y is most probable near c_y."""
    squared = jnp.sum(jnp.square(x[:, :, None, :] - CENTRES), axis=-1)  # (B, N, K)
    return -params * jnp.sum(jnp.where(mask[..., None], squared, 0.0), axis=1)


def test_scores_of_a_hybrid_transformer_match_a_direct_computation_and_finite_differences():
    model = TransformerEnergy(TransformerConfig(num_layers=1, d_model=8, num_heads=2, ff_dim=16, projector_sizes=(16,),
                                                num_classes=3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 4, 3)).astype(np.float32)
    mask = np.arange(4)[None] < rng.integers(1, 5, 7)[:, None]
    params = model.init(jax.random.key(0), x, mask)
    scale = np.array([1.0, 0.5, 2.0], np.float32)
    scores = anomaly_scores(model_outputs_fn(model), params, x, mask, coordinate_scale=scale, background_class=1, batch_size=4)
    assert set(scores) == set(SCORE_NAMES)
    g = np.asarray(model.apply(params, x, mask, method="logits"), np.float64)
    log_norm = np.log(np.sum(np.exp(g), axis=1))
    np.testing.assert_allclose(scores["energy"], -log_norm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores["class_nll"], log_norm - g[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores["class_energy"], -g[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores["min_class_energy"], -g.max(axis=1), rtol=1e-5, atol=1e-6)
    # ||grad_u E|| with u = x * scale, by central differences in u over the real slots
    energy = lambda z: np.asarray(model.apply(params, z, mask), np.float64)  # noqa: E731
    grad = np.zeros(x.shape)
    h = 1e-2
    for n, f in np.ndindex(x.shape[1:]):
        step = np.zeros_like(x)
        step[:, n, f] = h / scale[f]
        grad[:, n, f] = (energy(x + step) - energy(x - step)) / (2 * h)
    expected = np.sqrt(np.sum(np.square(grad) * mask[..., None], axis=(1, 2)))
    np.testing.assert_allclose(scores["score_norm"], expected, rtol=2e-2)
    garbage = np.where(mask[..., None], x, 50.0).astype(np.float32)  # padded slots change nothing
    again = anomaly_scores(model_outputs_fn(model), params, garbage, mask, coordinate_scale=scale, background_class=1, batch_size=4)
    for name in SCORE_NAMES:
        np.testing.assert_allclose(again[name], scores[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_every_score_is_larger_for_the_more_anomalous_jet():
    """Closed-form classes: a jet at the background centre, one at another class's centre, one far from all.
    The energy, score norm and min_y E(x, y) rank far > background; the background-class scores rank both
    the other class and the far jet above the background jet."""
    one = np.ones((1, 2, 3), np.float32)
    background, other, far = (np.asarray(CENTRES[0]) * one, np.asarray(CENTRES[1]) * one, 3.0 * one)
    shifted = (background + np.float32(0.05)).astype(np.float32)  # off-centre: a non-zero gradient
    x = np.concatenate([shifted, other, far])
    mask = np.ones((3, 2), bool)
    scores = anomaly_scores(quadratic_logits, jnp.float32(2.0), x, mask, background_class=0)
    for name in ("energy", "score_norm", "min_class_energy"):
        assert scores[name][2] > scores[name][0], name
    for name in ("class_nll", "class_energy"):
        assert scores[name][1] > scores[name][0] and scores[name][2] > scores[name][0], name
    # closed form of the background-class scores at the shifted jet
    g = -2.0 * np.sum(np.square(shifted[0][:, None, :] - np.asarray(CENTRES)), axis=(0, 2))
    np.testing.assert_allclose(scores["class_energy"][0], -g[0], rtol=1e-5)
    np.testing.assert_allclose(scores["class_nll"][0], np.log(np.exp(g).sum()) - g[0], rtol=1e-4, atol=1e-7)


def test_an_image_reconstruction_energy_plugs_into_the_same_api():
    """E(x) = mean over pixels of (x - r)^2 for a fixed 'reconstruction' r (no mask, no classes):
    grad_x E = 2 (x - r) / P^2 in closed form. And a masked energy that depends on padded slots too."""
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(9, 4, 4)).astype(np.float32)
    reconstruction = rng.uniform(size=(4, 4)).astype(np.float32)
    mse = lambda r, x, mask: jnp.mean(jnp.square(x - r), axis=(1, 2))  # noqa: E731
    scores = anomaly_scores(mse, reconstruction, images, batch_size=4)
    assert set(scores) == {"energy", "score_norm"}
    diff = images.astype(np.float64) - reconstruction
    np.testing.assert_allclose(scores["energy"], np.mean(diff ** 2, axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(scores["score_norm"], np.sqrt(np.sum((2 * diff / 16) ** 2, axis=(1, 2))), rtol=1e-5)
    # a constituent energy that also sees padded slots: the score norm still counts real slots only
    x = rng.normal(size=(5, 4, 3)).astype(np.float32)
    mask = np.arange(4)[None] < np.array([1, 2, 3, 4, 2])[:, None]
    every_slot = lambda w, x, mask: 0.5 * w * jnp.sum(jnp.square(x), axis=(1, 2))  # noqa: E731
    norms = anomaly_scores(every_slot, jnp.float32(3.0), x, mask)["score_norm"]
    np.testing.assert_allclose(norms, np.sqrt(np.sum(np.square(3.0 * x) * mask[..., None], axis=(1, 2))), rtol=1e-5)
    with pytest.raises(ValueError, match="background_class"):
        anomaly_scores(quadratic_logits, jnp.float32(1.0), np.zeros((2, 2, 3), np.float32), np.ones((2, 2), bool),
                      background_class=3)
    with pytest.raises(ValueError, match="coordinate_scale"):
        anomaly_scores(mse, reconstruction, images, coordinate_scale=[1.0, -1.0, 1.0, 1.0])
