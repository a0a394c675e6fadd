"""JetNet-like jets: the writer round-trips through `read_jetnet`, bad arrays get clear errors, the EBM's
coordinates come back from the file, and the benchmark's fixed split and config checks."""
import numpy as np
import pytest

from jaxebm.config import ConfigError
from jaxebm.data.io import JetSample, jet_summary, massless_four_vectors, read_jetnet
from jaxebm.data.jetnet_like import (
    JETNET_TYPES, check_jetnet_arrays, generation_config, to_jetnet_arrays, write_jetnet,
)
from jaxebm.errors import JetInputError
from jaxebm.experiments import jetnet_bench, jetnet_bench_data


def massive_jets(seed, num_jets=5, num_slots=40):
    """Schema jets of massive particles (m = 0.14 GeV), random order and multiplicity, near phi = 3 (wraps).

    Returns the sample and per slot (pT, pseudorapidity, phi, mask)."""
    rng = np.random.default_rng(seed)
    pt = rng.exponential(30.0, (num_jets, num_slots)) + 0.5
    eta = 0.7 + 0.3 * rng.normal(size=pt.shape)
    phi = np.pi - 0.05 + 0.3 * rng.normal(size=pt.shape)
    mass = 0.14
    mt = np.sqrt(pt**2 + mass**2)
    p4 = np.stack([mt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(eta)], axis=-1)
    counts = np.concatenate([[num_slots], rng.integers(5, 25, num_jets - 1)])  # one jet keeps more than 30
    mask = np.arange(num_slots)[None, :] < counts[:, None]
    p4 = np.where(mask[..., None], p4, 0.0)
    pseudorapidity = np.arcsinh(mt * np.sinh(eta) / pt)
    sample = JetSample(p4.astype(np.float32), mask, jet_summary(p4, mask, counts), None, {})
    return sample, (pt, pseudorapidity, phi, mask)


def test_writer_round_trips_through_the_jetnet_reader(tmp_path):
    sample, (pt, eta, phi, mask) = massive_jets(0)
    particles, jets = to_jetnet_arrays(sample, "g", num_particles=30)
    write_jetnet(tmp_path / "jetnet_g.h5", particles, jets, attrs={"jet_type": "g"})
    back = read_jetnet(tmp_path / "jetnet_g.h5")
    np.testing.assert_array_equal(back.labels, JETNET_TYPES["g"])
    np.testing.assert_array_equal(back.mask.sum(axis=1), np.minimum(mask.sum(axis=1), 30))
    np.testing.assert_allclose(back.jets[:, [0, 1, 3]], sample.jets[:, [0, 1, 3]], rtol=1e-6)
    # The reader's jet sits at phi = 0: every particle is the original one, hardest 30, turned by -phi_jet.
    for jet in range(len(pt)):
        order = np.argsort(-np.where(mask[jet], pt[jet], -1.0), kind="stable")[:30]
        order = order[mask[jet][order]]
        turned = phi[jet][order] - sample.jets[jet, 2]
        expected = massless_four_vectors(pt[jet][order], eta[jet][order], turned)
        got = back.constituents[jet][back.mask[jet]]
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-4)  # float32 storage
    assert np.all(np.abs(particles[..., 1]) <= np.pi)  # phi_rel wrapped although the jets sit near phi = pi


def test_ebm_coordinates_are_the_files_relative_coordinates(tmp_path):
    sample, _ = massive_jets(1)
    particles, jets = to_jetnet_arrays(sample, "q")
    write_jetnet(tmp_path / "q.h5", particles, jets)
    back = read_jetnet(tmp_path / "q.h5")
    features = jetnet_bench.ebm_features(back, back.jets[:, 0])
    real = particles[..., 3] == 1
    np.testing.assert_allclose(features[real][:, :2], particles[real][:, :2], atol=2e-5)
    np.testing.assert_allclose(np.exp(features[real][:, 2]), particles[real][:, 2], rtol=2e-5)
    np.testing.assert_array_equal(features[~real], 0.0)


def test_bad_jetnet_arrays_get_clear_errors(tmp_path):
    particles, jets = to_jetnet_arrays(massive_jets(2)[0], "t")
    check_jetnet_arrays(particles, jets, num_particles=30)
    with pytest.raises(JetInputError, match="must hold 30 particles per jet, got 29"):
        check_jetnet_arrays(particles[:, :29], jets, num_particles=30)
    with pytest.raises(JetInputError, match="NaN"):
        write_jetnet(tmp_path / "x.h5", np.where(particles == particles[0, 0, 0], np.nan, particles), jets)
    padded = np.argwhere(particles[..., 3] == 0)[0]
    bad = particles.copy()
    bad[tuple(padded)][0] = 0.01
    with pytest.raises(JetInputError, match="padded particle .* non-zero"):
        write_jetnet(tmp_path / "x.h5", bad, jets)
    bad = particles.copy()
    bad[0, 0, 2] = 0.0
    with pytest.raises(JetInputError, match="real particle .* pT_rel <= 0"):
        check_jetnet_arrays(bad, jets)
    bad_jets = jets.copy()
    bad_jets[1, 4] += 1
    with pytest.raises(JetInputError, match="n_particles differs"):
        check_jetnet_arrays(particles, bad_jets)
    assert not (tmp_path / "x.h5").exists()
    with pytest.raises(JetInputError, match="NaN"):
        sample = massive_jets(3)[0]
        to_jetnet_arrays(sample._replace(jets=np.full_like(sample.jets, np.nan)), "g")
    with pytest.raises(JetInputError, match="jet_type"):
        generation_config("b", num_jets=10, seed=1)


def test_benchmark_split_is_fixed_and_disjoint_and_bad_configs_are_refused():
    data = jetnet_bench_data.DataConfig(num_jets=1000)
    train, val, test = jetnet_bench_data.split_rows(data)
    assert (len(train), len(val), len(test)) == (700, 150, 150)
    assert len(np.unique(np.concatenate([train, val, test]))) == 1000
    np.testing.assert_array_equal(jetnet_bench_data.split_rows(data)[2], test)
    config = jetnet_bench.ExperimentConfig(data=data)
    with pytest.raises(ConfigError, match="padding_mode must be 'mask'"):
        jetnet_bench.validate(config.__class__(data=data, cd=jetnet_bench.CDConfig(padding_mode="zeros")))
    with pytest.raises(ConfigError, match="cd.batch_size"):
        jetnet_bench.validate(config.__class__(data=jetnet_bench_data.DataConfig(num_jets=100)))
