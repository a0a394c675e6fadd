"""The NAE's autoencoder and training steps: shapes and sphere, spectral norm, on-manifold chains, the
jitted step's loss and buffer, no recompiles, input checks, and the paper's central claim on toy images."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.metrics.tagging import auc
from jaxebm.sampling import schedules
from jaxebm.models.nae_autoencoder import ConvAE, ConvAEConfig, ImageInputError, check_images
from jaxebm.train import nae

SIZE = 12  # toy image side (the paper's 40 is the default)
SMALL = ConvAEConfig(image_size=SIZE, hidden_dim=32, init="lecun", output_bias_init=-3.0)
# The toy run: a latent sphere S^7 with room beyond the 2-parameter data, paper chains (MALA in both
# spaces) shortened to 5 + 5 steps with step/noise sized for 12 x 12 images, and a larger learning rate.
TOY_MODEL = dataclasses.replace(SMALL, latent_dim=8)
TOY = nae.NAEConfig(ae_batch_size=64, ae_lr=3e-3, batch_size=16, buffer_size=64, lr=1e-3, z_num_steps=5,
                    x_num_steps=5, z_step_size=10.0, z_noise_scale=0.05, x_step_size=10.0, x_noise_scale=0.01)
NUM_AE_STEPS, NUM_NAE_STEPS, NUM_TEST = 400, 250, 320  # NUM_TEST: whole batches of 16


def host(tree):
    return jax.tree.map(np.array, tree)


def variables(state):
    return {"params": state.params, **state.spectral}


def toy_images(seed: int, num: int, extra_amplitude: tuple[float, float] | None = (0.4, 0.8),
               num_extra: int = 1) -> np.ndarray:
    """``(num, SIZE, SIZE)`` images in [0, 1]: a Gaussian blob at the centre plus, unless
    ``extra_amplitude`` is None, ``num_extra`` blobs of amplitude ``U(*extra_amplitude)`` at uniform
    random angles on a ring. One extra blob: "complex" (a two-prong jet, two parameters); none:
    "simple" (a one-prong jet)."""
    rng = np.random.default_rng(seed)
    grid = np.arange(SIZE, dtype=np.float64)
    centre = (SIZE - 1) / 2

    def blob(row, col, amplitude):
        return amplitude[:, None, None] * np.exp(
            -((grid[None, :, None] - row[:, None, None]) ** 2 + (grid[None, None, :] - col[:, None, None]) ** 2) / 2.0)

    images = blob(np.full(num, centre), np.full(num, centre), np.full(num, 0.8))
    for _ in range(num_extra if extra_amplitude is not None else 0):
        angle = rng.uniform(0, 2 * np.pi, num)
        images += blob(centre + 3.5 * np.sin(angle), centre + 3.5 * np.cos(angle), rng.uniform(*extra_amplitude, num))
    return np.clip(images, 0.0, 1.0).astype(np.float32)


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
def toy_run():
    """AE pre-training on complex toy images, then NAE training; energies of held-out complex
    (background), simple and three-prong images after each phase. One compiled AE and NAE step."""
    model = ConvAE(TOY_MODEL)
    train = toy_images(10, 4096)
    tests = {"complex": toy_images(11, NUM_TEST), "simple": toy_images(12, NUM_TEST, None),
             "three_prong": toy_images(13, NUM_TEST, (0.4, 0.8), num_extra=2)}
    outputs = jax.jit(functools.partial(_outputs, model))
    rng = np.random.default_rng(0)

    def batch(size):
        return jnp.asarray(train[rng.integers(0, len(train), size)])

    def energy(params, spectral, x):  # in batches of TOY.batch_size: one compiled shape for every call
        return np.concatenate([outputs({"params": params, **spectral}, chunk)[2]
                               for chunk in np.split(x, len(x) // TOY.batch_size)])

    # The RBG key implementation: XLA's RngBitGenerator compiles in a fraction of threefry's time on CPU.
    state = nae.create_state(jax.random.key(0, impl="rbg"), model, TOY, batch(8))
    ae_step = nae.make_ae_step(model, TOY)
    for _ in range(NUM_AE_STEPS):
        state, _ = ae_step(state, batch(TOY.ae_batch_size))
    ae_energies = {name: np.asarray(energy(state.params, state.spectral, x)) for name, x in tests.items()}
    ae_state = nae.start_nae_phase(state, TOY)  # kept: the steps below donate copies of it
    nae_step = nae.make_nae_step(model, TOY, with_samples=True)
    state = jax.tree.map(jnp.copy, ae_state)
    for _ in range(NUM_NAE_STEPS):
        state, metrics, samples = nae_step(state, batch(TOY.batch_size))
    nae_energies = {name: np.asarray(energy(state.params, state.spectral, x)) for name, x in tests.items()}
    return dict(model=model, ae_step=ae_step, nae_step=nae_step, ae_state=ae_state, nae_state=state,
                samples=samples, metrics=metrics, ae_energies=ae_energies, nae_energies=nae_energies, batch=batch,
                outputs=outputs)


def _outputs(model, variables_, x):
    """Latents, reconstructions, energies, latent energies H(z) and energies of the decoded latents."""
    z = model.apply(variables_, x, method="encode")
    decoded = model.apply(variables_, z, method="decode")
    return (z, model.apply(variables_, x), model.apply(variables_, x, method="energy"),
            model.apply(variables_, z, method="latent_energy"), model.apply(variables_, decoded, method="energy"))


def _auc(energies, signal):
    """AUC of the energy as anomaly score, ``signal`` images against the complex background."""
    scores = np.concatenate([energies["complex"], energies[signal]])
    return auc(np.r_[np.zeros(NUM_TEST), np.ones(NUM_TEST)], scores)


def test_nae_flags_the_simple_population_that_the_autoencoder_misses(toy_run):
    """The paper's central claim on toy jets: an AE trained on two-prong images reconstructs one-prong
    images even better than its training data, so its error cannot flag them; the NAE raises the
    energy of everything its chains find on the decoder manifold away from the data and flags them.
    Three-prong images (more complex) stay flagged by both."""
    ae_auc, nae_auc = _auc(toy_run["ae_energies"], "simple"), _auc(toy_run["nae_energies"], "simple")
    assert ae_auc <= 0.6, ae_auc
    assert nae_auc >= 0.75 and nae_auc - ae_auc >= 0.4, (ae_auc, nae_auc)  # fixed seeds: 0.00 -> 1.00
    for energies in (toy_run["ae_energies"], toy_run["nae_energies"]):
        assert _auc(energies, "three_prong") >= 0.8
    assert toy_run["nae_energies"]["complex"].mean() < 0.01  # the data stay well reconstructed


def test_on_manifold_samples_lie_on_the_sphere_and_in_the_pixel_range(toy_run):
    samples = toy_run["samples"]
    np.testing.assert_allclose(np.linalg.norm(samples.z_start, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(samples.z_end, axis=-1), 1.0, rtol=1e-5)
    assert samples.z_end.shape == (TOY.batch_size, TOY_MODEL.latent_dim)
    assert np.all((samples.x_end >= 0) & (samples.x_end <= 1))


def test_nae_step_loss_buffer_and_spectral_update(toy_run):
    model, state = toy_run["model"], toy_run["ae_state"]
    images = toy_run["batch"](TOY.batch_size)
    before = host(state.replace(key=None))
    new_state, metrics, samples = toy_run["nae_step"](jax.tree.map(jnp.copy, state), images)

    energies, updated = jax.jit(lambda v, x: model.apply(v, x, update_stats=True, method="energy",
                                                         mutable=["batch_stats"]))(
        variables(before), jnp.concatenate([images, samples.x_end]))
    e_pos, e_neg = np.split(np.asarray(energies), 2)
    l2 = sum(np.sum(np.square(leaf)) for leaf in jax.tree.leaves(before.params))
    expected = e_pos.mean() - e_neg.mean() + TOY.gamma * np.mean(e_pos**2) + TOY.l2_weight * l2
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose([metrics["e_pos"], metrics["e_neg"]], [e_pos.mean(), e_neg.mean()], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), host(new_state.spectral),
                 host(updated))
    decode = jax.jit(lambda v, z: model.apply(v, z, method="decode"))
    np.testing.assert_allclose(samples.x_init, decode(variables(before), samples.z_end), atol=1e-6)

    slots = np.asarray(samples.slots)
    assert len(set(slots.tolist())) == slots.size  # FIFO: distinct slots
    stored = np.asarray(new_state.buffer.samples)
    np.testing.assert_array_equal(stored[slots], samples.z_end)
    untouched = np.setdiff1d(np.arange(TOY.buffer_size), slots)
    np.testing.assert_array_equal(stored[untouched], before.buffer.samples[untouched])
    replayed = np.isclose(samples.z_start[:, None, :], before.buffer.samples[None]).all(-1).any(-1)
    assert replayed.sum() >= TOY.batch_size // 2  # restart_prob 0.05: most chains continue from the buffer


def test_nae_step_lowers_data_energy_relative_to_negatives(toy_run):
    """One step on the CD loss widens E(x-) - E(x+) on that step's samples (gradient sign)."""
    state = toy_run["ae_state"]
    images = toy_run["batch"](TOY.batch_size)
    new_state, _, samples = toy_run["nae_step"](jax.tree.map(jnp.copy, state), images)

    def gap(s):
        energy = lambda x: float(toy_run["outputs"](variables(s), x)[2].mean())  # noqa: E731
        return energy(samples.x_end) - energy(images)

    assert gap(new_state) > gap(state) + 1e-6


def test_step_compiles_once_and_rejects_bad_shapes(toy_run):
    step, state = toy_run["nae_step"], jax.tree.map(jnp.copy, toy_run["nae_state"])
    state, metrics, _ = step(state, toy_run["batch"](TOY.batch_size))
    assert step._cache_size() == 1 and toy_run["ae_step"]._cache_size() == 1
    assert set(metrics) >= {"loss", "e_pos", "e_neg", "z_acceptance", "x_acceptance", "grad_norm", "is_finite"}
    assert bool(metrics["is_finite"])
    with pytest.raises(ValueError, match="images must be"):
        step(state, toy_run["batch"](TOY.batch_size - 1))


def test_the_experiments_scores_are_the_score_api_on_the_trained_energy(toy_run):
    """`jaxebm.experiments.nae.Trained.scores` (the NAE in the project's one score API): ``energy`` is the
    trained state's energy (spectral state included) and ``score_norm`` the norm of its pixel gradient,
    checked against central finite differences of the model's energy."""
    from jaxebm.experiments.nae import Trained
    state = toy_run["nae_state"]
    trained = Trained(toy_run["model"], TOY, state, NUM_NAE_STEPS, {})
    images = toy_images(21, 2)
    scores = trained.scores(images, batch_size=2)
    variables = {"params": state.params, **state.spectral}
    energy = jax.jit(lambda x: toy_run["model"].apply(variables, x, method="energy"))
    np.testing.assert_allclose(scores["energy"], np.asarray(energy(jnp.asarray(images))), rtol=1e-5)
    eps = 1e-2
    steps = eps * np.eye(SIZE * SIZE, dtype=np.float32).reshape(-1, SIZE, SIZE)
    for i, image in enumerate(images.astype(np.float32)):
        diff = np.asarray(energy(jnp.asarray(image + steps))) - np.asarray(energy(jnp.asarray(image - steps)))
        np.testing.assert_allclose(scores["score_norm"][i], np.linalg.norm(diff / (2 * eps)), rtol=2e-2)


def test_shapes_sphere_and_energy_definition(toy_run):
    x = toy_run["batch"](TOY.batch_size)
    z, recon, energy, latent_energy, decoded_energy = toy_run["outputs"](variables(toy_run["ae_state"]), x)
    assert z.shape == (TOY.batch_size, TOY_MODEL.latent_dim) and recon.shape == x.shape
    assert energy.shape == (TOY.batch_size,)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    assert np.all((recon > 0) & (recon < 1))
    np.testing.assert_allclose(energy, np.mean((x - recon) ** 2, axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(latent_energy, decoded_energy, rtol=1e-5)
    paper = ConvAE(ConvAEConfig())  # Table 2 at 40 x 40: shapes only
    x40 = jnp.zeros((2, 40, 40))
    shapes = jax.eval_shape(lambda: paper.apply(paper.init(jax.random.key(0), x40), x40))
    assert jax.eval_shape(lambda: paper.apply(paper.init(jax.random.key(0), x40), x40, method="encode")).shape == (2, 3)
    assert shapes.shape == (2, 40, 40)


def test_spectral_norm_is_carried_bounds_every_layer_and_is_used(toy_run):
    """One power iteration per training call, carried in the state: with the weights frozen
    (lr_scale 0) the stored sigma converges to each reshaped kernel's top singular value, the
    normalised kernels have operator norm 1, and the network computes with them."""
    state = jax.tree.map(jnp.copy, toy_run["ae_state"]).replace(lr_scale=jnp.zeros((), jnp.float32))
    params = host(state.params)
    for _ in range(200):
        state, _ = toy_run["ae_step"](state, toy_run["batch"](TOY.ae_batch_size))
    jax.tree.map(np.testing.assert_array_equal, host(state.params), params)
    converged = host(variables(state))
    pairs = _kernels_and_sigmas(converged)
    assert len(pairs) == 13  # 5 conv + 2 dense (encoder), 2 dense + 4 transposed conv (decoder)
    for matrix, sigma in pairs:
        np.testing.assert_allclose(sigma, np.linalg.svd(matrix, compute_uv=False)[0], rtol=1e-3)
        assert np.linalg.svd(matrix / sigma, compute_uv=False)[0] <= 1 + 1e-3
    # Transposed convs on PyTorch's (in, out*k*k): the first (1 -> c) has one row, so sigma is the Frobenius
    # norm of its kernel; the last (c -> 1) has c rows of 9 taps (Flax's (k*k*in, out) would give the norm).
    decoder = {layer: (np.asarray(params[layer]["kernel"]), sigma) for params, layer, sigma in _spectral_layers(converged)
               if layer.startswith("_ConvTranspose")}
    first, sigma_first = decoder["_ConvTranspose_0"]
    np.testing.assert_allclose(sigma_first, np.linalg.norm(first), rtol=1e-3)
    last, sigma_last = decoder["_ConvTranspose_3"]
    channels = TOY_MODEL.channels
    torch_matrix = np.moveaxis(last, last.shape.index(channels), 0).reshape(channels, 9)
    np.testing.assert_allclose(sigma_last, np.linalg.svd(torch_matrix, compute_uv=False)[0], rtol=1e-3)
    assert sigma_last < 0.95 * np.linalg.norm(last)

    normalised = host(variables(state))  # a second copy, kernels divided in place
    for layer_params, layer, sigma in _spectral_layers(normalised):
        layer_params[layer]["kernel"] = layer_params[layer]["kernel"] / sigma
    plain = ConvAE(dataclasses.replace(TOY_MODEL, spectral_norm=False))
    x = toy_run["batch"](TOY.batch_size)
    with_norm = toy_run["outputs"](converged, x)[2]
    by_hand = jax.jit(lambda v: plain.apply(v, x, method="energy"))({"params": normalised["params"]})
    np.testing.assert_allclose(with_norm, by_hand, rtol=1e-3)


def test_collapse_guard_fires_on_a_collapsed_ae_and_not_on_a_trained_one(toy_run):
    """An AE with PyTorch's random biases on images at the jets' raw scale (pixels ~1e-3) encodes every image
    near one point, the direction of its bias path (R ~ 1): the guard stops it, naming the remedy. The
    trained toy AE spreads its data over the sphere and passes."""
    from jaxebm.experiments.nae import LatentCollapseError, check_latent_spread
    from jaxebm.experiments.nae_eval import latent_resultant_length

    images = toy_images(30, 64)
    collapsed = ConvAE(dataclasses.replace(TOY_MODEL, init="torch"))
    encode = jax.jit(lambda v, x: collapsed.apply(v, x, method="encode"))
    faint = images * 1e-3
    resultant = latent_resultant_length(np.asarray(encode(collapsed.init(jax.random.key(3), faint), faint)))
    assert resultant > 0.99
    with pytest.raises(LatentCollapseError, match=r"R = (0\.99\d*|1\.0+) > 0\.99.*intensity_scale = 'max_pixel'"):
        check_latent_spread({"latent_resultant_length": resultant, "mse_over_mean_image_mse": 1.0}, 0.99)
    trained = latent_resultant_length(np.asarray(toy_run["outputs"](variables(toy_run["ae_state"]), images)[0]))
    assert trained < 0.9
    check_latent_spread({"latent_resultant_length": trained, "mse_over_mean_image_mse": 0.1}, 0.99)


def test_bad_images_and_configs_raise():
    good = toy_images(7, 2)
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


def test_training_resumes_exactly_after_a_crash(toy_run, tmp_path):
    """A run killed mid-way and started again from its checkpoints (parameters, optimiser, spectral-norm
    vectors, latent buffer, key, data position) ends bit-identical to an uninterrupted run."""
    from jaxebm.train.batches import ArrayBatches
    from jaxebm.train.loop import LoopConfig, train_loop

    images = toy_images(20, 160)
    start = int(toy_run["ae_state"].step)
    loop = LoopConfig(num_steps=start + 4, log_every=2, checkpoint_every=2, progress=False)

    def step(state, x):
        return toy_run["nae_step"](state, x)[:2]

    calls = []

    def crashing_step(state, x):
        calls.append(1)
        if len(calls) > 3:  # killed after the checkpoint at start + 2
            raise KeyboardInterrupt("killed")
        return step(state, x)

    def fresh():
        return jax.tree.map(jnp.copy, toy_run["ae_state"]), ArrayBatches((images,), TOY.batch_size, seed=3)

    state, batches = fresh()
    for _ in range(4):  # the uninterrupted run, without checkpoints
        state, _ = step(state, *next(batches))
    straight = host(state.replace(key=None))
    with pytest.raises(KeyboardInterrupt):
        train_loop(crashing_step, *fresh(), tmp_path / "crashed", loop)
    resumed = train_loop(step, *fresh(), tmp_path / "crashed", loop)
    assert int(resumed.step) == start + 4
    jax.tree.map(np.testing.assert_array_equal, host(resumed.replace(key=None)), straight)
    np.testing.assert_array_equal(jax.random.key_data(resumed.key), jax.random.key_data(state.key))


def test_hidden_valley_card_and_experiment_config_checks():
    from jaxebm.data.processes import PROCESSES
    from jaxebm.data.hidden_valley import DARK_QUARK, hidden_valley_settings
    from jaxebm.experiments import nae as nae_experiment, nae_data

    settings = hidden_valley_settings(r_inv=0.3, z_prime_mass=1000.0)
    for meson in (4900111, 4900113):
        assert f"{meson}:oneChannel = 1 0.7 91 -3 3" in settings and f"{meson}:addChannel = 1 0.3 0 51 -51" in settings
    assert "4900023:m0 = 1000" in settings
    assert PROCESSES["dark"].match_pdg_ids == (DARK_QUARK,)
    assert "4900111:addChannel = 1 0.75 0 51 -51" in PROCESSES["dark"].pythia_settings  # Aachen r_inv
    with pytest.raises(ValueError, match="r_inv"):
        hidden_valley_settings(r_inv=1.5)
    with pytest.raises(ValueError, match="direction"):
        nae_data.DataConfig(direction="tag_gluon")
    with pytest.raises(ValueError, match="ae_steps"):
        nae_experiment.RunConfig(num_steps=10, ae_steps=10)
