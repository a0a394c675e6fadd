"""ConVAE + normalizing flow (seed 004): Chamfer loss, jet kinematics, scaling, RealNVP exactness, toy training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.data.io import massless_four_vectors
from jaxebm.data.observables import jet_kinematics
from jaxebm.errors import JetInputError
from jaxebm.metrics.divergences import wasserstein_1d
from jaxebm.models.jet_convae import (
    RECONSTRUCTION, ConVAE, ConVAEConfig, ConVAELoss, MinMaxScaler, chamfer_distance, convae_loss, jet_pt_mass,
    jets_to_momenta, momenta_to_constituents,
)
from jaxebm.models.flows import RealNVP, RealNVPConfig
from jaxebm.train.monitor import read_metrics
from jaxebm.train.vae import (
    StageConfig, fit_network, flatten_momenta, init_flow_state, init_vae_state, make_convae_sampler, make_flow_step,
    make_particle_flow_sampler, train_convae_flow, train_particle_flow,
)


def random_jets(seed, num_jets=6, num_slots=20):
    """Massless constituents ``(n, N, 4)`` of ~1 TeV jets at eta ~ 0.5, phi ~ 1, real slots first."""
    rng = np.random.default_rng(seed)
    pt = rng.exponential(40.0, (num_jets, num_slots)) + 1.0
    eta = 0.5 + 0.2 * rng.normal(size=pt.shape)
    phi = 1.0 + 0.2 * rng.normal(size=pt.shape)
    mask = np.arange(num_slots)[None, :] < rng.integers(3, num_slots + 1, (num_jets, 1))
    return np.where(mask[..., None], massless_four_vectors(pt, eta, phi), 0.0), mask


def random_flow(config, seed, scale):
    """A RealNVP with N(0, scale^2) parameters (an initialised flow is the identity, which would hide mistakes).

    Shapes come from ``jax.eval_shape`` and values from numpy, so no initialiser is compiled.
    """
    flow = RealNVP(config)
    shapes = jax.eval_shape(flow.init, jax.random.key(0), jnp.zeros((1, config.num_features)))
    rng = np.random.default_rng(seed)
    return flow, jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), jnp.float32), shapes)


# --- Chamfer distance -------------------------------------------------------------------------------

@pytest.mark.parametrize("squared", [True, False])
def test_chamfer_is_symmetric_zero_on_identical_sets_and_permutation_invariant(squared):
    a = jax.random.normal(jax.random.key(0), (4, 5, 3))
    b = jax.random.normal(jax.random.key(1), (4, 7, 3))
    permuted = b[:, jax.random.permutation(jax.random.key(2), 7)]
    np.testing.assert_allclose(chamfer_distance(a, b, squared=squared), chamfer_distance(b, a, squared=squared),
                               rtol=1e-6)
    np.testing.assert_allclose(chamfer_distance(a, permuted, squared=squared),
                               chamfer_distance(a, b, squared=squared), rtol=1e-6)
    np.testing.assert_array_equal(chamfer_distance(a, a, squared=squared), 0.0)
    assert np.all(chamfer_distance(a, b, squared=squared) > 0)


def test_chamfer_equals_a_hand_computation_and_has_finite_gradients_at_coincident_particles():
    a = jnp.array([[[0.0, 0, 0], [1, 0, 0]]])
    b = jnp.array([[[0.0, 0, 1], [3, 0, 0], [1, 1, 0]]])
    # Squared distances a_i -> b_j: a0: (1, 9, 2), a1: (2, 4, 1). Minima per a: 1, 1; per b: 1, 4, 1.
    np.testing.assert_allclose(chamfer_distance(a, b), [8.0])
    # Euclidean: per a: 1, 1; per b: 1, 2, 1.
    np.testing.assert_allclose(chamfer_distance(a, b, squared=False), [6.0])
    grad = jax.grad(lambda y: chamfer_distance(a, y, squared=False).sum())(a)
    assert np.isfinite(grad).all()


# --- Jet kinematics, conversions, scaling -----------------------------------------------------------

def test_jet_pt_and_mass_from_momenta_match_the_observables_module():
    constituents, mask = random_jets(3)
    pt, mass = jet_pt_mass(jnp.asarray(jets_to_momenta(constituents, mask)))
    reference = jet_kinematics(constituents, mask)
    assert reference["mass"].min() > 10.0
    np.testing.assert_allclose(pt, reference["pt"], rtol=1e-5)
    np.testing.assert_allclose(mass, reference["mass"], rtol=1e-3)
    grads = jax.grad(lambda p: sum(x.sum() for x in jet_pt_mass(p)))(jnp.asarray(jets_to_momenta(constituents, mask)))
    assert np.isfinite(grads).all()  # zero-padded columns included


def test_momenta_keep_the_hardest_particles_and_convert_back_to_jets():
    constituents, mask = random_jets(4, num_slots=8)
    momenta = jets_to_momenta(constituents, mask, num_particles=3)
    pt = np.where(mask, np.hypot(constituents[..., 1], constituents[..., 2]), 0.0)
    np.testing.assert_allclose(np.hypot(momenta[:, 0], momenta[:, 1]), -np.sort(-pt)[:, :3], rtol=1e-6)
    back, back_mask = momenta_to_constituents(jets_to_momenta(constituents, mask, num_particles=8), min_pt=0.5)
    order = np.argsort(-pt, axis=1, kind="stable")
    np.testing.assert_array_equal(back_mask, np.take_along_axis(mask, order, axis=1))
    np.testing.assert_allclose(back, np.take_along_axis(constituents, order[..., None], axis=1), rtol=1e-5, atol=1e-4)
    _, soft_mask = momenta_to_constituents(momenta, min_pt=1e6)
    assert not soft_mask.any()


def test_min_max_scaler_maps_training_data_onto_the_unit_interval_and_round_trips():
    momenta = jets_to_momenta(*random_jets(5))
    scaler = MinMaxScaler.fit(momenta)
    scaled = scaler.apply(momenta)
    np.testing.assert_allclose(scaled.min(axis=(0, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(scaled.max(axis=(0, 2)), 1.0, atol=1e-6)
    np.testing.assert_allclose(scaler.invert(scaled), momenta, atol=1e-3)
    restored = MinMaxScaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(restored.minimum, scaler.minimum)
    np.testing.assert_array_equal(restored.maximum, scaler.maximum)
    np.testing.assert_allclose(jax.jit(restored.invert)(jnp.asarray(scaled)), momenta, atol=1e-3)


def test_convae_loss_weights_its_terms_in_gev_and_nats():
    scaler = MinMaxScaler(minimum=np.array([-500.0, -500.0, -500.0]), maximum=np.array([500.0, 500.0, 500.0]))
    x = jnp.array([[[0.2, 0.5, 0.8], [0.5, 0.5, 0.5], [0.5, 0.6, 0.5]]])  # (1, 3, P = 3), particles far apart
    reconstruction = x.at[0, 0, 0].add(0.01)  # particle 0 moves by 10 GeV in px
    zeros = jnp.zeros((1, 2))
    weights = dict(alpha=1.0, gamma=0.5, gamma_pt=2.0, gamma_mass=3.0)
    total, parts = convae_loss(x, reconstruction, zeros, zeros, scaler, ConVAELoss(beta=0.25, **weights))
    np.testing.assert_allclose(parts["chamfer"], 2 * 10.0**2, rtol=1e-3)  # squared GeV, both directions
    (pt, mass), (pt_hat, mass_hat) = jet_pt_mass(scaler.invert(x)), jet_pt_mass(scaler.invert(reconstruction))
    np.testing.assert_allclose(parts["pt_mse"], (pt - pt_hat) ** 2, rtol=1e-3)
    expected_rec = 200.0 + 0.5 * (2.0 * (pt - pt_hat) ** 2 + 3.0 * (mass - mass_hat) ** 2)
    np.testing.assert_allclose(total, 0.75 * expected_rec, rtol=1e-3)
    mean, logvar = jnp.ones((1, 2)), jnp.full((1, 2), np.log(4.0))  # KL = 2 dims * (1 + 4 - log 4 - 1) / 2
    total, parts = convae_loss(x, x, mean, logvar, scaler, ConVAELoss(beta=0.25, **weights))
    np.testing.assert_allclose(parts["kl"], 4.0 - np.log(4.0), rtol=1e-5)
    np.testing.assert_allclose(total, 0.25 * (4.0 - np.log(4.0)), rtol=1e-5)


# --- Bad inputs -------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    constituents, mask = random_jets(6)
    with pytest.raises(JetInputError, match="NaN"):
        jets_to_momenta(np.where(mask[..., None], constituents, np.nan), mask)
    assert not mask[:, -1].all()
    with pytest.raises(JetInputError, match="real particle has zero momentum"):
        jets_to_momenta(constituents, mask | (np.arange(20) == 19))
    with pytest.raises(JetInputError, match="padded slot has non-zero momentum"):
        jets_to_momenta(constituents, mask & (np.arange(20) != 0))
    with pytest.raises(JetInputError, match="mask must be bool"):
        jets_to_momenta(constituents, mask.T)
    with pytest.raises(JetInputError, match="NaN"):
        MinMaxScaler.fit(np.full((2, 3, 30), np.nan))
    model = ConVAE(ConVAEConfig(num_particles=30, latent_dim=2, num_filters=2, num_linear=4, num_conv_layers=1))
    with pytest.raises(JetInputError, match=r"3, 30\) .* got shape \(2, 3, 29\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 3, 29)), jax.random.key(1))
    with pytest.raises(JetInputError, match=r"\(B, 4\)"):
        RealNVP(RealNVPConfig(4, 2, (8,))).init(jax.random.key(0), jnp.zeros((2, 5)))
    with pytest.raises(JetInputError, match="do not fit"):
        ConVAEConfig(num_particles=5, kernel_size=3, num_conv_layers=3)


# --- RealNVP ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flow3():
    """A 3-D flow with perturbed parameters and its jitted forward / inverse."""
    flow, params = random_flow(RealNVPConfig(3, 5, (16, 16)), seed=1, scale=0.3)
    forward = jax.jit(lambda x: flow.apply(params, x))
    inverse = jax.jit(lambda z: flow.apply(params, z, method=RealNVP.inverse))
    return forward, inverse


def test_flow_is_invertible(flow3):
    forward, inverse = flow3
    x = jax.random.normal(jax.random.key(2), (64, 3))
    z, _ = forward(x)
    assert np.all(np.abs(np.asarray(z - x)).max(axis=0) > 0.1)  # every feature is transformed
    np.testing.assert_allclose(inverse(z), x, atol=1e-5)
    np.testing.assert_allclose(forward(inverse(x))[0], x, atol=1e-5)


def test_flow_log_det_matches_a_brute_force_jacobian(flow3):
    forward, _ = flow3
    x = jax.random.normal(jax.random.key(3), (4, 3))
    _, log_det = forward(x)
    jacobians = jax.jit(jax.vmap(jax.jacfwd(lambda v: forward(v[None])[0][0])))(x)
    sign, brute = jnp.linalg.slogdet(jacobians)
    np.testing.assert_array_equal(sign, 1.0)
    assert np.abs(np.asarray(brute)).max() > 0.2
    np.testing.assert_allclose(log_det, brute, atol=1e-5)


def test_flow_density_integrates_to_one_in_two_dimensions():
    flow, params = random_flow(RealNVPConfig(2, 4, (16, 16)), seed=5, scale=0.3)
    grid = np.linspace(-12.0, 12.0, 481)
    points = jnp.asarray(np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2), jnp.float32)
    density = jnp.exp(jax.jit(lambda p: flow.apply(params, p, method=RealNVP.log_prob))(points))
    standard_normal = jnp.exp(-0.5 * jnp.sum(points**2, axis=1)) / (2 * np.pi)
    assert float(jnp.abs(density - standard_normal).max()) > 0.02  # the flow reshapes the base
    np.testing.assert_allclose(float(density.sum()) * (grid[1] - grid[0]) ** 2, 1.0, atol=2e-3)


def test_one_dimensional_flow_is_affine_with_the_gaussian_density_it_implies():
    flow, params = random_flow(RealNVPConfig(1, 4, (8,)), seed=7, scale=0.5)  # layers 1 and 3 act
    x = jnp.linspace(-3.0, 3.0, 7)[:, None]
    z, _ = jax.jit(lambda v: flow.apply(params, v))(jnp.concatenate([jnp.zeros((1, 1)), jnp.ones((1, 1)), x]))
    slope, offset = z[1, 0] - z[0, 0], z[0, 0]  # z = slope * x + offset: x ~ N(-offset / slope, 1 / slope^2)
    assert abs(float(slope) - 1.0) > 0.1
    np.testing.assert_allclose(z[2:, 0], slope * x[:, 0] + offset, rtol=1e-5, atol=1e-5)
    mean, std = -offset / slope, 1.0 / jnp.abs(slope)
    expected = -0.5 * ((x[:, 0] - mean) / std) ** 2 - jnp.log(std) - 0.5 * np.log(2 * np.pi)
    log_prob = jax.jit(lambda v: flow.apply(params, v, method=RealNVP.log_prob))(x)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-5, atol=1e-5)


# --- Toy training: ConVAE + NF and NF only ---------------------------------------------------------

def toy_momenta(seed, num_jets):
    """4-particle jets ``(n, 3, 4)`` in GeV driven by two latent factors: pT sharing u and azimuth theta."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.3, 0.8, (num_jets, 1))
    theta = rng.normal(0.0, 0.3, (num_jets, 1))
    pt = 100.0 * np.concatenate([u, 0.6 * (1 - u), 0.3 * (1 - u), 0.1 * (1 - u)], axis=1)
    phi = theta + np.array([0.0, 0.2, -0.3, 0.5])
    eta = np.array([0.1, 0.2, -0.1, 0.3])
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=1).astype(np.float32)


def sample_distance(generated, reference):
    """Sum of 1-D W1 (GeV) over jet pT, jet mass and the 12 coordinates of the pT-ordered particles."""
    gen, ref = (momenta_to_constituents(x, min_pt=0.0)[0][..., 1:] for x in (generated, reference))
    coordinates = sum(wasserstein_1d(gen[:, k, f], ref[:, k, f]) for f in range(3) for k in range(4))
    jets = [np.asarray(x) for x in (*jet_pt_mass(jnp.asarray(generated)), *jet_pt_mass(jnp.asarray(reference)))]
    return coordinates + wasserstein_1d(jets[0], jets[2]) + wasserstein_1d(jets[1], jets[3])


@pytest.fixture(scope="module")
def toy():
    train, held_out = toy_momenta(0, 1000), toy_momenta(1, 1000)
    scaler = MinMaxScaler.fit(train)
    return scaler.apply(train), held_out, scaler, StageConfig(learning_rate=3e-3, batch_size=50, num_epochs=40)


def test_convae_plus_flow_learns_a_toy_jet_distribution(toy, tmp_path):
    scaled, held_out, scaler, stage = toy
    vae = ConVAE(ConVAEConfig(num_particles=4, latent_dim=2, num_filters=8, kernel_size=2, num_linear=64,
                              num_conv_layers=2))
    flow = RealNVP(RealNVPConfig(2, 6, (32, 32)))
    vae_params, flow_params, history = train_convae_flow(tmp_path, 0, scaled, scaler, vae, RECONSTRUCTION.loss,
                                                         stage, flow, stage)
    assert history["vae"][-1]["loss"] < 0.2 * history["vae"][0]["loss"]
    assert history["flow"][-1]["nll"] < history["flow"][0]["nll"] - 0.5
    sampler = make_convae_sampler(vae, scaler, flow)
    untrained = init_vae_state(jax.random.key(0), vae, 1e-3).params
    before = sample_distance(sampler(jax.random.key(9), 1000, untrained, flow_params), held_out)
    after = sample_distance(sampler(jax.random.key(9), 1000, vae_params, flow_params), held_out)
    prior = sample_distance(make_convae_sampler(vae, scaler)(jax.random.key(9), 1000, vae_params), held_out)
    floor = sample_distance(toy_momenta(2, 1000), held_out)
    assert after < 0.3 * before, (after, before)
    assert after < 0.5 * prior, (after, prior)  # the paper's point: the flow beats the N(0, 1) prior
    print(f"toy W1 sum (GeV): truth {floor:.1f}, ConVAE+NF {after:.1f}, ConVAE prior {prior:.1f}, "
          f"untrained {before:.1f}")


def test_flow_only_on_flattened_particles_learns_the_toy(toy, tmp_path):
    scaled, held_out, scaler, stage = toy
    flow = RealNVP(RealNVPConfig(12, 6, (32, 32)))
    params, history = train_particle_flow(tmp_path, 0, scaled, flow, stage)
    np.testing.assert_array_equal(flatten_momenta(scaled)[:, :4], scaled[:, 0])  # all px first, as the paper
    sampler = make_particle_flow_sampler(flow, scaler)
    untrained = init_flow_state(jax.random.key(0), flow, 1e-3).params
    before = sample_distance(sampler(jax.random.key(9), 1000, untrained), held_out)
    after = sample_distance(sampler(jax.random.key(9), 1000, params), held_out)
    assert history[-1]["nll"] < history[0]["nll"] - 5.0
    assert after < 0.3 * before, (after, before)
    print(f"toy W1 sum (GeV): NF only {after:.1f}, untrained {before:.1f}")


def test_flow_training_goes_through_the_driver_guard_and_rollback(tmp_path):
    """A NaN example: its batch's step keeps the parameters (is_finite False) and the driver rolls back to the
    last checkpoint with half the learning rate, skipping that batch; training ends with finite parameters."""
    data = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    data[17] = np.nan
    flow = RealNVP(RealNVPConfig(2, 2, (8,)))
    step = make_flow_step(flow, 1e-3)
    state = init_flow_state(jax.random.key(0), flow, 1e-3)
    before = jax.tree.map(np.asarray, state.params)
    _, metrics = step(jax.tree.map(jnp.copy, state), jnp.asarray(data[10:20]))
    assert not bool(metrics["is_finite"]) and float(metrics["lr_scale"]) == 1.0
    stage = StageConfig(learning_rate=1e-3, batch_size=10, num_epochs=1)
    state = fit_network(step, state, (data,), tmp_path, stage, order_seed=lambda epoch: (0, epoch))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    rollbacks = [row for row in rows if row.get("event") == "rollback"]
    assert rollbacks and {row["reason"] for row in rollbacks} == {"non-finite loss or parameter gradient"}
    assert rollbacks[0]["lr_scale"] == 0.5 and int(state.step) == 10 and rows[-1]["step"] == 10
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)))
