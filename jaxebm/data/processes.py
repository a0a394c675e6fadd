"""The physics processes the generator (`jaxebm.data.generate`) knows: `ProcessCard`s (Pythia settings plus
the truth matching their jets need) in the `PROCESSES` registry, by name."""
from __future__ import annotations

import dataclasses

from jaxebm.data.hidden_valley import DARK_QUARK, hidden_valley_settings

__all__ = ["PROCESSES", "ProcessCard"]


_HADRONIC_W = ("24:onMode = off", "24:onIfAny = 1 2 3 4 5")


@dataclasses.dataclass(frozen=True)
class ProcessCard:
    """A physics process: Pythia settings plus the truth matching its jets need.

    Attributes:
        name: registry key (``PROCESSES[name]``), stored in the file as ``process``.
        pythia_settings: Pythia ``readString`` lines that switch the process on and set decays.
        match_pdg_ids: ``|PDG id|`` of hard-process resonances a kept jet must contain together
            with all the final partons they decay to; empty for no matching (QCD).
        description: one line for humans.
    """

    name: str
    pythia_settings: tuple[str, ...]
    match_pdg_ids: tuple[int, ...] = ()
    description: str = ""


PROCESSES: dict[str, ProcessCard] = {
    card.name: card
    for card in (
        ProcessCard("qcd", ("HardQCD:all = on",), description="hard QCD 2 -> 2 (light-quark and gluon jets)"),
        ProcessCard(
            "top",
            ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", *_HADRONIC_W),
            match_pdg_ids=(6,),
            description="ttbar, hadronic W decays; the jet holds a top and its b, q, q'",
        ),
        ProcessCard(
            "w",
            ("WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on", *_HADRONIC_W),
            match_pdg_ids=(24,),
            description="W + jet, hadronic W; the jet holds the W and its q, q'",
        ),
        ProcessCard(
            "h_hh_4b",
            ("Higgs:useBSM = on", "HiggsBSM:gg2H2g(l:t) = on", "HiggsBSM:qg2H2q(l:t) = on",
             "HiggsBSM:qqbar2H2g(l:t) = on", "35:m0 = 174", "35:onMode = off", "35:onIfMatch = 25 25",
             "25:m0 = 80", "25:onMode = off", "25:onIfMatch = 5 -5"),
            match_pdg_ids=(35,),
            description="heavy Higgs H (174 GeV) -> h h (80 GeV) -> 4b; the jet holds the H and its four b",
        ),
        ProcessCard(
            "dark",
            hidden_valley_settings(),
            match_pdg_ids=(DARK_QUARK,),
            description="semi-visible dark jets, Hidden Valley Z'(2 TeV) -> q_d q_d-bar, 'Aachen' benchmark "
                        "(r_inv 0.75, m_pi_d 4, m_rho_d 5 GeV; variants: extra settings from "
                        "jaxebm.data.hidden_valley); the jet lies within R of a dark quark",
        ),
        ProcessCard(
            "jetnet_g",
            ("HardQCD:gg2gg = on", "HardQCD:qqbar2gg = on"),
            match_pdg_ids=(21,),
            description="JetNet-like gluon jets (jaxebm.data.jetnet_like): gg -> gg, qqbar -> gg; the jet "
                        "lies within R of an outgoing gluon",
        ),
        ProcessCard(
            "jetnet_q",
            ("HardQCD:qg2qg = on", "HardQCD:qq2qq = on", "HardQCD:qqbar2qqbarNew = on", "HardQCD:nQuarkNew = 3"),
            match_pdg_ids=(1, 2, 3),
            description="JetNet-like light-quark jets (jaxebm.data.jetnet_like): qg -> qg, qq -> qq, "
                        "qqbar -> q'qbar'; the jet lies within R of an outgoing u, d or s quark",
        ),
    )
}
