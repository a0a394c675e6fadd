"""``ebm_flow_start``: the benchmark EBM's generation chain started from a fast proposal's jets (issue 25, item 4).

The proposal is another row of the same seed (default ``nf``, the RealNVP on the 3 x 30 momenta; also
``convae_nf`` or ``convae``): its jets are mapped into the EBM's coordinates (`ebm_coordinates`), standardised,
moved by a short annealed Langevin chain of K steps (`chain_config`: the EBM's generation schedule compressed
to K steps) and mapped back to four-vectors (`constituents_from_ebm`). K gradient evaluations per jet instead
of the 200-step chain from noise; K = 0 returns the proposal's jets (up to float32 round-off).

    ebm = EBMGenerator(model, params, standardizer, noise_fn, generation, log_pt_shift)
    sampler = FlowStartSampler(samplers["nf"], ebm, num_steps=50)
    p4, mask = sampler(jax.random.key(0), 900)         # (900, 30, 4) four-vectors, (900, 30) mask
    by_steps = sampler.sweep(jax.random.key(0), 900, (0, 10, 50))   # the same proposal jets for every K
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import flax.linen as nn
import jax
import numpy as np

from jaxebm.config import ConfigError
from jaxebm.data.io import JetSample, massless_four_vectors
from jaxebm.data.preprocess import Standardizer
from jaxebm.inference import GenerationConfig, generate, generate_from
from jaxebm.metrics.jetnet import jetnet_features

__all__ = ["PROPOSALS", "EBMGenerator", "FlowStartConfig", "FlowStartSampler", "chain_config", "check_flow_start",
           "constituents_from_ebm", "ebm_coordinates", "grad_evals_per_jet", "stored_log_pt_fraction",
           "sweep_proposals"]

PROPOSALS = ("nf", "convae_nf", "convae")
NO_GRADIENT_ROWS = ("convae", "convae_nf", "nf")


@dataclass(frozen=True)
class FlowStartConfig:
    """The ``ebm_flow_start`` row.

    proposal: the row (trained in the same seed) whose jets start the chains, one of `PROPOSALS`.
    num_steps: K, Langevin steps = gradient evaluations per jet of the row (0: the proposal's jets).
    sweep: the K of the trade-off curve (quality against gradient evaluations per jet), run from every
      proposal row the benchmark trains (`sweep_proposals`).
    """

    proposal: str = "nf"
    num_steps: int = 50
    sweep: tuple[int, ...] = (0, 10, 25, 50, 100)

    def __post_init__(self):
        if self.proposal not in PROPOSALS:
            raise ValueError(f"ebm_flow_start.proposal must be one of {PROPOSALS}, got {self.proposal!r}")
        if self.num_steps < 0 or not self.sweep or min(self.sweep) < 0 or len(set(self.sweep)) != len(self.sweep):
            raise ValueError(f"ebm_flow_start needs num_steps >= 0 and distinct sweep steps >= 0, got "
                             f"{self.num_steps}, {list(self.sweep)}")


def check_flow_start(models: tuple[str, ...], config: FlowStartConfig) -> None:
    """`ConfigError` when ``ebm_flow_start`` is asked for without the rows it reuses (``ebm`` and the proposal)."""
    if "ebm_flow_start" not in models:
        return
    for needed, key in (("ebm", "models"), (config.proposal, "ebm_flow_start.proposal")):
        if needed not in models:
            raise ConfigError(f"{key}: the ebm_flow_start row reuses the seed's {needed!r} row; add it to models")


def grad_evals_per_jet(models: tuple[str, ...], generation_steps: int, flow_start_steps: int) -> dict[str, int]:
    """Energy-gradient evaluations per generated jet of each row: EBM = its chain length, flow start = K,
    the ConVAE / flow rows 0 (the truth row has none and is left out)."""
    evals = {"ebm": generation_steps, "ebm_flow_start": flow_start_steps} | dict.fromkeys(NO_GRADIENT_ROWS, 0)
    return {name: evals[name] for name in models if name in evals}


def chain_config(generation: GenerationConfig, num_steps: int) -> GenerationConfig:
    """``generation``'s schedule compressed to ``num_steps`` (>= 1) steps: the same first step size, decay factor,
    noise and temperature, decaying every ``round(decay_every * num_steps / generation.num_steps)`` (>= 1) steps,
    so a short chain passes through the same step sizes as the long one."""
    every = max(1, round(generation.decay_every * num_steps / generation.num_steps))
    return dataclasses.replace(generation, num_steps=num_steps, decay_every=every)


def stored_log_pt_fraction(sample: JetSample) -> float:
    """Mean over jets of log(pT sum of the stored particles / jet pT) (``jets[:, 0]``): the EBM's training
    log pT_rel are relative to the whole jet, a proposal's jets only know their stored particles."""
    p4 = np.where(sample.mask[..., None], sample.constituents, 0.0).astype(np.float64)
    stored = np.hypot(p4[..., 1], p4[..., 2]).sum(axis=1)
    return float(np.mean(np.log(stored / sample.jets[:, 0])))


def ebm_coordinates(p4: np.ndarray, mask: np.ndarray, log_pt_shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Four-vectors ``(n, P, 4)`` (GeV or any common scale) -> the EBM's raw ``(eta_rel, phi_rel, log pT_rel +
    log_pt_shift)`` ``(n, P, 3)`` float32 relative to the sum of the masked particles, zero on padding, and the
    mask ``(n, P)``; slots with non-finite values or zero pT become padding, an empty jet gets one particle on
    its axis."""
    p4, mask = np.asarray(p4, np.float64), np.asarray(mask, bool)
    mask = mask & np.isfinite(p4).all(axis=-1)
    p4 = np.where(mask[..., None], p4, 0.0)
    mask &= np.hypot(p4[..., 1], p4[..., 2]) > 0
    empty = ~mask.any(axis=1)
    mask[empty, 0] = True
    p4[empty, 0] = (1.0, 1.0, 0.0, 0.0)
    jets = jetnet_features(p4, mask)
    eta, phi, pt = np.moveaxis(jets.particles, -1, 0)
    features = np.stack([eta, phi, np.log(np.where(mask, pt, 1.0)) + log_pt_shift], axis=-1)
    return np.where(mask[..., None], features, 0.0).astype(np.float32), mask


def constituents_from_ebm(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The EBM's raw ``(eta_rel, phi_rel, log pT_rel)`` ``(n, P, 3)`` -> massless four-vectors ``(n, P, 4)``
    float64 in units of the jet pT (log pT clipped to [-30, 5]), zero on padding."""
    eta, phi, log_pt = np.moveaxis(np.asarray(features, np.float64), -1, 0)
    p4 = massless_four_vectors(np.exp(np.clip(log_pt, -30.0, 5.0)), eta, phi)
    return np.where(np.asarray(mask, bool)[..., None], p4, 0.0)


@dataclass(frozen=True, eq=False)
class EBMGenerator:
    """A trained benchmark EBM as a jet sampler, from noise (``__call__``) or from given jets (`refine`).

    model, params: the energy and its (EMA) parameters. standardizer: raw -> model coordinates.
    noise_fn: chain starts ``(x, mask)`` from noise. generation: the chain from noise.
    log_pt_shift: added to given jets' log pT_rel (`stored_log_pt_fraction` of the training jets).
    """

    model: nn.Module
    params: object
    standardizer: Standardizer
    noise_fn: Callable
    generation: GenerationConfig
    log_pt_shift: float = 0.0

    def __call__(self, key, num_jets: int) -> tuple[np.ndarray, np.ndarray]:
        """``num_jets`` jets of ``generation.num_steps`` steps from noise: four-vectors ``(n, P, 4)``, mask."""
        x, mask = generate(key, self.model, self.params, self.noise_fn, self.generation, num_jets, progress=False)
        return constituents_from_ebm(self.standardizer.invert(x, mask), mask), mask

    def refine(self, key, p4: np.ndarray, mask: np.ndarray, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """``num_steps`` steps of `chain_config` from the jets ``p4 (n, P, 4)``, ``mask (n, P)``; four-vectors
        ``(n, P, 4)`` in the EBM's units (as ``__call__``) and the mask (non-finite or zero-pT slots turned into
        padding)."""
        raw, mask = ebm_coordinates(p4, mask, self.log_pt_shift)
        x = np.asarray(self.standardizer.apply(raw, mask), np.float32)
        if num_steps > 0:
            x = generate_from(key, self.model, self.params, x, mask, chain_config(self.generation, num_steps))
        return constituents_from_ebm(self.standardizer.invert(x, mask), mask), mask


@dataclass(frozen=True, eq=False)
class FlowStartSampler:
    """``sample_fn(key, n)`` of the ``ebm_flow_start`` row: ``proposal_fn``'s jets refined by ``num_steps``
    steps of ``ebm``. Keys: the proposal draws from ``fold_in(key, 0)``, the chains from ``fold_in(key, 1)``."""

    proposal_fn: Callable
    ebm: EBMGenerator
    num_steps: int

    def __call__(self, key, num_jets: int) -> tuple[np.ndarray, np.ndarray]:
        return self.sweep(key, num_jets, (self.num_steps,))[self.num_steps]

    def sweep(self, key, num_jets: int, steps: tuple[int, ...]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{K: (four-vectors, mask)}``: the same proposal jets and chain key for every K of ``steps``."""
        p4, mask = self.proposal_fn(jax.random.fold_in(key, 0), num_jets)
        chain_key = jax.random.fold_in(key, 1)
        return {k: self.ebm.refine(chain_key, p4, mask, k) for k in steps}


def sweep_proposals(samplers: dict[str, Callable], key, num_jets: int, steps: tuple[int, ...]
                    ) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """``{proposal: {K: (four-vectors, mask)}}``: `FlowStartSampler.sweep` from each `PROPOSALS` row in
    ``samplers`` (a seed's samplers, ``"ebm"`` an `EBMGenerator`), all with ``key``."""
    return {name: FlowStartSampler(samplers[name], samplers["ebm"], 0).sweep(key, num_jets, steps)
            for name in PROPOSALS if name in samplers}
