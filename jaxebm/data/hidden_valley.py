"""Pythia 8 Hidden Valley settings for semi-visible ("dark") jets: pp -> Z' -> q_d q_d-bar.

The defaults are the "Aachen" benchmark of the NAE paper and the dissertation (ch. 5.1): Z' mass
2 TeV, a dark SU(3) with one flavour, dark quark 0.5 GeV, dark pion 4 GeV, dark rho 5 GeV, and an
invisible fraction ``r_inv = 0.75``: every dark meson decays to a light-quark pair (shower and
hadronisation by Pythia, mode 91) with probability ``1 - r_inv`` and to a pair of stable invisible
dark states (PDG 51) with probability ``r_inv``. The paper's variants: ``r_inv`` 0.5 and 0.2, and
meson masses = confinement scale = 10 or 20 GeV.

    settings = hidden_valley_settings()                      # Aachen
    variant = hidden_valley_settings(r_inv=0.5)              # pass as extra_pythia_settings: read
                                                             # after the card, it overrides it
The paper's samples were made with MadGraph for the hard process and Delphes for the detector;
here Pythia makes the whole event and the jets are built from its visible final-state particles.
"""
from __future__ import annotations

__all__ = ["AACHEN", "DARK_QUARK", "Z_PRIME", "hidden_valley_settings"]

DARK_QUARK, Z_PRIME, DARK_PION, DARK_RHO, INVISIBLE = 4900101, 4900023, 4900111, 4900113, 51
AACHEN = dict(z_prime_mass=2000.0, r_inv=0.75, quark_mass=0.5, pion_mass=4.0, rho_mass=5.0, confinement_scale=5.0)


def hidden_valley_settings(*, z_prime_mass: float = 2000.0, r_inv: float = 0.75, quark_mass: float = 0.5,
                           pion_mass: float = 4.0, rho_mass: float = 5.0, confinement_scale: float = 5.0,
                           z_prime_width: float = 10.0, prob_vector: float = 0.75) -> tuple[str, ...]:
    """Pythia ``readString`` lines of the dark-shower model (masses and widths in GeV).

    r_inv: fraction of dark-meson decays into invisible states, in [0, 1]. prob_vector: fraction of
    dark mesons produced as rho (vector) rather than pion. The dark shower runs down to
    ``1.1 * confinement_scale``.
    """
    if not 0.0 <= r_inv <= 1.0:
        raise ValueError(f"r_inv must be in [0, 1], got {r_inv}")
    for name, value in (("z_prime_mass", z_prime_mass), ("quark_mass", quark_mass), ("pion_mass", pion_mass),
                        ("rho_mass", rho_mass), ("confinement_scale", confinement_scale),
                        ("z_prime_width", z_prime_width)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if not 2 * quark_mass < pion_mass <= rho_mass < z_prime_mass / 2:
        raise ValueError(f"need 2 m_q < m_pi <= m_rho < m_Z'/2, got {quark_mass}, {pion_mass}, {rho_mass}, "
                         f"{z_prime_mass}")
    meson_decays = []
    for meson in (DARK_PION, DARK_RHO):
        meson_decays += [f"{meson}:oneChannel = 1 {1.0 - r_inv:.6g} 91 -3 3",
                         f"{meson}:addChannel = 1 {r_inv:.6g} 0 {INVISIBLE} {-INVISIBLE}"]
    return (
        "HiddenValley:ffbar2Zv = on",
        f"{Z_PRIME}:m0 = {z_prime_mass:g}", f"{Z_PRIME}:mWidth = {z_prime_width:g}",
        f"{Z_PRIME}:mMin = {z_prime_mass - 5 * z_prime_width:g}",
        f"{Z_PRIME}:mMax = {z_prime_mass + 5 * z_prime_width:g}",
        f"{Z_PRIME}:onMode = off", f"{Z_PRIME}:onIfAny = {DARK_QUARK}",
        "HiddenValley:Ngauge = 3", "HiddenValley:nFlav = 1", "HiddenValley:fragment = on", "HiddenValley:FSR = on",
        "HiddenValley:alphaOrder = 1", f"HiddenValley:Lambda = {confinement_scale:g}",
        f"HiddenValley:pTminFSR = {1.1 * confinement_scale:g}", "HiddenValley:spinFv = 0",
        f"HiddenValley:probVector = {prob_vector:g}",
        f"{DARK_QUARK}:m0 = {quark_mass:g}", f"{DARK_PION}:m0 = {pion_mass:g}", f"{DARK_RHO}:m0 = {rho_mass:g}",
        f"{INVISIBLE}:m0 = 0.0", f"{INVISIBLE}:mayDecay = off",
        *meson_decays,
    )
