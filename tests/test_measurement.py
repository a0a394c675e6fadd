"""How results are measured: the paper's JSD, like-for-like four-vectors, the selection distance, score
norms in raw coordinates, the anomaly bundle on known answers, and the paper's generation schedule."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from jaxebm.config import load_config
from jaxebm.data.io import JetSample
from jaxebm.data.observables import jet_kinematics
from jaxebm.data.pipeline import PAPER_NOISE_MEAN, PAPER_NOISE_STD, ConstituentPipeline
from jaxebm.data.preprocess import features_to_four_vectors
from jaxebm.evaluation import anomaly_quality, generation_quality, selection_distance
from jaxebm.experiments import preset_path
from jaxebm.experiments.ebm import ExperimentConfig
from jaxebm.inference import GenerationConfig, anomaly_scores, model_outputs_fn
from jaxebm.metrics import histogram_jsd, paper_jsd
from jaxebm.train.cd import make_noise_fn

def energy_and_norm(model, params, x, mask, **kwargs):
    """The ``energy`` and ``score_norm`` of the score API for a constituent energy module."""
    scores = anomaly_scores(model_outputs_fn(model), params, x, mask, **kwargs)
    return scores["energy"], scores["score_norm"]


NUM_SLOTS = 10


def jets(num_jets: int, seed: int = 0, pt_scale: float = 1.0) -> JetSample:
    """Massless constituents around a random axis, multiplicities 3..14 (many below NUM_SLOTS)."""
    rng = np.random.default_rng(seed)
    multiplicity = rng.integers(3, 15, num_jets)
    features = np.zeros((num_jets, 14, 3))
    mask = np.arange(14)[None] < multiplicity[:, None]
    features[..., 0] = np.sort(rng.normal(3.5, 1.0, (num_jets, 14)), axis=1)[:, ::-1] + np.log(pt_scale)
    features[..., 1:] = rng.normal(0.0, 0.2, (num_jets, 14, 2))
    p4 = features_to_four_vectors(np.where(mask[..., None], features, 0.0), mask,
                                  rng.uniform(-1, 1, num_jets), rng.uniform(-3, 3, num_jets))
    kin = jet_kinematics(p4, mask)
    table = np.stack([kin["pt"], kin["eta"], kin["phi"], kin["mass"], multiplicity], axis=1)
    return JetSample(p4.astype(np.float32), mask, table.astype(np.float32), None, {})


def test_paper_jsd_matches_a_hand_computation():
    # 50 bins of 16 GeV on [200, 1000]: 250 and 260 fall in bin 3, 900 in bin 43, 1000 (the closed upper
    # edge) in bin 49; 1500 is outside the range and not counted (torch.histc).
    real, gen = [250.0, 250.0, 260.0, 900.0, 1500.0], [250.0, 900.0, 900.0, 1000.0]
    p = np.array([3, 1, 0]) / 4  # bins 3, 43, 49
    q = np.array([1, 2, 1]) / 4
    m = (p + q) / 2
    kl = lambda a: sum(a_i * math.log(a_i / m_i) for a_i, m_i in zip(a, m) if a_i > 0)
    expected = (0.5 * kl(p) + 0.5 * kl(q)) / 50
    assert paper_jsd(real, gen, (200.0, 1000.0)) == pytest.approx(expected, rel=1e-12)
    # The textbook JSD on the same bins is 50 times larger when every value is inside the range.
    inside_real, inside_gen = real[:4], gen
    assert histogram_jsd(inside_real, inside_gen, value_range=(200.0, 1000.0)) == pytest.approx(
        50 * paper_jsd(inside_real, inside_gen, (200.0, 1000.0)), rel=1e-12)
    # nothing inside the range (the paper's code: NaN) counts as disjoint, the maximum
    assert paper_jsd(real, [1500.0, 2000.0], (200.0, 1000.0)) == pytest.approx(math.log(2) / 50)


def test_real_and_generated_jets_take_the_same_four_vector_path():
    """A perfect generator (the real jets' own model features) scores exactly the truth in both modes:
    in "zeros" mode every padded slot is a 1 GeV particle on the axis for the real jets too."""
    sample = jets(300)
    for padding_mode in ("zeros", "mask"):
        pipeline = ConstituentPipeline.fit(sample, num_constituents=NUM_SLOTS, padding_mode=padding_mode)
        real_p4, real_mask = pipeline.jets_as_model_sees(sample)
        x, model_mask, true_mask = pipeline.transform(sample)
        quality = generation_quality(real_p4, real_mask, pipeline.to_four_vectors(x, model_mask), model_mask,
                                     with_jetnet=False)
        assert all(quality[k] == 0.0 for k in ("jsd_pt", "jsd_mass", "paper_jsd_pt", "w1_mass")), quality
        if padding_mode == "zeros":
            padded = real_mask & ~true_mask
            assert padded.sum() > 100
            np.testing.assert_allclose(real_p4[padded], np.tile([1.0, 1.0, 0.0, 0.0], (padded.sum(), 1)), atol=1e-5)
        else:
            np.testing.assert_array_equal(real_mask, true_mask)


def test_raw_feature_space_is_the_papers():
    sample = jets(300)
    raw = ConstituentPipeline.fit(sample, num_constituents=NUM_SLOTS, feature_space="raw")
    standardized = ConstituentPipeline.fit(sample, num_constituents=NUM_SLOTS)
    x_raw, mask, _ = raw.transform(sample)
    x_std, _, _ = standardized.transform(sample)
    np.testing.assert_allclose(x_raw, standardized.to_raw_features(x_std, mask), atol=1e-5)
    assert np.abs(x_raw[..., 0]).max() > 3  # log pT in log GeV, not standardised
    noise = make_noise_fn(**raw.noise_parameters())(jax.random.key(0), 2000)
    np.testing.assert_allclose(np.asarray(noise).reshape(-1, 3).mean(0), PAPER_NOISE_MEAN, atol=0.02)
    np.testing.assert_allclose(np.asarray(noise).reshape(-1, 3).std(0), PAPER_NOISE_STD, rtol=0.02)
    np.testing.assert_array_equal(raw.raw_scale, [1.0, 1.0, 1.0])
    assert ConstituentPipeline.from_dict(raw.to_dict()).feature_space == "raw"
    with pytest.raises(ValueError, match="feature_space"):
        ConstituentPipeline.fit(sample, num_constituents=NUM_SLOTS, feature_space="scaled")


class QuadraticEnergy(nn.Module):
    """E(x) = 0.5 * sum over real slots of sum_f w_f x_f^2, with fixed w = (1, 2, 3)."""

    @nn.compact
    def __call__(self, x, mask, deterministic=True):
        weights = jnp.array([1.0, 2.0, 3.0]) + 0.0 * self.param("unused", nn.initializers.zeros, ())
        return 0.5 * jnp.sum(jnp.where(mask[..., None], weights * x**2, 0.0), axis=(1, 2))


def test_score_norm_in_raw_coordinates_follows_the_chain_rule():
    """Model in standardised space x = (u - mean) / std: ||grad_u E|| = ||grad_x E / std||, padded slots excluded."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 5, 3)).astype(np.float32)
    mask = rng.random((7, 5)) < 0.7
    model = QuadraticEnergy()
    params = model.init(jax.random.key(0), x, mask)
    std = np.array([0.5, 2.0, 4.0], np.float32)
    energy, norm_model = energy_and_norm(model, params, x, mask)
    _, norm_raw = energy_and_norm(model, params, x, mask, coordinate_scale=std)
    grad = np.where(mask[..., None], np.array([1.0, 2.0, 3.0]) * x, 0.0)  # dE/dx by hand
    np.testing.assert_allclose(energy, 0.5 * np.sum(np.where(mask[..., None], [1.0, 2.0, 3.0] * x**2, 0), (1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(norm_model, np.sqrt(np.sum(grad**2, (1, 2))), rtol=1e-5)
    np.testing.assert_allclose(norm_raw, np.sqrt(np.sum((grad / std) ** 2, (1, 2))), rtol=1e-5)
    with pytest.raises(ValueError, match="coordinate_scale"):
        energy_and_norm(model, params, x, mask, coordinate_scale=[1.0, -1.0, 1.0])


def test_selection_distance_is_the_sum_of_scaled_w1_and_its_error_follows_the_sample_size():
    real, gen = jets(400, seed=1), jets(400, seed=2, pt_scale=1.1)
    real_obs, gen_obs = (jet_kinematics(s.constituents, s.mask) for s in (real, gen))
    expected = sum(wasserstein_distance(real_obs[k], gen_obs[k]) / np.std(real_obs[k]) for k in ("pt", "mass", "m_over_pt"))
    distance, error = selection_distance(real.constituents, real.mask, gen.constituents, gen.mask)
    assert distance == pytest.approx(expected, rel=1e-9)
    assert selection_distance(real.constituents, real.mask, real.constituents, real.mask)[0] == 0.0
    # the bootstrap error of D shrinks like 1/sqrt(n): 4x the generated jets, about half the error
    big = jets(1600, seed=3, pt_scale=1.1)
    _, big_error = selection_distance(real.constituents, real.mask, big.constituents, big.mask, num_bootstrap=200)
    _, small_error = selection_distance(real.constituents, real.mask, gen.constituents, gen.mask, num_bootstrap=200)
    assert 0.35 < big_error / small_error < 0.7


def test_anomaly_quality_on_known_answers():
    background, signal = np.array([0.0, 1.0, 2.0, 3.0, 4.0]), np.array([1.0, 5.0, 6.0, 7.0, 8.0])
    # signal 1 beats background 0 and ties with 1 (counted 1/2); 5, 6, 7, 8 beat all five: 21.5 of 25 pairs
    out = anomaly_quality(background, {"sig": signal})
    assert out["auc_sig"] == pytest.approx(21.5 / 25)
    assert anomaly_quality(background, {"sig": -signal})["auc_sig"] == pytest.approx(0.0)
    big_background = np.linspace(0, 1, 1000)
    result = anomaly_quality(big_background, {"sig": np.full(100, 0.95)}, signal_efficiency=0.2)
    assert result["inv_eps_b_sig"] == pytest.approx(1000 / 50, rel=0.05)  # 5% of the background lies above 0.95


def test_generation_defaults_and_presets_run_the_papers_schedule():
    config = GenerationConfig()
    langevin = config.langevin_config
    steps = jnp.array([0, 39, 40, 79, 80, 199])
    np.testing.assert_allclose(jax.vmap(langevin.step_size)(steps), [0.1, 0.1, 0.08, 0.08, 0.064, 0.1 * 0.8**4],
                               rtol=1e-6)
    assert (config.num_steps, config.noise_scale, config.temperature) == (200, 0.001, 1.0)
    for preset in ("cpu", "paper"):
        generation = load_config(ExperimentConfig, preset_path("ebm", preset)).generation
        assert (generation.num_steps, generation.step_size, generation.step_decay, generation.decay_every,
                generation.noise_scale) == (200, 0.1, 0.8, 40, 0.001), preset
