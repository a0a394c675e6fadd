"""Jet observables: kinematics, N-subjettiness and energy-flow polynomials (EFPs).

Everything is vectorised over jets (numpy, float64 results); padded slots are identified by the
mask and never enter a result, whatever values they hold. Angular distances use
``dR_ij = sqrt(d_eta^2 + d_phi^2)`` with ``d_phi`` wrapped to ``(-pi, pi]``; for massless
constituents eta is the rapidity.

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

import numpy as np

from jaxebm.data.preprocess import (
    JetInputError,
    check_particle_arrays,
    constituent_pt_eta_phi,
    wrap_phi,
)

__all__ = [
    "EFP_D4_COMPOSITES",
    "EFP_D4_PRIMES",
    "EFP_W1_COLUMNS",
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


def _distances(points: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """``(n, N, k)`` Euclidean distances between points ``(n, N, 2)`` and axes ``(n, k, 2)``."""
    return np.sqrt(((points[:, :, None, :] - axes[:, None, :, :]) ** 2).sum(axis=-1))


def _seed_axes(weights: np.ndarray, points: np.ndarray, num_axes: int, beta: float) -> np.ndarray:
    """Greedy seeds ``(n, num_axes, 2)``: the hardest constituent, then repeatedly the constituent
    with the largest contribution ``pT_i * min_k dR_ik^beta`` to the current tau."""
    jets = np.arange(len(points))
    axes = points[jets, np.argmax(weights, axis=1)][:, None, :]
    for _ in range(1, num_axes):
        contribution = weights * _distances(points, axes).min(axis=2) ** beta
        axes = np.concatenate([axes, points[jets, np.argmax(contribution, axis=1)][:, None, :]], axis=1)
    return axes


def _minimise_axes(weights: np.ndarray, points: np.ndarray, axes: np.ndarray, beta: float, num_iterations: int):
    """Alternate assignment to the nearest axis and a reweighted (Weiszfeld) update of each axis:
    ``axis_k = sum_i w_i x_i / sum_i w_i`` over its constituents with ``w_i = pT_i dR_ik^(beta-2)``
    (the centroid for beta = 2, the geometric-median step for beta = 1). The first round uses the
    plain pT-weighted centroid, which moves axes off the seed constituents (a Weiszfeld step from a
    point on a constituent would stay there). Empty axes stay put."""
    num_axes = axes.shape[1]
    for iteration in range(num_iterations):
        distances = _distances(points, axes)
        nearest = np.argmin(distances, axis=2)
        member = nearest[:, :, None] == np.arange(num_axes)
        exponent = 0.0 if iteration == 0 else beta - 2
        step_weight = weights[:, :, None] * np.maximum(distances, 1e-12) ** exponent * member
        total = step_weight.sum(axis=1)
        moved = np.einsum("nik,nid->nkd", step_weight, points) / np.where(total > 0, total, 1.0)[..., None]
        axes = np.where((total > 0)[..., None], moved, axes)
    return axes


def nsubjettiness(
    pt: Any,
    eta: Any,
    phi: Any,
    mask: Any,
    *,
    R: float = 0.8,
    beta: float = 1.0,
    max_n: int = 3,
    num_iterations: int = 10,
) -> np.ndarray:
    """N-subjettiness ``tau_N = sum_i pT_i min_k dR_ik^beta / sum_i pT_i R^beta`` for N = 1..max_n.

    Axes ("one-pass minimised axes", a numpy stand-in for exclusive-kT axes plus minimisation):
    greedy seeds (the hardest constituent, then the constituent contributing most to the current
    tau), refined by ``num_iterations`` rounds of nearest-axis assignment and axis update (a
    pT-weighted centroid first, then reweighted Weiszfeld steps that do not increase tau). Since
    N - 1 axes plus a duplicate are also N axes, ``tau_N`` is capped at ``tau_(N-1)``, so
    ``tau_N <= tau_(N-1)`` always. A jet of exactly N pencil-like prongs gets ``tau_N = 0``, and a
    jet with at most N constituents ``tau_N = 0``. Like any local minimisation it can end in a
    local minimum: on synthetic 1-3 prong jets with soft wide-angle spray the values were 6-11 %
    below those from exclusive-kT axes on average, and more than 1 % above them in ~5 % of jets.

    Args:
      pt: ``(n_jets, N)`` constituent pT (GeV).
      eta, phi: ``(n_jets, N)`` constituent angles (absolute or relative to the jet axis).
      mask: bool ``(n_jets, N)``.
      R: the jet radius in the normalisation (use 1.0 for the EBM's anti-kT R = 1.0 jets).
      beta: angular exponent.
      max_n: largest N.
      num_iterations: axis refinement rounds.

    Returns:
      float64 ``(n_jets, max_n)`` with columns tau_1 .. tau_max_n; zero for jets without pT.
    """
    if max_n < 1 or beta <= 0 or R <= 0:
        raise JetInputError(f"need max_n >= 1, beta > 0 and R > 0, got {max_n}, {beta}, {R}")
    pt, eta, phi, mask = _masked_inputs(pt, eta, phi, mask)
    jets = np.arange(len(pt))
    hardest = np.argmax(pt, axis=1)
    phi = np.where(mask, wrap_phi(phi - phi[jets, hardest][:, None]), 0.0)  # no wrap inside a jet
    points = np.stack([eta, phi], axis=-1)
    norm = pt.sum(axis=1) * R**beta
    taus = []
    for num_axes in range(1, max_n + 1):
        axes = _minimise_axes(pt, points, _seed_axes(pt, points, num_axes, beta), beta, num_iterations)
        taus.append((pt * _distances(points, axes).min(axis=2) ** beta).sum(axis=1))
    taus = np.minimum.accumulate(np.stack(taus, axis=1), axis=1)
    return taus / np.where(norm > 0, norm, 1.0)[:, None]


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
