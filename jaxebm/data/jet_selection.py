"""Jets of one Pythia event: anti-kT clustering (FastJet's core inside Pythia, `make_jet_finder`), the
generator's kinematic window and the truth matching of a process card (`select_jets`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pythia8mc

from jaxebm.data.processes import PROCESSES

if TYPE_CHECKING:
    from jaxebm.data.generate import GenerationConfig

__all__ = ["make_jet_finder", "select_jets"]


def make_jet_finder(jet_radius: float, jet_pt_min: float) -> pythia8mc.SlowJet:
    """Anti-kT (fjcore) over visible final-state particles with their true masses, E-scheme."""
    anti_kt_power, particle_abs_eta_max, visible_final, true_masses = -1, 25.0, 2, 2
    no_hook, use_fjcore, standard_delta_r = None, True, True  # Delta R^2 = Delta y^2 + Delta phi^2, as FastJet
    return pythia8mc.SlowJet(
        anti_kt_power, jet_radius, jet_pt_min, particle_abs_eta_max, visible_final, true_masses,
        no_hook, use_fjcore, standard_delta_r,
    )


def select_jets(
    pythia: pythia8mc.Pythia, jet_finder: pythia8mc.SlowJet, config: GenerationConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cluster the current event and return its kept jets, hardest first (SlowJet orders by pT).

    Returns:
        ``(summary, momenta)`` per jet: ``summary`` float64 ``(5,)`` = (pt, eta, phi, mass,
        n_constituents); ``momenta`` float64 ``(min(n, max_constituents), 4)`` = (E, px, py, pz),
        pT-ordered.
    """
    match_pdg_ids = PROCESSES[config.process].match_pdg_ids
    jet_finder.analyze(pythia.event)
    resonances = None
    kept = []
    for jet in range(jet_finder.sizeJet()):
        pt, eta, phi = jet_finder.pT(jet), jet_finder.p(jet).eta(), jet_finder.phi(jet)
        if not (config.jet_pt_min <= pt < config.jet_pt_max and abs(eta) < config.jet_abs_eta_max):
            continue
        if match_pdg_ids:
            resonances = _resonance_directions(pythia.process, match_pdg_ids) if resonances is None else resonances
            if not any(_all_within(eta, phi, directions, config.jet_radius) for directions in resonances):
                continue
        momenta = _constituent_momenta(pythia.event, jet_finder.constituents(jet), config.max_constituents)
        kept.append((np.array([pt, eta, phi, jet_finder.m(jet), jet_finder.multiplicity(jet)]), momenta))
    return kept


def _constituent_momenta(event: pythia8mc.Event, indices: list[int], max_constituents: int) -> np.ndarray:
    """``(E, px, py, pz)`` float64 ``(min(n, max_constituents), 4)`` of event particles, hardest first."""
    momenta = np.array([(p.e(), p.px(), p.py(), p.pz()) for p in map(event.__getitem__, indices)])
    order = np.argsort(-np.hypot(momenta[:, 1], momenta[:, 2]), kind="stable")
    return momenta[order[:max_constituents]]


def _resonance_directions(process: pythia8mc.Event, match_pdg_ids: tuple[int, ...]) -> list[np.ndarray]:
    """(eta, phi) ``(1 + n_partons, 2)`` of each matching resonance and its final decay partons."""
    directions = []
    for index in range(process.size()):
        if abs(process[index].id()) in match_pdg_ids:
            members = [process[index], *_final_parton_descendants(process, index)]
            directions.append(np.array([(p.eta(), p.phi()) for p in members]))
    return directions


def _final_parton_descendants(process: pythia8mc.Event, index: int) -> list[pythia8mc.Particle]:
    found = []
    for daughter in process.daughterList(index):
        particle = process[daughter]
        if not particle.isFinal():
            found.extend(_final_parton_descendants(process, daughter))
        elif particle.isParton():
            found.append(particle)
    return found


def _all_within(eta: float, phi: float, directions: np.ndarray, radius: float) -> bool:
    """True if every (eta, phi) row of ``directions`` lies within ``radius`` of (eta, phi)."""
    delta_phi = np.angle(np.exp(1j * (directions[:, 1] - phi)))
    return bool(np.all(np.hypot(directions[:, 0] - eta, delta_phi) < radius))
