"""Jet observables: kinematics, N-subjettiness and energy-flow polynomials (EFPs).

Everything is vectorised over jets (numpy, float64 results) except FastJet's clustering for the
N-subjettiness axes, one jet at a time; padded slots are identified by the mask and never enter a
result, whatever values they hold. Angular distances use
``dR_ij = sqrt(d_eta^2 + d_phi^2)`` with ``d_phi`` wrapped to ``(-pi, pi]``; for massless
constituents eta is the rapidity. N-subjettiness axes (FastJet exclusive-kT jets) are massive and
enter with their rapidity.

EFP set (`efps_d4`, 36 columns): all multigraphs with at most 4 edges, in the order of
energyflow's ``EFPSet('d<=4')`` (energyflow 1.4.0, default graph file ``efps_d_le_10``), which is
what JetNet's FPD/KPD use (``jetnet.utils.efps(jets, efpset_args=[("d<=", 4)])``, ``(n, 36)``).
energyflow orders the 21 connected graphs first (by vertices n, then simple edges, then edge
weights) and the 15 disconnected graphs after them; `EFP_D4_PRIMES` and `EFP_D4_COMPOSITES` list
them. Column 0 is the one-vertex graph ``sum_i z_i`` (1 when normed). `efps_w1` returns the five
connected graphs with n = 4 vertices and d = 4 edges (JetNet's W1EFP set: ``n==4, d==4, p==1``),
columns 12, 14, 15, 16, 17 of `efps_d4`.
"""

from __future__ import annotations

from typing import Any

import fastjet
import numpy as np

from jaxebm.data.preprocess import (
    check_particle_arrays,
    constituent_pt_eta_phi,
    wrap_phi,
)
from jaxebm.errors import JetInputError

__all__ = [
    "EFP_D4_COMPOSITES",
    "EFP_D4_PRIMES",
    "EFP_W1_COLUMNS",
    "NSUBJETTINESS_AXES",
    "efps_d4",
    "efps_w1",
    "jet_kinematics",
    "nsubjettiness",
    "tau_ratios",
]

# Connected graphs of EFPSet('d<=4') in energyflow's order; an edge listed twice is a double edge.
EFP_D4_PRIMES: tuple[tuple[tuple[int, int], ...], ...] = (
    (),  # 0: n=1, d=0 (dot)
    ((0, 1),),  # 1: n=2, d=1
    ((0, 1),) * 2,  # 2: n=2, d=2
    ((0, 1),) * 3,  # 3: n=2, d=3
    ((0, 1),) * 4,  # 4: n=2, d=4
    ((0, 1), (0, 2)),  # 5: n=3 path, d=2
    ((0, 1), (0, 2), (0, 2)),  # 6: n=3 path, weights (1, 2)
    ((0, 1), (0, 2), (0, 2), (0, 2)),  # 7: n=3 path, weights (1, 3)
    ((0, 1), (0, 1), (0, 2), (0, 2)),  # 8: n=3 path, weights (2, 2)
    ((0, 1), (0, 2), (1, 2)),  # 9: triangle
    ((0, 1), (0, 2), (0, 2), (1, 2)),  # 10: triangle, one double edge
    ((0, 1), (0, 2), (0, 3)),  # 11: n=4 star
    ((0, 1), (0, 2), (0, 2), (0, 3)),  # 12: n=4 star, one double edge
    ((0, 1), (0, 2), (1, 3)),  # 13: n=4 path
    ((0, 1), (0, 2), (0, 2), (1, 3)),  # 14: n=4 path, an outer edge doubled
    ((0, 1), (0, 1), (0, 2), (1, 3)),  # 15: n=4 path, the middle edge doubled
    ((0, 1), (0, 2), (1, 2), (0, 3)),  # 16: triangle with a pendant edge
    ((0, 1), (0, 2), (1, 3), (2, 3)),  # 17: square
    ((0, 1), (0, 2), (0, 3), (0, 4)),  # 18: n=5 star
    ((0, 1), (0, 2), (0, 3), (1, 4)),  # 19: n=5 "chair"
    ((0, 1), (0, 2), (1, 3), (2, 4)),  # 20: n=5 path
)
# Disconnected graphs, columns 21..35 of efps_d4: products of the listed prime columns.
EFP_D4_COMPOSITES: tuple[tuple[int, ...], ...] = (
    (1, 1), (1, 2), (1, 3), (2, 2), (1, 5), (2, 5), (1, 6), (1, 9),
    (1, 1, 1), (1, 11), (1, 13), (5, 5), (1, 1, 2), (1, 1, 5), (1, 1, 1, 1),
)  # fmt: skip
EFP_W1_COLUMNS: tuple[int, ...] = (12, 14, 15, 16, 17)

_CHUNK_BYTES = 2**27  # bound on the (chunk, N, N) float64 work arrays of the EFPs


def _masked_inputs(pt: Any, eta: Any, phi: Any, mask: Any) -> tuple[np.ndarray, ...]:
    """Float64 copies with padded slots zeroed (garbage there never reaches a sum)."""
    mask = check_particle_arrays(mask, pt=pt, eta=eta, phi=phi)
    return tuple(np.where(mask, np.asarray(x, np.float64), 0.0) for x in (pt, eta, phi)) + (mask,)


def jet_kinematics(constituents: Any, mask: Any) -> dict[str, np.ndarray]:
    """Jet pT, eta, phi, mass, mass / pT and multiplicity from the summed four-momenta.

    Args:
      constituents: ``(n_jets, N, 4)`` four-momenta ``(E, px, py, pz)`` in GeV.
      mask: bool ``(n_jets, N)``.

    Returns:
      dict of ``(n_jets,)`` arrays: ``pt``, ``mass`` (GeV, ``sqrt(max(m^2, 0))``), ``eta``,
      ``phi`` (in ``(-pi, pi]``), ``m_over_pt`` (0 for a jet without pT) as float64, and
      ``multiplicity`` (number of real constituents) as int64.
    """
    constituents = np.asarray(constituents)
    mask = check_particle_arrays(mask, constituents=constituents)
    total = np.where(mask[..., None], constituents.astype(np.float64), 0.0).sum(axis=1)
    pt, eta, phi = (x[:, 0] for x in constituent_pt_eta_phi(total[:, None, :], np.ones((len(total), 1), bool)))
    mass = np.sqrt(np.maximum(total[:, 0] ** 2 - (total[:, 1:] ** 2).sum(axis=1), 0.0))
    return {
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "mass": mass,
        "m_over_pt": np.where(pt > 0, mass / np.where(pt > 0, pt, 1.0), 0.0),
        "multiplicity": mask.sum(axis=1).astype(np.int64),
    }


# fjcontrib Nsubjettiness's KT_Axes: kT, R = max_allowable_R, E-scheme, Best strategy (the default).
# Not JetDefinition(alg, R, E_scheme, Best): the binding reads that as (alg, R, extra parameter,
# scheme = Best = 1 = pt_scheme).
_KT_AXES_DEFINITION = fastjet.JetDefinition(
    fastjet.kt_algorithm, fastjet.JetDefinition.max_allowable_R, fastjet.E_scheme
)
_ONE_PASS_ACCURACY = 1e-4  # fjcontrib's default one-pass accuracy, also its distance regulator
NSUBJETTINESS_AXES = ("kt", "onepass_kt")


def _exclusive_kt_axes(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, counts: np.ndarray, max_n: int):
    """``(n_jets, max_n, max_n, 2)`` (rapidity, phi in ``(-pi, pi]``) of FastJet's exclusive kT jets:
    ``[:, N - 1, :N]`` holds the ``N`` jets of ``exclusive_jets(N)`` of each jet with more than N
    constituents, zeros elsewhere. The first ``counts`` slots of each jet are its constituents,
    clustered as massless four-vectors."""
    axes = np.zeros((len(pt), max_n, max_n, 2))
    momenta = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)], axis=-1)
    for jet in np.flatnonzero(counts > 1):  # one constituent: every tau_N is 0
        particles = [fastjet.PseudoJet(*p) for p in momenta[jet, : counts[jet]].tolist()]
        sequence = fastjet.ClusterSequence(particles, _KT_AXES_DEFINITION)
        for num_axes in range(1, min(max_n, counts[jet] - 1) + 1):
            axes[jet, num_axes - 1, :num_axes] = [(a.rap(), a.phi_std()) for a in sequence.exclusive_jets(num_axes)]
    return axes


def _squared_distances(points: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """``(n, N, k)`` squared rapidity-phi distances of points ``(n, N, 2)`` to axes ``(n, k, 2)``,
    both with phi in ``(-pi, pi]`` (``pi - ||d_phi| - pi|`` is then ``|d_phi|`` wrapped)."""
    d_rap = points[:, :, None, 0] - axes[:, None, :, 0]
    d_phi = np.pi - np.abs(np.abs(points[:, :, None, 1] - axes[:, None, :, 1]) - np.pi)
    return d_rap * d_rap + d_phi * d_phi


def _tau_numerator(pt: np.ndarray, points: np.ndarray, axes: np.ndarray, beta: float) -> np.ndarray:
    """``sum_i pT_i min_k dR_ik^beta`` per jet, ``(n,)``."""
    squared = _squared_distances(points, axes).min(axis=2)
    return (pt * (np.sqrt(squared) if beta == 1 else squared ** (beta / 2))).sum(axis=1)


def _one_pass_tau_numerator(pt, points, axes, beta: float, max_iterations: int) -> np.ndarray:
    """Tau numerators ``(n,)`` after fjcontrib's one-pass minimisation from ``axes`` ``(n, k, 2)``.

    As fjcontrib's ``DefaultMeasure::UpdateAxes`` (pT-R measure): assign each constituent to its
    nearest axis, then move each axis to ``sum_i w_i x_i / sum_i w_i`` over its constituents, with
    ``w_i = pT_i (a^2 + dR_ik^2)^(beta/2 - 1)`` (``a = 1e-4`` keeps it finite on a constituent; a
    Weiszfeld step for beta = 1, the centroid for beta = 2) and phi unwrapped around the axis; an
    axis without constituents stays. A jet stops once its axes moved by less than 1e-4 on average,
    or after ``max_iterations``. Unlike that update, but like fjcontrib's generic
    ``MeasureDefinition::get_one_pass_axes``, the smallest tau seen (the start's included) is
    returned, so the result never exceeds the starting axes' (the update alone can, slightly,
    through the regulator ``a`` or for beta > 2). Points and axes have phi in ``(-pi, pi]``.
    """
    best = _tau_numerator(pt, points, axes, beta)
    axes = axes.copy()
    active = np.flatnonzero(pt.sum(axis=1) > 0)
    for _ in range(max_iterations):
        if not active.size:
            break
        p, x, old = pt[active], points[active], axes[active]
        squared = _squared_distances(x, old)
        member = np.argmin(squared, axis=2)[:, :, None] == np.arange(old.shape[1])
        weight = p[:, :, None] * member * (_ONE_PASS_ACCURACY**2 + squared) ** (beta / 2 - 1)
        total = weight.sum(axis=1)
        offset = x[:, :, None, :] - old[:, None, :, :]  # (n, N, k, 2) constituent - axis
        d_phi = offset[..., 1]  # in (-2 pi, 2 pi): wrap it once
        d_phi -= 2 * np.pi * ((d_phi > np.pi).astype(float) - (d_phi <= -np.pi))
        step = np.einsum("nik,nikd->nkd", weight, offset) / np.where(total > 0, total, 1.0)[..., None]
        new = np.stack([old[..., 0] + step[..., 0], wrap_phi(old[..., 1] + step[..., 1])], axis=-1)
        axes[active] = new
        best[active] = np.minimum(best[active], _tau_numerator(p, x, new, beta))
        active = active[np.hypot(step[..., 0], step[..., 1]).mean(axis=1) > _ONE_PASS_ACCURACY]
    return best


def nsubjettiness(
    pt: Any,
    eta: Any,
    phi: Any,
    mask: Any,
    *,
    R: float = 0.8,
    beta: float = 1.0,
    max_n: int = 3,
    axes: str = "kt",
    num_iterations: int = 1000,
) -> np.ndarray:
    """N-subjettiness ``tau_N = sum_i pT_i min_k dR_ik^beta / sum_i pT_i R^beta`` for N = 1..max_n.

    This is fjcontrib's ``Nsubjettiness(N, axes, NormalizedMeasure(beta, R))``: constituents are
    massless (their rapidity is ``eta``) and ``dR_ik`` is the rapidity-phi distance, ``d_phi``
    wrapped, from constituent i to axis k, whose rapidity (not pseudorapidity) is used.

    Axes:
      ``"kt"`` (default, fjcontrib's ``KT_Axes``): the N exclusive jets of FastJet's kT algorithm
      (``R = JetDefinition.max_allowable_R``, E-scheme) run on the jet's constituents.
      ``"onepass_kt"`` (fjcontrib's ``OnePass_KT_Axes``): those axes refined by iterated
      nearest-axis assignment and reweighted-mean updates (Lloyd / Weiszfeld steps, at most
      ``num_iterations``); the result is never above the ``"kt"`` one.

    ``tau_N`` is not forced below ``tau_(N-1)``, as in fjcontrib: with kT axes, tau_2 > tau_1 in
    ~13 % of Pythia QCD jets (R = 0.8) and tau_3 > tau_2 in ~6 %. A jet with at most N constituents
    has ``tau_N = 0``, a jet without pT all zeros. Jets are clustered one by one with FastJet: ~1.5 s
    for 3000 jets of ~70 constituents, ~5 s with ``"onepass_kt"``.

    Args:
      pt: ``(n_jets, N)`` constituent pT (GeV).
      eta, phi: ``(n_jets, N)`` constituent angles (absolute or relative to the jet axis).
      mask: bool ``(n_jets, N)``.
      R: the jet radius in the normalisation (use 1.0 for the EBM's anti-kT R = 1.0 jets).
      beta: angular exponent.
      max_n: largest N.
      axes: ``"kt"`` or ``"onepass_kt"``.
      num_iterations: most one-pass updates per jet (fjcontrib's default, 1000); ``"onepass_kt"`` only.

    Returns:
      float64 ``(n_jets, max_n)`` with columns tau_1 .. tau_max_n.
    """
    if max_n < 1 or beta <= 0 or R <= 0 or num_iterations < 0:
        raise JetInputError(
            f"need max_n >= 1, beta > 0, R > 0, num_iterations >= 0, got {max_n}, {beta}, {R}, {num_iterations}"
        )
    if axes not in NSUBJETTINESS_AXES:
        raise JetInputError(f"axes must be one of {NSUBJETTINESS_AXES}, got {axes!r}")
    pt, eta, phi, mask = _masked_inputs(pt, eta, phi, mask)
    counts = mask.sum(axis=1)
    # real constituents first (in their order), padding cut to the largest multiplicity
    order = np.argsort(~mask, axis=1, kind="stable")[:, : max(counts.max(initial=0), 1)]
    pt, eta, phi = (np.take_along_axis(x, order, axis=1) for x in (pt, eta, wrap_phi(phi)))
    all_axes = _exclusive_kt_axes(pt, eta, phi, counts, max_n)
    points = np.stack([eta, phi], axis=-1)
    norm = pt.sum(axis=1) * R**beta
    taus = np.zeros((len(pt), max_n))
    for num_axes in range(1, max_n + 1):
        jets = np.flatnonzero((counts > num_axes) & (norm > 0))
        kt_axes = all_axes[jets, num_axes - 1, :num_axes]
        if axes == "kt":
            numerator = _tau_numerator(pt[jets], points[jets], kt_axes, beta)
        else:
            numerator = _one_pass_tau_numerator(pt[jets], points[jets], kt_axes, beta, num_iterations)
        taus[jets, num_axes - 1] = numerator / norm[jets]
    return taus


def tau_ratios(taus: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(tau21, tau32) = (tau_2 / tau_1, tau_3 / tau_2)``, 0 where the denominator is 0.

    Args:
      taus: ``(n_jets, >= 3)`` from `nsubjettiness`.
    """
    taus = np.asarray(taus, np.float64)
    if taus.ndim != 2 or taus.shape[1] < 3:
        raise JetInputError(f"taus must be (n_jets, >= 3), got shape {taus.shape}")

    def ratio(numerator, denominator):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)

    return ratio(taus[:, 1], taus[:, 0]), ratio(taus[:, 2], taus[:, 1])


def _pair_sum(x: np.ndarray, y: np.ndarray, *matrices: np.ndarray) -> np.ndarray:
    """``sum_ac x_a y_c prod_m M_ac`` per jet: ``x, y (c, N)``, each matrix ``(c, N, N)`` -> ``(c,)``."""
    inner = np.einsum(",".join(["nac"] * len(matrices)) + ",nc->na", *matrices, y)
    return np.einsum("na,na->n", x, inner)


def _prime_efps(z: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The 21 connected EFPs of `EFP_D4_PRIMES`, ``(c, 21)``, from energies ``z (c, N)`` and
    angles ``theta (c, N, N)`` (already raised to beta). Trees reduce to sums over one or two
    vertices of products of ``v_w = theta^w z``; the loops (triangles, square) use
    ``P = theta diag(z) theta``."""
    t1, t2 = theta, theta * theta
    v1, v2 = np.einsum("nab,nb->na", t1, z), np.einsum("nab,nb->na", t2, z)
    v3, v4 = np.einsum("nab,nab,nb->na", t2, t1, z), np.einsum("nab,nab,nb->na", t2, t2, z)
    zv1 = z * v1
    u1 = np.einsum("nab,nb->na", t1, zv1)  # u1_a = sum_b theta_ab z_b v1_b
    loop = t1 @ (z[:, :, None] * t1)  # P_ac = sum_b theta_ab z_b theta_bc

    def vertex_sum(x):
        return x.sum(axis=-1)

    columns = [
        vertex_sum(z),
        vertex_sum(z * v1), vertex_sum(z * v2), vertex_sum(z * v3), vertex_sum(z * v4),
        vertex_sum(zv1 * v1), vertex_sum(zv1 * v2), vertex_sum(zv1 * v3), vertex_sum(z * v2 * v2),
        _pair_sum(z, z, t1, loop), _pair_sum(z, z, t2, loop),
        vertex_sum(zv1 * v1 * v1), vertex_sum(zv1 * v1 * v2),
        vertex_sum(zv1 * u1), vertex_sum(z * v2 * u1), _pair_sum(zv1, zv1, t2),
        _pair_sum(zv1, z, t1, loop), _pair_sum(z, z, loop, loop),
        vertex_sum(zv1 * v1**3), vertex_sum(zv1 * v1 * u1), vertex_sum(z * u1 * u1),
    ]  # fmt: skip
    return np.stack(columns, axis=-1)


def _energies_angles(pt, eta, phi, mask, beta: float, normed: bool):
    """Energies ``z (n, N)`` and pairwise ``theta_ij = dR_ij^beta (n, N, N)`` of real constituents."""
    pt, eta, phi, mask = _masked_inputs(pt, eta, phi, mask)
    if beta <= 0:
        raise JetInputError(f"beta must be positive, got {beta}")
    if normed:
        total = pt.sum(axis=1, keepdims=True)
        pt = pt / np.where(total > 0, total, 1.0)
    phi = wrap_phi(phi)
    d_eta = eta[:, :, None] - eta[:, None, :]
    d_phi = np.pi - np.abs(np.abs(phi[:, :, None] - phi[:, None, :]) - np.pi)  # |wrapped difference|
    squared = d_eta * d_eta + d_phi * d_phi
    if beta == 2:
        return pt, squared
    return pt, np.sqrt(squared) if beta == 1 else squared ** (beta / 2)


def _chunked_primes(pt, eta, phi, mask, beta: float, normed: bool) -> np.ndarray:
    """`_prime_efps` over chunks of jets, so the ``(chunk, N, N)`` work arrays stay bounded."""
    mask = check_particle_arrays(mask, pt=pt, eta=eta, phi=phi)
    num_jets, num_constituents = mask.shape
    chunk = max(1, _CHUNK_BYTES // (8 * 6 * max(num_constituents, 1) ** 2))
    out = np.zeros((num_jets, len(EFP_D4_PRIMES)))
    for start in range(0, num_jets, chunk):
        part = slice(start, start + chunk)
        z, theta = _energies_angles(pt[part], eta[part], phi[part], mask[part], beta, normed)
        out[part] = _prime_efps(z, theta)
    return out


def efps_d4(pt: Any, eta: Any, phi: Any, mask: Any, *, beta: float = 1.0, normed: bool = True) -> np.ndarray:
    """All 36 energy-flow polynomials with at most 4 edges (energyflow ``EFPSet('d<=4',
    measure='hadr', beta=beta, normed=normed)``), in energyflow's order (module docstring).

    ``EFP_G = sum_{i_1..i_n} z_{i_1} .. z_{i_n} prod_{(k, l) in G} theta_{i_k i_l}`` with
    ``theta_ij = (d_eta^2 + d_phi^2)^(beta / 2)``. With ``normed`` ``z_i = pT_i / sum_j pT_j``;
    otherwise ``z_i = pT_i`` as given (JetNet passes ``normed=None``, i.e. unnormalised, with
    ``pT_rel = pT / jet pT``: call with ``pt=pt_rel, normed=False`` to reproduce its numbers).

    Args:
      pt: ``(n_jets, N)`` constituent pT (or pT_rel).
      eta, phi: ``(n_jets, N)`` constituent angles.
      mask: bool ``(n_jets, N)``.

    Returns:
      float64 ``(n_jets, 36)``; jets are processed in chunks to bound memory.
    """
    primes = _chunked_primes(np.asarray(pt), np.asarray(eta), np.asarray(phi), mask, beta, normed)
    composites = [np.prod(primes[:, list(factors)], axis=1) for factors in EFP_D4_COMPOSITES]
    return np.concatenate([primes, np.stack(composites, axis=1)], axis=1)


def efps_w1(pt: Any, eta: Any, phi: Any, mask: Any, *, beta: float = 1.0, normed: bool = True) -> np.ndarray:
    """The five connected EFPs with 4 vertices and 4 edges (JetNet's W1EFP set), float64 ``(n_jets, 5)``.

    Same conventions as `efps_d4`, of which these are columns `EFP_W1_COLUMNS`.
    """
    primes = _chunked_primes(np.asarray(pt), np.asarray(eta), np.asarray(phi), mask, beta, normed)
    return primes[:, list(EFP_W1_COLUMNS)]
