"""JetNet-like jets from Pythia 8: the generator options and the JetNet file layout.

JetNet (Kansal et al. 2021) stores per class ``particle_features (n, P, 4) = (eta_rel, phi_rel,
pT_rel, mask)`` of the ``P = 30`` (or 150) hardest particles and ``jet_features (n, 5) = (type, pT,
eta, mass, n_particles)``, for gluon, light-quark, top, W and Z jets of parton pT ~ 1 TeV at 13 TeV,
anti-kT R = 0.8. Here:

- `generation_config` gives `jaxebm.data.generate.GenerationConfig` options for each JetNet class:
  the hard process of the card (``jetnet_g``, ``jetnet_q``, ``top``, ``w``) with parton pT (pTHat) in
  ``PT_HAT_WINDOW``, anti-kT R = 0.8 on visible final-state particles, the jet within R of its
  initiating parton (of the top / W and its decay partons), a loose jet cut (``JET_PT_WINDOW``,
  |eta| < ``JET_ABS_ETA_MAX``) that leaves the parton window in charge.
- `to_jetnet_arrays` turns jets of the jaxebm schema into JetNet's arrays:
  ``eta_rel = eta - eta_jet``, ``phi_rel = phi - phi_jet`` wrapped to (-pi, pi],
  ``pT_rel = pT / pT_jet`` (jet values of the whole jet), the ``P`` hardest particles, padded rows
  all zero (mask 0), ``n_particles = min(multiplicity, P)``.
- `write_jetnet` writes them atomically (checked first, see `check_jetnet_arrays`) so that
  `jaxebm.data.io.read_jetnet` loads the file.

Every known difference from the real JetNet is listed in ``docs/drafts/17.md``.

    sample = generate_jets(generation_config("g", num_jets=5000, seed=1))
    particles, jets = to_jetnet_arrays(sample, "g")
    write_jetnet("runs/data/jetnet_g.h5", particles, jets, attrs={"jet_type": "g"})
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from jaxebm.data.generate import GenerationConfig
from jaxebm.data.io import JetSample
from jaxebm.errors import JetInputError

__all__ = ["JETNET_TYPES", "PROCESS_OF_TYPE", "check_jetnet_arrays", "generation_config", "to_jetnet_arrays",
           "write_jetnet"]

JETNET_TYPES = {"g": 0, "q": 1, "t": 2, "w": 3, "z": 4}  # JetNet's jet_features[:, 0]
PROCESS_OF_TYPE = {"g": "jetnet_g", "q": "jetnet_q", "t": "top", "w": "w"}
PT_HAT_WINDOW = (950.0, 1050.0)  # GeV, parton pT ~ 1 TeV
JET_PT_WINDOW = (400.0, 2000.0)  # GeV, loose: the parton window sets the jet pT
JET_ABS_ETA_MAX = 2.5


def generation_config(jet_type: str, *, num_jets: int, seed: int, num_workers: int = 1,
                      max_constituents: int = 150) -> GenerationConfig:
    """Pythia options for JetNet class ``jet_type`` (``"g"``, ``"q"``, ``"t"``, ``"w"``); see the module doc."""
    if jet_type not in PROCESS_OF_TYPE:
        raise JetInputError(f"jet_type must be one of {sorted(PROCESS_OF_TYPE)}, got {jet_type!r}")
    return GenerationConfig(
        process=PROCESS_OF_TYPE[jet_type], num_jets=num_jets, seed=seed, num_workers=num_workers, jet_radius=0.8,
        jet_pt_min=JET_PT_WINDOW[0], jet_pt_max=JET_PT_WINDOW[1], jet_abs_eta_max=JET_ABS_ETA_MAX,
        pt_hat_min=PT_HAT_WINDOW[0], pt_hat_max=PT_HAT_WINDOW[1], max_constituents=max_constituents)


def to_jetnet_arrays(sample: JetSample, jet_type: str, num_particles: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """JetNet's arrays from jets of the jaxebm schema (pT-ordered constituents, ``jets`` of the whole jet).

    Returns:
      ``particle_features`` float32 ``(n, num_particles, 4)`` ``(eta_rel, phi_rel, pT_rel, mask)`` and
      ``jet_features`` float32 ``(n, 5)`` ``(type, pT [GeV], eta, mass [GeV], n_particles)``.
    """
    if jet_type not in JETNET_TYPES:
        raise JetInputError(f"jet_type must be one of {sorted(JETNET_TYPES)}, got {jet_type!r}")
    p4 = np.asarray(sample.constituents, np.float64)
    mask = np.asarray(sample.mask, bool)
    jets = np.asarray(sample.jets, np.float64)
    if not (np.isfinite(p4).all() and np.isfinite(jets).all()):
        raise JetInputError("sample contains NaN or inf values")
    pt = np.hypot(p4[..., 1], p4[..., 2])
    if np.any(mask & (pt <= 0)):
        raise JetInputError("mask is inconsistent with the constituents: a real particle has zero pT")
    order = np.argsort(np.where(mask, -pt, np.inf), axis=1, kind="stable")[:, :num_particles]
    p4, pt, mask = (np.take_along_axis(a, order[..., None] if a.ndim == 3 else order, axis=1) for a in (p4, pt, mask))
    eta = np.arcsinh(np.divide(p4[..., 3], pt, out=np.zeros_like(pt), where=pt > 0))
    phi = np.arctan2(p4[..., 2], p4[..., 1])
    jet_pt, jet_eta, jet_phi, jet_mass, _ = jets.T
    phi_rel = np.pi - np.mod(np.pi - (phi - jet_phi[:, None]), 2.0 * np.pi)
    particles = np.stack([eta - jet_eta[:, None], phi_rel, pt / jet_pt[:, None], np.ones_like(pt)], axis=-1)
    particles = np.where(mask[..., None], particles, 0.0)
    if particles.shape[1] < num_particles:
        particles = np.pad(particles, ((0, 0), (0, num_particles - particles.shape[1]), (0, 0)))
    jet_features = np.stack([np.full_like(jet_pt, JETNET_TYPES[jet_type]), jet_pt, jet_eta, jet_mass,
                             mask.sum(axis=1)], axis=1)
    return particles.astype(np.float32), jet_features.astype(np.float32)


def check_jetnet_arrays(particle_features: Any, jet_features: Any, num_particles: int | None = None) -> None:
    """Raise `JetInputError` naming the problem: shapes (``num_particles`` slots if given), NaN / inf, a mask
    column other than 0 / 1, a padded row that is not all zero, a real particle with ``pT_rel <= 0``,
    ``n_particles`` unequal to the mask count, a jet without particles."""
    particles, jets = np.asarray(particle_features), np.asarray(jet_features)
    if particles.ndim != 3 or particles.shape[2] != 4:
        raise JetInputError(f"particle_features must be (n, P, 4) (eta_rel, phi_rel, pT_rel, mask), "
                            f"got shape {particles.shape}")
    if num_particles is not None and particles.shape[1] != num_particles:
        raise JetInputError(f"particle_features must hold {num_particles} particles per jet, got {particles.shape[1]}")
    if jets.shape != (particles.shape[0], 5):
        raise JetInputError(f"jet_features must be ({particles.shape[0]}, 5) (type, pT, eta, mass, n_particles), "
                            f"got shape {jets.shape}")
    if not (np.isfinite(particles).all() and np.isfinite(jets).all()):
        raise JetInputError("particle_features or jet_features contain NaN or inf values")
    mask = particles[..., 3]
    if not np.all((mask == 0) | (mask == 1)):
        raise JetInputError("the mask column of particle_features must hold only 0 and 1")
    real = mask == 1
    if np.any(~real[..., None] & (particles[..., :3] != 0)):
        raise JetInputError("mask is inconsistent with the features: a padded particle (mask 0) has non-zero values")
    if np.any(real & (particles[..., 2] <= 0)):
        raise JetInputError("mask is inconsistent with the features: a real particle (mask 1) has pT_rel <= 0")
    if not real.any(axis=1).all():
        raise JetInputError("a jet has no real particle")
    if not np.array_equal(jets[:, 4], real.sum(axis=1)):
        raise JetInputError("jet_features n_particles differs from the number of real particles in the mask")


def write_jetnet(path: str | os.PathLike, particle_features: np.ndarray, jet_features: np.ndarray, *,
                 attrs: Mapping[str, Any] | None = None) -> None:
    """Write a JetNet-layout HDF5 file atomically (temporary file in the same directory, then renamed).

    Datasets ``particle_features`` and ``jet_features`` (float32, checked by `check_jetnet_arrays`);
    ``attrs`` (str, numbers, tuples of them) go to the root attributes.
    """
    check_jetnet_arrays(particle_features, jet_features)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(handle)
    try:
        with h5py.File(temporary, "w") as file:
            file.create_dataset("particle_features", data=np.asarray(particle_features, np.float32), compression="gzip")
            file.create_dataset("jet_features", data=np.asarray(jet_features, np.float32), compression="gzip")
            for key, value in (attrs or {}).items():
                file.attrs[key] = value
        os.chmod(temporary, 0o644)  # mkstemp makes it private
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
