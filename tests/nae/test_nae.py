"""The NAE's autoencoder and training steps: shapes and sphere, spectral norm, on-manifold chains, the
jitted step's loss and buffer, no recompiles, input checks, and the paper's central claim on toy images."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.metrics.tagging import auc
from jaxebm.sampling import schedules
from jaxebm.models.conv_ae import ConvAE, ConvAEConfig, ImageInputError, check_images
from jaxebm.train import nae

SIZE = 12  # toy image side (the paper's 40 is the default)
SMALL = ConvAEConfig(image_size=SIZE, hidden_dim=32, init="lecun")
TINY_CHAINS = dict(batch_size=8, buffer_size=32, z_num_steps=3, x_num_steps=3, z_step_size=10.0,
                   z_noise_scale=0.05, x_step_size=10.0, x_noise_scale=0.01)


def host(tree):
    return jax.tree.map(np.array, tree)


def variables(state):
    return {"params": state.params, **state.spectral}


def toy_images(seed: int, num: int, num_extra: int) -> np.ndarray:
    """``(num, SIZE, SIZE)`` images in [0, 1]: a Gaussian blob near the centre plus ``num_extra``
    blobs at uniform random angles on a ring."""
    rng = np.random.default_rng(seed)
    grid = np.arange(SIZE, dtype=np.float64)
    centre = (SIZE - 1) / 2

    def blob(row, col, amplitude):
        return amplitude[:, None, None] * np.exp(
            -((grid[None, :, None] - row[:, None, None]) ** 2 + (grid[None, None, :] - col[:, None, None]) ** 2) / 2.0)

    jitter = rng.uniform(-0.5, 0.5, (2, num))
    images = blob(centre + jitter[0], centre + jitter[1], rng.uniform(0.6, 0.9, num))
    for _ in range(num_extra):
        angle = rng.uniform(0, 2 * np.pi, num)
        images += blob(centre + 3.5 * np.sin(angle), centre + 3.5 * np.cos(angle), rng.uniform(0.5, 0.8, num))
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def test_shapes_sphere_and_energy_definition():
    model = ConvAE(SMALL)
    x = jnp.asarray(toy_images(0, 4, 1))
    params = model.init(jax.random.key(0), x)
    z = model.apply(params, x, method="encode")
    recon = model.apply(params, x)
    assert z.shape == (4, 3) and recon.shape == (4, SIZE, SIZE)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    assert np.all((recon > 0) & (recon < 1))
    np.testing.assert_allclose(model.apply(params, x, method="energy"), np.mean((x - recon) ** 2, axis=(1, 2)),
                               rtol=1e-5)
    h = model.apply(params, z, method="latent_energy")
    np.testing.assert_allclose(h, model.apply(params, model.apply(params, z, method="decode"), method="energy"),
                               rtol=1e-5)
    paper = ConvAE(ConvAEConfig())
    x40 = jnp.zeros((2, 40, 40))
    shapes = jax.eval_shape(lambda: paper.apply(paper.init(jax.random.key(0), x40), x40, method="encode"))
    assert shapes.shape == (2, 3)


def _spectral_layers(variables_):
    """``[(params dict holding the layer, layer name, stored sigma)]`` for every normalised kernel."""
    found = []

    def visit(stats, params):
        for name, value in stats.items():
            if not name.startswith("SpectralNorm_"):
                visit(value, params[name])
                continue
            for key, leaf in value.items():
                layer, _, kind = key.split("/")
                if kind == "sigma":
                    found.append((params, layer, float(leaf)))

    visit(variables_["batch_stats"], variables_["params"])
    return found


def _kernels_and_sigmas(variables_):
    """``[(kernel as a (fan_in, out) matrix, stored sigma)]`` for every normalised layer."""
    return [(np.asarray(params[layer]["kernel"]).reshape(-1, params[layer]["kernel"].shape[-1]), sigma)
            for params, layer, sigma in _spectral_layers(variables_)]


def test_spectral_norm_bounds_every_layer_and_is_used():
    """After enough power iterations the stored sigma is each reshaped kernel's top singular value,
    the normalised kernels have operator norm 1, and the network computes with them."""
    model = ConvAE(dataclasses.replace(SMALL, num_power_iterations=200))
    x = jnp.asarray(toy_images(1, 4, 1))
    init = model.init(jax.random.key(0), x)
    _, updated = model.apply(init, x, update_stats=True, mutable=["batch_stats"])
    converged = host({"params": init["params"], **updated})
    pairs = _kernels_and_sigmas(converged)
    assert len(pairs) == 13  # 5 conv + 2 dense (encoder), 2 dense + 4 transposed conv (decoder)
    for matrix, sigma in pairs:
        top = np.linalg.svd(matrix, compute_uv=False)[0]
        np.testing.assert_allclose(sigma, top, rtol=1e-4)
        assert np.linalg.svd(matrix / sigma, compute_uv=False)[0] <= 1 + 1e-4

    normalised = host({"params": init["params"], **updated})  # a second copy, kernels divided in place
    for params, layer, sigma in _spectral_layers(normalised):
        params[layer]["kernel"] = params[layer]["kernel"] / sigma
    plain = ConvAE(dataclasses.replace(SMALL, spectral_norm=False))
    np.testing.assert_allclose(model.apply(converged, x, method="energy"),
                               plain.apply({"params": normalised["params"]}, x, method="energy"), rtol=1e-4)


def test_power_iteration_state_is_carried_across_training_steps():
    """One power iteration per training call: with (almost) frozen weights the carried vector
    converges to the top singular vector; evaluation calls leave the state untouched."""
    model = ConvAE(SMALL)
    config = nae.NAEConfig(ae_batch_size=4, ae_lr=1e-9, buffer_size=4)
    x = jnp.asarray(toy_images(2, 4, 1))
    state = nae.create_state(jax.random.key(0), model, config, x)
    before = host(state.spectral)
    model.apply(variables(state), x, method="energy")  # no update outside training
    jax.tree.map(np.testing.assert_array_equal, host(state.spectral), before)
    step = nae.make_ae_step(model, config)
    for _ in range(60):
        state, _ = step(state, x)
    for matrix, sigma in _kernels_and_sigmas(host(variables(state))):
        np.testing.assert_allclose(sigma, np.linalg.svd(matrix, compute_uv=False)[0], rtol=1e-3)


def test_chain_configs_are_the_paper_langevin_with_an_exact_mh_target():
    """Drift lambda * grad E and noise sigma in both chains; under MH the target temperature is
    sigma^2 / (2 lambda), so the proposal is tied (noise^2 = 2 * engine step)."""
    config = nae.NAEConfig()
    for chain, lam, sigma in ((config.latent_chain_config, 100.0, 1e-2), (config.data_chain_config, 50.0, 1e-4)):
        np.testing.assert_allclose(chain.step_size / chain.temperature, lam, rtol=1e-6)
        np.testing.assert_allclose(schedules.value_at(chain.noise_scale, 0), sigma, rtol=1e-6)
        np.testing.assert_allclose(2 * chain.step_size, sigma**2, rtol=1e-6)
    np.testing.assert_allclose(config.data_chain_config.noise_scale(2), 1e-4 / 3, rtol=1e-6)  # sigma / (1 + t)
    public = dataclasses.replace(config, **nae.PUBLIC_CODE)
    assert public.data_chain_config.bounds_mode == "clamp" and public.data_chain_config.temperature == 1.0
    np.testing.assert_allclose(public.latent_chain_config.step_size, 0.1)


@pytest.fixture(scope="module")
def tiny_nae():
    model = ConvAE(SMALL)
    config = nae.NAEConfig(restart_prob=0.5, **TINY_CHAINS)
    state = nae.create_state(jax.random.key(0), model, config, jnp.asarray(toy_images(3, 8, 1)))
    return model, config, nae.start_nae_phase(state, config), nae.make_nae_step(model, config, with_samples=True)


def test_on_manifold_samples_lie_on_the_sphere_and_in_the_pixel_range(tiny_nae):
    model, config, state, _ = tiny_nae
    for cfg in (config, dataclasses.replace(config, **nae.PUBLIC_CODE)):
        samples, (z_info, x_info) = jax.jit(lambda key, s: nae.sample_negatives(key, model, cfg, s))(
            jax.random.key(1), state)
        np.testing.assert_allclose(np.linalg.norm(samples.z_start, axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(samples.z_end, axis=-1), 1.0, rtol=1e-5)
        assert not np.allclose(samples.z_end, samples.z_start)  # the latent chain moved
        np.testing.assert_allclose(samples.x_init, model.apply(variables(state), samples.z_end, method="decode"),
                                   rtol=1e-6)
        assert np.all((samples.x_end >= 0) & (samples.x_end <= 1))
        assert z_info.acceptance_rate.shape == (config.z_num_steps, config.batch_size)


def test_nae_step_loss_buffer_and_spectral_update(tiny_nae):
    model, config, state, _ = tiny_nae
    step = nae.make_nae_step(model, config, with_samples=True)
    images = jnp.asarray(toy_images(4, 8, 1))
    before = host(state.replace(key=None))
    new_state, metrics, samples = step(jax.tree.map(jnp.copy, state), images)

    energies, updated = model.apply(variables(before), jnp.concatenate([images, samples.x_end]), update_stats=True,
                                    method="energy", mutable=["batch_stats"])
    e_pos, e_neg = np.split(np.asarray(energies), 2)
    l2 = sum(np.sum(np.square(leaf)) for leaf in jax.tree.leaves(before.params))
    expected = e_pos.mean() - e_neg.mean() + config.gamma * np.mean(e_pos**2) + config.l2_weight * l2
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose([metrics["e_pos"], metrics["e_neg"]], [e_pos.mean(), e_neg.mean()], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), host(new_state.spectral), host(updated))

    slots = np.asarray(samples.slots)
    assert len(set(slots.tolist())) == slots.size  # FIFO: distinct slots
    stored = np.asarray(new_state.buffer.samples)
    np.testing.assert_array_equal(stored[slots], samples.z_end)
    untouched = np.setdiff1d(np.arange(config.buffer_size), slots)
    np.testing.assert_array_equal(stored[untouched], before.buffer.samples[untouched])
    replayed = np.isclose(samples.z_start[:, None, :], before.buffer.samples[None]).all(-1).any(-1)
    assert 0 < replayed.sum() < config.batch_size  # restart_prob 0.5: some chains replayed, some fresh


def test_nae_step_lowers_data_energy_relative_to_negatives(tiny_nae):
    """A gradient step on the CD loss must widen E(x-) - E(x+) on the same samples (sign check)."""
    model, config, state, _ = tiny_nae
    config = dataclasses.replace(config, lr=1e-3, gamma=0.0)
    step = nae.make_nae_step(model, config, with_samples=True)
    images = jnp.asarray(toy_images(5, 8, 1))
    new_state, _, samples = step(jax.tree.map(jnp.copy, state), images)

    def gap(s):
        energy = lambda x: model.apply(variables(s), x, method="energy").mean()
        return float(energy(samples.x_end) - energy(images))

    assert gap(new_state) > gap(state) + 1e-6


def test_step_compiles_once_and_rejects_bad_shapes(tiny_nae):
    model, config, state, step = tiny_nae
    images = jnp.asarray(toy_images(6, 8, 1))
    state = jax.tree.map(jnp.copy, state)
    for _ in range(3):
        state, metrics, _ = step(state, images)
    assert step._cache_size() == 1
    assert set(metrics) >= {"loss", "e_pos", "e_neg", "z_acceptance", "x_acceptance", "grad_norm", "is_finite"}
    with pytest.raises(ValueError, match="images must be"):
        step(state, images[:4])


def test_bad_images_and_configs_raise():
    good = toy_images(7, 2, 1)
    assert check_images(good, SIZE).dtype == np.float32
    for bad, match in ((good[0], "must be"), (np.where(good == good.max(), np.nan, good), "non-finite"),
                       (good - 0.5, r"\[0, 1\]"), (good * 3, r"\[0, 1\]"), (good[:, :-1], "must be")):
        with pytest.raises(ImageInputError, match=match):
            check_images(bad, SIZE)
    with pytest.raises(ImageInputError):
        ConvAE(SMALL).init(jax.random.key(0), jnp.zeros((2, SIZE + 2, SIZE)))
    with pytest.raises(ValueError, match="clamp"):
        nae.NAEConfig(x_bounds_mode="clamp")
    with pytest.raises(ValueError, match="positive target temperature"):
        nae.NAEConfig(z_step_size=0.0)
    with pytest.raises(ValueError, match="even"):
        ConvAEConfig(image_size=15)
