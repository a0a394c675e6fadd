"""Small synthetic jet files in the jaxebm schema, for tests that need files but not Pythia.

Jets of pT 550-650 GeV: massless constituents around the jet axis, pT-ordered, with an angular spread
``spread`` (a wider spread gives heavier jets, so "signal" files differ from "background" ones).
"""
from __future__ import annotations

import datetime

import numpy as np

from jaxebm.data.io import JetSample, jet_summary, massless_four_vectors, write_jets


def synthetic_sample(num_jets: int, *, num_slots: int = 20, spread: float = 0.1, seed: int = 0,
                     attrs: dict | None = None) -> JetSample:
    """``num_jets`` jets of 5..num_slots constituents, ``(E, px, py, pz)`` in GeV."""
    rng = np.random.default_rng(seed)
    multiplicity = rng.integers(5, num_slots + 1, num_jets)
    mask = np.arange(num_slots)[None, :] < multiplicity[:, None]
    fractions = -np.sort(-rng.dirichlet(np.ones(num_slots), num_jets), axis=1)
    jet_pt = rng.uniform(550.0, 650.0, num_jets)[:, None]
    eta = rng.uniform(-1.5, 1.5, num_jets)[:, None] + rng.normal(0.0, spread, (num_jets, num_slots))
    phi = rng.uniform(-np.pi, np.pi, num_jets)[:, None] + rng.normal(0.0, spread, (num_jets, num_slots))
    constituents = np.where(mask[..., None], massless_four_vectors(fractions * jet_pt, eta, phi), 0.0)
    constituents = constituents.astype(np.float32)
    return JetSample(constituents, mask, jet_summary(constituents, mask, mask.sum(axis=1)), None, dict(attrs or {}))


def write_jet_file(path, num_jets: int, *, attrs: dict, spread: float = 0.1, seed: int = 0, num_slots: int = 20):
    """Write a synthetic sample with ``attrs`` (plus a creation time) to ``path``."""
    created = datetime.datetime.now(datetime.timezone.utc).isoformat()
    write_jets(path, synthetic_sample(num_jets, num_slots=num_slots, spread=spread, seed=seed,
                                      attrs={**attrs, "creation_time": created}))


def write_experiment_data(data_files: dict) -> None:
    """A file per `jaxebm.runs.DataFile` with the attributes it asks for; non-QCD processes get wider jets."""
    for index, data_file in enumerate(data_files.values()):
        spread = 0.1 if data_file.attrs.get("process", "qcd") == "qcd" else 0.25
        write_jet_file(data_file.path, data_file.attrs["num_jets"], attrs=dict(data_file.attrs), spread=spread,
                       seed=index)


def write_landscape_file(path, sample: JetSample, labels) -> None:
    """``sample`` in the public top-tagging landscape layout: a pandas "fixed" frame under ``table``
    (800 float columns E_i, PX_i, PY_i, PZ_i for 200 slots, then ``ttv`` and ``is_signal_new``)."""
    import h5py

    num_jets, num_slots = sample.mask.shape
    constituents = np.zeros((num_jets, 200, 4), np.float32)
    constituents[:, :num_slots] = sample.constituents
    float_columns = [f"{c}_{i}" for i in range(200) for c in ("E", "PX", "PY", "PZ")]
    ints = np.stack([np.zeros(num_jets, np.int64), np.asarray(labels, np.int64)], axis=1)
    with h5py.File(path, "w") as file:
        table = file.create_group("table")
        table.create_dataset("block0_items", data=np.array(float_columns, dtype="S"))
        table.create_dataset("block0_values", data=constituents.reshape(num_jets, 800))
        table.create_dataset("block1_items", data=np.array(["ttv", "is_signal_new"], dtype="S"))
        table.create_dataset("block1_values", data=ints)


def write_jetnet_file(path, num_jets: int, jet_type: int = 1, seed: int = 0) -> None:
    """A JetNet file: ``particle_features (n, 30, 4) = (eta_rel, phi_rel, pT_rel, mask)`` and
    ``jet_features (n, 5) = (type, pT, eta, mass, n_particles)``."""
    import h5py

    rng = np.random.default_rng(seed)
    multiplicity = rng.integers(5, 31, num_jets)
    mask = np.arange(30) < multiplicity[:, None]
    pt_rel = -np.sort(-rng.dirichlet(np.ones(30), num_jets), axis=1)
    features = np.stack([rng.normal(0, 0.1, pt_rel.shape), rng.normal(0, 0.1, pt_rel.shape), pt_rel, mask], -1)
    jet_features = np.stack([np.full(num_jets, jet_type), rng.uniform(900, 1100, num_jets), rng.normal(0, 1, num_jets),
                             rng.uniform(20, 200, num_jets), multiplicity], 1)
    with h5py.File(path, "w") as file:
        file.create_dataset("particle_features", data=np.where(mask[..., None], features, 0.0).astype(np.float32))
        file.create_dataset("jet_features", data=jet_features.astype(np.float32))
