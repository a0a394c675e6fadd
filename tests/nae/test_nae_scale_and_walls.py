"""The NAE's intensity scale (the network sees c x; energies stay in raw units) and its data chain: MALA
with reflecting walls at 0 and 1 samples a known density on [0, 1]."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxebm.experiments import nae_data
from jaxebm.models.nae_autoencoder import ConvAE, ConvAEConfig
from jaxebm.sampling import mala
from jaxebm.train import nae

SIZE = 8
TINY = ConvAEConfig(image_size=SIZE, channels=2, hidden_dim=8, init="lecun", output_bias_init=-2.0)


def test_scaled_network_is_the_plain_network_on_scaled_images_in_raw_units():
    """With scale c the network computes on c x and answers in raw units: reconstruction(x) = plain(c x) / c
    and E(x) = E_plain(c x) / c^2 = E' / c^2 for the same parameters."""
    c = 8.7
    x = jax.random.uniform(jax.random.key(0), (4, SIZE, SIZE), maxval=0.1)
    plain, scaled = ConvAE(TINY), ConvAE(ConvAEConfig(**{**TINY.__dict__, "intensity_scale": c}))
    variables = jax.jit(plain.init)(jax.random.key(1), x)

    @jax.jit
    def outputs(v, x):
        return (scaled.apply(v, x), plain.apply(v, c * x), scaled.apply(v, x, method="energy"),
                plain.apply(v, c * x, method="energy"))

    recon, plain_recon, energy, plain_energy = outputs(variables, x)
    np.testing.assert_allclose(recon, plain_recon / c, rtol=1e-5)
    np.testing.assert_allclose(energy, plain_energy / c**2, rtol=1e-4)
    with pytest.raises(ValueError, match="intensity_scale"):
        ConvAEConfig(intensity_scale=0.0)


def test_intensity_scale_rules_and_the_missing_record(tmp_path):
    images = np.zeros((3, SIZE, SIZE), np.float32)
    images[1, 2, 3] = 0.125
    assert nae_data.intensity_scale_of(images, "max_pixel") == pytest.approx(8.0)
    assert nae_data.intensity_scale_of(images, "none") == 1.0
    with pytest.raises(ValueError, match="positive pixel"):
        nae_data.intensity_scale_of(np.zeros_like(images), "max_pixel")
    with pytest.raises(nae_data.IntensityScaleError, match="intensity.json is missing"):
        nae_data.read_intensity_scale(tmp_path)
    with pytest.raises(ValueError, match="intensity_scale"):
        nae_data.DataConfig(intensity_scale="mean")


MU, SCALE = -0.5, 0.3


def _wall_chain_samples(num_chains: int = 4096, num_steps: int = 200):
    """Final states of the NAE's data chain (MALA with reflecting walls at 0 and 1 and the tied Table 1
    proposal, here with a noise of 0.2 so that proposals cross the wall at 0 often) on a target
    N(-0.5, 0.3^2) truncated to [0, 1]: a density falling from the wall at 0."""
    config = nae.NAEConfig(x_step_size=0.05, x_noise_scale=0.2, x_noise_anneal="none", x_grad_clip_norm=None)
    chain = config.data_chain_config
    assert chain.bounds == (0.0, 1.0) and chain.bounds_mode == "reflect"
    temperature = chain.temperature  # the chain targets exp(-E / T): give E = T * (x - mu)^2 / (2 s^2)

    def energy_fn(x):  # (B, 1) -> (B,)
        return temperature * jnp.sum(jnp.square(x - MU), axis=-1) / (2 * SCALE**2)

    x0 = jax.random.uniform(jax.random.key(0), (num_chains, 1))
    x, info = jax.jit(lambda key: mala.run_chain(key, x0, energy_fn, chain, num_steps, trace=True))(jax.random.key(1))
    return np.asarray(x)[:, 0], float(jnp.mean(info.acceptance_rate))


def test_reflecting_wall_data_chain_samples_a_truncated_gaussian_on_the_unit_interval():
    """Mean, variance and the mass below 0.1 (next to the wall) of 4096 independent chains match the
    truncated Gaussian within 5 Monte Carlo standard errors (fixed seeds: at most 1.7). Leaving the mirror
    images (2 * 0 - y) out of the reflected proposal's density in the Metropolis ratio moves the mean by
    19 standard errors."""
    samples, acceptance = _wall_chain_samples()
    truth = stats.truncnorm((0.0 - MU) / SCALE, (1.0 - MU) / SCALE, loc=MU, scale=SCALE)
    assert np.all((samples >= 0.0) & (samples <= 1.0))
    num = len(samples)
    for name, values, expected in (("mean", samples, truth.mean()),
                                   ("variance", np.square(samples - truth.mean()), truth.var()),
                                   ("P(x < 0.1)", (samples < 0.1).astype(np.float64), truth.cdf(0.1))):
        error = abs(values.mean() - expected) / (values.std(ddof=1) / np.sqrt(num))
        assert error < 5.0, f"{name}: {values.mean():.4f} vs {expected:.4f} ({error:.1f} standard errors)"
    assert 0.2 < acceptance < 0.95
