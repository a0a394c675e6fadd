"""The constituent pipeline (model space and back) and the inference layer (generation, anomaly scores)."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.data.io import JetSample
from jaxebm.data.observables import jet_kinematics
from jaxebm.data.pipeline import PAPER_NOISE_MEAN, PAPER_NOISE_STD, ConstituentPipeline
from jaxebm.data.preprocess import constituent_pt_eta_phi, features_to_four_vectors
from jaxebm.inference import GenerationConfig, anomaly_scores, generate, model_outputs_fn
from jaxebm.models import TransformerConfig, TransformerEnergy
from jaxebm.train.cd import make_noise_fn

def energy_and_norm(model, params, x, mask, **kwargs):
    """The ``energy`` and ``score_norm`` of the score API for a constituent energy module."""
    scores = anomaly_scores(model_outputs_fn(model), params, x, mask, **kwargs)
    return scores["energy"], scores["score_norm"]


NUM_SLOTS = 8


def synthetic_jets(num_jets: int, seed: int = 0) -> JetSample:
    """Massless constituents around a random jet axis, multiplicities 3..12, pT-ordered."""
    rng = np.random.default_rng(seed)
    multiplicity = rng.integers(3, 13, num_jets)
    features = np.zeros((num_jets, 12, 3), np.float32)
    mask = np.arange(12)[None] < multiplicity[:, None]
    features[..., 0] = np.sort(rng.normal(2.5, 1.0, (num_jets, 12)), axis=1)[:, ::-1]
    features[..., 1:] = rng.normal(0.0, 0.3, (num_jets, 12, 2))
    features = np.where(mask[..., None], features, 0.0)
    p4 = features_to_four_vectors(features, mask, rng.uniform(-1.5, 1.5, num_jets), rng.uniform(-3, 3, num_jets))
    jets = np.zeros((num_jets, 5), np.float32)
    jets[:, 4] = multiplicity
    kin = jet_kinematics(p4, mask)
    jets[:, 0], jets[:, 1], jets[:, 2], jets[:, 3] = kin["pt"], kin["eta"], kin["phi"], kin["mass"]
    return JetSample(p4.astype(np.float32), mask, jets, None, {})


@pytest.mark.parametrize("padding_mode", ["zeros", "mask"])
def test_pipeline_maps_real_jets_back_to_their_centred_four_vectors(padding_mode):
    sample = synthetic_jets(200)
    pipeline = ConstituentPipeline.fit(sample, num_constituents=NUM_SLOTS, padding_mode=padding_mode)
    x, model_mask, real_mask = pipeline.transform(sample)
    assert x.shape == (200, NUM_SLOTS, 3) and real_mask.sum(1).max() == NUM_SLOTS
    assert model_mask.all() if padding_mode == "zeros" else np.array_equal(model_mask, real_mask)
    back = pipeline.to_four_vectors(x, real_mask)
    pt, eta, phi = constituent_pt_eta_phi(back, real_mask)
    original_pt, _, _ = constituent_pt_eta_phi(sample.constituents[:, :NUM_SLOTS], real_mask)  # pT-ordered
    np.testing.assert_allclose(pt, original_pt, rtol=1e-4, atol=1e-4)  # the angles move, the pT do not
    whole = sample.mask.sum(1) <= NUM_SLOTS  # centring uses every constituent, before truncation to N
    for angle in (eta, phi):
        np.testing.assert_allclose((np.sum(pt * angle, 1) / pt.sum(1))[whole], 0.0, atol=1e-5)
    restored = ConstituentPipeline.from_dict(pipeline.to_dict())
    np.testing.assert_array_equal(restored.transform(sample)[0], x)


def test_noise_parameters_give_the_papers_raw_noise():
    pipeline = ConstituentPipeline.fit(synthetic_jets(200), num_constituents=NUM_SLOTS)
    noise = make_noise_fn(**pipeline.noise_parameters())(jax.random.key(0), 4000)
    raw = pipeline.to_raw_features(np.asarray(noise), np.ones(noise.shape[:2], bool)).reshape(-1, 3)
    np.testing.assert_allclose(raw.mean(0), PAPER_NOISE_MEAN, atol=0.03)
    np.testing.assert_allclose(raw.std(0), PAPER_NOISE_STD, rtol=0.03)


@pytest.fixture(scope="module")
def tiny_model():
    model = TransformerEnergy(TransformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=16, projector_sizes=(16,)))
    params = model.init(jax.random.key(0), jnp.zeros((2, NUM_SLOTS, 3)), jnp.ones((2, NUM_SLOTS), bool))
    return model, params


def test_anomaly_scores_match_the_model_and_ignore_padding(tiny_model):
    model, params = tiny_model
    rng = np.random.default_rng(1)
    x = rng.normal(size=(37, NUM_SLOTS, 3)).astype(np.float32)
    mask = np.arange(NUM_SLOTS)[None] < rng.integers(1, NUM_SLOTS + 1, 37)[:, None]
    energy, score_norm = energy_and_norm(model, params, x, mask, batch_size=16)
    np.testing.assert_allclose(energy, model.apply(params, x, mask), rtol=1e-5, atol=1e-6)
    garbage = np.where(mask[..., None], x, 1e3)
    np.testing.assert_allclose(energy_and_norm(model, params, garbage, mask, batch_size=16)[1], score_norm, rtol=1e-5)
    with pytest.raises(ValueError, match="x must be"):
        energy_and_norm(model, params, x[..., :2].reshape(37, -1), mask)


class QuadraticEnergy(nn.Module):
    """``E(x) = 0.5 * sum_{n, f} m_n w_f x_nf^2`` with m the mask (``masked``) or 1 on every slot:
    ``grad_x E = m w x`` in closed form."""

    masked: bool

    @nn.compact
    def __call__(self, x, mask, *, deterministic=True):
        w = self.param("w", lambda key, shape: jnp.array([0.5, 2.0, -1.5]), (3,))
        weight = mask.astype(x.dtype) if self.masked else jnp.ones(mask.shape, x.dtype)
        return 0.5 * jnp.einsum("bnf,bn,f->b", jnp.square(x), weight, w)


@pytest.mark.parametrize("masked", [True, False], ids=["masked-energy", "energy-of-every-slot"])
def test_anomaly_scores_of_a_closed_form_energy(masked):
    """energy = E(x) and score_norm = ||grad_x E|| over the real slots only, even where the model's
    gradient is not zero on padded slots; 37 jets in batches of 16 (the last one padded, trimmed)."""
    model = QuadraticEnergy(masked)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(37, NUM_SLOTS, 3)).astype(np.float32)
    mask = np.arange(NUM_SLOTS)[None] < rng.integers(1, NUM_SLOTS + 1, 37)[:, None]
    params = model.init(jax.random.key(0), x[:2], mask[:2])
    w, x64 = np.array([0.5, 2.0, -1.5]), x.astype(np.float64)
    weight = mask if masked else np.ones_like(mask)
    expected_energy = 0.5 * np.einsum("bnf,bn,f->b", np.square(x64), weight, w)
    expected_score = np.sqrt(np.sum(np.square(w * x64) * mask[..., None], axis=(1, 2)))
    energy, score_norm = energy_and_norm(model, params, x, mask, batch_size=16)
    np.testing.assert_allclose(energy, expected_energy, rtol=1e-5)
    np.testing.assert_allclose(score_norm, expected_score, rtol=1e-5)


def test_generation_keeps_multiplicities_and_lowers_the_energy(tiny_model):
    model, params = tiny_model
    probs = np.zeros(NUM_SLOTS + 1)
    probs[[2, 5]] = 0.5
    noise_fn = make_noise_fn([0.0] * 3, [1.0] * 3, NUM_SLOTS, multiplicity_probs=probs)
    config = GenerationConfig(num_steps=30, step_size=0.05, noise_scale=0.001, batch_size=64)
    x, mask = generate(jax.random.key(3), model, params, noise_fn, config, num_jets=100, progress=False)
    assert x.shape == (100, NUM_SLOTS, 3) and set(np.unique(mask.sum(1))) <= {2, 5}
    assert np.all(x[~mask] == 0.0) and np.all(np.isfinite(x))
    short = dataclasses.replace(config, num_steps=1)
    x_short, _ = generate(jax.random.key(3), model, params, noise_fn, short, num_jets=64, progress=False)
    e_long = model.apply(params, x[:64], mask[:64]).mean()
    e_short = model.apply(params, x_short, mask[:64]).mean()
    assert e_long < e_short  # 30 gradient steps move further down the energy than one
    with pytest.raises(ValueError, match="num_jets"):
        generate(jax.random.key(3), model, params, noise_fn, config, num_jets=0)
