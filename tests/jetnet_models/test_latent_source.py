"""What the ConVAE + NF latent flow is trained on (``latent_flow.latent_source``): posterior means or
samples z ~ q(z|x), from the pure data function through the benchmark's training of the two networks."""
import json

import numpy as np
import pytest

from jaxebm.config import ConfigError, load_config
from jaxebm.experiments.jetnet_bench import (
    CONFIG_DIR, ConVAESection, ExperimentConfig, LatentFlowSection, _convae_models, latent_flow_data,
)
from jaxebm.models.jet_convae import ConVAEConfig
from jaxebm.runs import SeedJob
from jaxebm.train.vae import StageConfig


def test_sampled_latents_have_the_posterior_spread_around_the_means_and_are_fresh_every_epoch():
    rng = np.random.default_rng(0)
    mean = rng.normal(0.0, 0.1, (20_000, 4))
    logvar = np.full_like(mean, np.log(0.5**2))  # sigma 0.5, five times the means' spread

    sampled = latent_flow_data("sample", mean, logvar, seed=3)
    z0, z1 = sampled(0), sampled(1)
    assert z0.shape == mean.shape and z0.dtype == np.float32
    np.testing.assert_allclose(np.std(z0 - mean, axis=0), 0.5, rtol=0.03)
    np.testing.assert_allclose(np.mean(z0 - mean, axis=0), 0.0, atol=0.02)
    assert not np.allclose(z0, z1)  # a fresh draw per epoch
    np.testing.assert_array_equal(z0, sampled(0))  # reproducible (resumed runs see the same epoch)

    means = latent_flow_data("mean", mean, logvar, seed=3)
    np.testing.assert_array_equal(means(0), mean)
    np.testing.assert_array_equal(means(7), mean)
    with pytest.raises(ValueError, match="latent source"):
        latent_flow_data("samples", mean, logvar, seed=3)


def test_bad_latent_source_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="latent_flow.latent_source"):
        load_config(ExperimentConfig, CONFIG_DIR / "smoke.toml", ['latent_flow.latent_source="posterior"'])


def _tiny_config(source: str) -> ExperimentConfig:
    vae = ConVAESection(ConVAEConfig(latent_dim=4, num_filters=2, kernel_size=2, num_linear=8, num_conv_layers=2,
                                     num_particles=5), stage=StageConfig(1e-3, 50, 1))
    return ExperimentConfig(models=("convae_nf",), convae_rec=vae,
                            latent_flow=LatentFlowSection(1, (4,), StageConfig(1e-3, 50, 1), latent_source=source))


def test_the_benchmark_trains_its_latent_flow_on_what_the_config_names(tmp_path):
    """Same seed, same ConVAE: only the flow's inputs differ. Sampled latents add the posterior variance
    (~1 for a barely trained encoder) to the means' spread, so their spread is far larger."""
    momenta = np.random.default_rng(1).uniform(1.0, 100.0, (200, 3, 5))
    spread = {}
    for source in ("mean", "sample"):
        job = SeedJob(seed=0, directory=tmp_path / source, data={}, progress=False)
        job.directory.mkdir()
        samplers, _ = _convae_models(_tiny_config(source), job, momenta, train=True)
        assert set(samplers) == {"convae_nf"}
        record = json.loads((job.directory / "latent_flow" / "metrics.jsonl").read_text().splitlines()[-1])
        spread[source] = record["input_std"]
    assert spread["sample"] > 3 * spread["mean"], spread
