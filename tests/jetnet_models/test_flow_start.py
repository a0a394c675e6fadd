"""The ``ebm_flow_start`` row: EBM chains started from a proposal row's jets (issue 25, item 4).

A quadratic energy E = w sum x^2 over real slots makes a noiseless chain exact: x_K = prod_t (1 - 2 s_t) x_0, so
the end positions show where the chain started and how many steps it took; a debug callback counts the energy
evaluations.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.config import ConfigError, load_config
from jaxebm.data.preprocess import Standardizer
from jaxebm.experiments import jetnet_flow_start_report as curve_report
from jaxebm.experiments.jetnet_bench import CONFIG_DIR, ExperimentConfig, validate
from jaxebm.experiments.jetnet_bench_eval import evaluate_samples, flow_start_curve
from jaxebm.experiments.jetnet_flow_start import (
    EBMGenerator, FlowStartConfig, FlowStartSampler, chain_config, check_flow_start, constituents_from_ebm,
    ebm_coordinates, grad_evals_per_jet, sweep_proposals,
)
from jaxebm.inference import GenerationConfig
from jaxebm.metrics.jetnet import jetnet_features

CALLS = []


class QuadraticEnergy(nn.Module):
    """E(x) = w sum over real slots of x^2 ``(B,)``; records one entry per evaluation."""

    @nn.compact
    def __call__(self, x, mask, deterministic=True):
        w = self.param("w", nn.initializers.ones, ())
        jax.debug.callback(lambda: CALLS.append(1))
        return w * jnp.sum(jnp.where(mask[..., None], x * x, 0.0), axis=(1, 2))


def _jets(num_jets=12, num_particles=6, seed=0):
    """Massless four-vectors (GeV) of jets near eta = 0.3, phi = 0.1, the last slot of every other jet padded."""
    rng = np.random.default_rng(seed)
    pt = rng.uniform(5.0, 200.0, (num_jets, num_particles))
    eta, phi = 0.3 + rng.normal(0, 0.2, pt.shape), 0.1 + rng.normal(0, 0.2, pt.shape)
    p4 = np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1)
    mask = np.ones(pt.shape, bool)
    mask[::2, -1] = False
    return np.where(mask[..., None], p4, 0.0), mask


def _noise_fn(key, n):
    return jnp.full((n, 6, 3), 5.0), jnp.ones((n, 6), bool)


def _generator(step_size=0.05, batch_size=8, log_pt_shift=0.0, std=(1.0, 1.0, 1.0)):
    model = QuadraticEnergy()
    params = model.init(jax.random.key(0), jnp.zeros((1, 6, 3)), jnp.ones((1, 6), bool))
    generation = GenerationConfig(num_steps=40, step_size=step_size, step_decay=0.5, decay_every=8, noise_scale=0.0,
                                  batch_size=batch_size)
    standardizer = Standardizer(mean=np.zeros(3), std=np.asarray(std))
    return EBMGenerator(model, params, standardizer, _noise_fn, generation, log_pt_shift)


def _shrink(generation: GenerationConfig, num_steps: int) -> float:
    """prod_t (1 - 2 s_t) over `chain_config`'s steps: the noiseless quadratic chain's factor."""
    short = chain_config(generation, num_steps)
    return float(np.prod([1 - 2 * short.step_size * short.step_decay ** (t // short.decay_every)
                          for t in range(num_steps)]))


def _assert_same_jets_up_to_a_boost(p4, mask, other, other_mask):
    """The JetNet features the metrics see agree: mass, pT_rel and phi_rel to round-off; eta_rel up to one shift
    per jet (the jet axis is a pseudorapidity, which a longitudinal boost does not shift additively)."""
    np.testing.assert_array_equal(other_mask, mask)
    before, after = jetnet_features(p4, mask), jetnet_features(other, other_mask)
    np.testing.assert_allclose(after.particles[..., 1:], before.particles[..., 1:], atol=2e-6)
    np.testing.assert_allclose(after.mass, before.mass, rtol=2e-5)
    shift = np.where(mask, after.particles[..., 0] - before.particles[..., 0], np.nan)
    np.testing.assert_allclose(shift, np.nanmean(shift, axis=1, keepdims=True) * np.where(mask, 1, np.nan), atol=2e-6)


def test_zero_steps_return_the_proposal_jets_in_the_benchmarks_coordinates():
    """Through the EBM's coordinates and back, with a log pT shift and a non-trivial standardizer."""
    p4, mask = _jets()
    standardizer = Standardizer(mean=np.array([0.1, -0.2, -3.0]), std=np.array([0.3, 0.2, 1.1]))
    ebm = dataclasses.replace(_generator(), log_pt_shift=-0.15, standardizer=standardizer)
    _assert_same_jets_up_to_a_boost(p4, mask, *ebm.refine(jax.random.key(1), p4, mask, 0))


def test_ebm_coordinates_are_relative_to_the_stored_particles():
    p4, mask = _jets()
    raw, raw_mask = ebm_coordinates(p4, mask, log_pt_shift=-0.2)
    features = jetnet_features(p4, mask)
    eta, phi, pt_rel = np.moveaxis(features.particles, -1, 0)
    np.testing.assert_allclose(raw[..., 0][mask], eta[mask], atol=1e-6)
    np.testing.assert_allclose(raw[..., 1][mask], phi[mask], atol=1e-6)
    np.testing.assert_allclose(raw[..., 2][mask], np.log(pt_rel[mask]) - 0.2, atol=1e-5)
    assert np.all(raw[~mask] == 0) and raw.dtype == np.float32
    _assert_same_jets_up_to_a_boost(p4, mask, constituents_from_ebm(raw, raw_mask), raw_mask)


def test_bad_proposal_slots_become_padding_and_an_empty_jet_keeps_one_particle():
    p4, mask = _jets(num_jets=3)
    p4[0, 1, 2] = np.nan
    p4[1] = 0.0
    raw, raw_mask = ebm_coordinates(p4, mask)
    assert not raw_mask[0, 1] and raw_mask[0, 0]
    assert raw_mask[1].tolist() == [True] + [False] * 5 and np.all(raw[1, 0] == 0)
    assert np.all(np.isfinite(raw))


def test_the_chain_starts_from_the_proposal_jets_and_takes_k_steps():
    """Noiseless quadratic chain: the standardised end positions are the proposal's times the exact K-step
    factor (a chain from noise, or a different number of steps, gives other positions); padding stays put."""
    p4, mask = _jets()
    ebm = _generator(std=(0.5, 0.5, 2.0))
    for k in (1, 5, 13):
        out, out_mask = ebm.refine(jax.random.key(2), p4, mask, k)
        start = ebm.standardizer.apply(ebm_coordinates(p4, mask)[0], mask)
        expected = constituents_from_ebm(ebm.standardizer.invert(_shrink(ebm.generation, k) * start, mask), mask)
        np.testing.assert_allclose(out, expected, rtol=2e-4, atol=1e-6)
        np.testing.assert_array_equal(out_mask, mask)
        assert np.all(out[~mask] == 0)


def test_gradient_evaluations_per_jet_are_counted_and_reported():
    p4, mask = _jets(num_jets=8)
    ebm = _generator(batch_size=8)
    for k in (0, 3, 7):
        CALLS.clear()
        ebm.refine(jax.random.key(3), p4, mask, k)
        jax.effects_barrier()
        assert len(CALLS) == k  # one batch of 8 jets: one energy + gradient per step
    assert grad_evals_per_jet(("convae", "nf", "ebm", "ebm_flow_start"), 200, 25) == {
        "convae": 0, "nf": 0, "ebm": 200, "ebm_flow_start": 25}
    assert grad_evals_per_jet(("convae_nf", "ebm"), 100, 25) == {"convae_nf": 0, "ebm": 100}


def test_short_chain_anneals_through_the_same_step_sizes():
    generation = GenerationConfig()  # 200 steps, 0.1 x0.8 every 40
    for k, every in ((50, 10), (25, 5), (10, 2), (3, 1)):
        short = chain_config(generation, k)
        assert (short.num_steps, short.decay_every) == (k, every)
        assert dataclasses.replace(short, num_steps=200, decay_every=40) == generation
    last = chain_config(generation, 50).langevin_config.step_size(49)
    np.testing.assert_allclose(last, generation.langevin_config.step_size(199))


def test_sampler_row_equals_its_point_of_the_sweep_and_every_k_shares_the_proposal_jets():
    p4, mask = _jets()
    drawn = []

    def proposal_fn(key, n):
        drawn.append(np.asarray(jax.random.key_data(key)))
        return p4[:n], mask[:n]

    ebm = _generator()
    sampler = FlowStartSampler(proposal_fn, ebm, 5)
    row = sampler(jax.random.key(4), 12)
    sweep = sampler.sweep(jax.random.key(4), 12, (0, 5))
    np.testing.assert_array_equal(row[0], sweep[5][0])
    np.testing.assert_array_equal(drawn[0], drawn[1])
    _assert_same_jets_up_to_a_boost(p4, mask, *sweep[0])
    by_proposal = sweep_proposals({"nf": proposal_fn, "ebm": ebm, "convae": proposal_fn}, jax.random.key(4), 12, (5,))
    assert set(by_proposal) == {"nf", "convae"}
    np.testing.assert_array_equal(by_proposal["nf"][5][0], row[0])


def test_config_checks_name_the_key_and_the_cpu_preset_has_the_row():
    with pytest.raises(ValueError, match="ebm_flow_start.proposal"):
        FlowStartConfig(proposal="ebm")
    with pytest.raises(ValueError, match="sweep"):
        FlowStartConfig(sweep=(0, 10, 10))
    with pytest.raises(ConfigError, match="ebm_flow_start.proposal"):
        validate(load_config(ExperimentConfig, CONFIG_DIR / "smoke.toml", ['models=["ebm", "ebm_flow_start"]']))
    with pytest.raises(ConfigError, match="models"):
        check_flow_start(("nf", "ebm_flow_start"), FlowStartConfig())
    cpu = load_config(ExperimentConfig, CONFIG_DIR / "cpu.toml", [])
    assert {"nf", "ebm", "ebm_flow_start"} <= set(cpu.models)
    assert 0 < cpu.ebm_flow_start.num_steps <= cpu.generation.num_steps // 4
    assert 0 in cpu.ebm_flow_start.sweep and cpu.ebm_flow_start.num_steps in cpu.ebm_flow_start.sweep


def test_curve_files_and_the_mean_over_seeds(tmp_path):
    """The curve's metrics are the table's (same code, same seed); no EMD_sum for the relative EBM rows."""
    test, (p4, mask) = _jets(40, seed=1), _jets(40, seed=2)
    results = evaluate_samples(test, {"truth": test, "ebm": (p4, mask), "ebm_flow_start": (p4, mask)}, seed=3,
                               cov_num_batches=1, cov_batch_size=10)
    assert "emd_sum" not in results["metrics"]["ebm_flow_start"]
    curves = []
    for seed_dir in (tmp_path / "a", tmp_path / "b"):
        curves.append(flow_start_curve({"nf": {0: (p4, mask), 4: test}}, test, results["metrics"], {"ebm": 200},
                                       seed=3))
        curve_report.write_seed_curve(seed_dir, curves[-1])
        assert (seed_dir / "flow_start_curve.json").exists() and (seed_dir / "plots" / "flow_start_curve.png").exists()
    point = curves[0]["curves"]["nf"][0]
    assert point["grad_evals_per_jet"] == 0
    for key in ("w1m", "w1p", "fpd"):
        assert point[key] == results["metrics"]["ebm_flow_start"][key]
    assert curves[0]["curves"]["nf"][1]["w1m"][0] < point["w1m"][0]  # the test jets themselves: W1 ~ 0
    lines = curve_report.write_summary_curve(tmp_path, [{"flow_start_curve": c} for c in curves])
    summary = curve_report.summarise_curves(curves)
    assert summary["curves"]["nf"][0]["w1m"] == [point["w1m"][0], 0.0] and summary["ebm"]["grad_evals_per_jet"] == 200
    assert any("| from nf jets | 4 |" in line for line in lines) and (tmp_path / "flow_start_curve.json").exists()
