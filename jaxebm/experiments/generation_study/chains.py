"""The study's chains: one compiled program per sampler (ULA, MALA) whose setting is an argument, run in
equal jitted segments over batches of jets, observed at every requested length and continued later."""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxebm.experiments.generation_study.loading import LoadedRun, noise_starts
from jaxebm.experiments.generation_study.settings import STUDY_SEED, Family
from jaxebm.models.common import energy_fn
from jaxebm.sampling import chain, langevin, mala
from jaxebm.sampling.langevin import LangevinConfig


def _step_size(settings):
    """``t -> step * factor ** (t // every) / (1 + rate t)`` of the (traced) settings."""
    def step_size(t):
        t = jnp.asarray(t, jnp.int32)
        decays = (t // settings["every"]).astype(jnp.float32)
        return settings["step"] * settings["factor"] ** decays / (1.0 + settings["rate"] * t.astype(jnp.float32))
    return step_size


def _config(settings) -> LangevinConfig:
    """`LangevinConfig` whose step and noise read the (traced) settings; T enters through the energy."""
    step_size = _step_size(settings)

    def noise_scale(t):
        return jnp.where(settings["tied"], jnp.sqrt(2.0 * step_size(t)), settings["noise"])

    return LangevinConfig(step_size=step_size, noise_scale=noise_scale)


def _tempered_energy(model, params, mask, temperature):
    """``E(x) / T``: exp(-E/T) as a T = 1 target, so one compiled chain serves every temperature (the
    drift ``step * grad E / T`` and MALA's acceptance are exactly those of a config with temperature T)."""
    energy = energy_fn(model, params, mask)
    return lambda x: energy(x) / temperature


class ChainPrograms:
    """Compiled chain programs, one per sampler, shared by every family: the setting (step schedule,
    noise, temperature) is an argument, so changing it or the chain length never recompiles.

    ``init(sampler)(params, x0, mask, settings) -> state`` and ``segment(sampler)(key, state, params,
    mask, settings) -> (state, (mean acceptance over the segment (B,), energy E at its end (B,)))``
    for ``num_steps`` steps; the state (with its step count, which the schedules read) carries over.
    """

    def __init__(self, run: LoadedRun, num_steps: int):
        self.run, self.num_steps = run, num_steps
        self._compiled: dict[tuple[str, str], Callable] = {}
        self.compile_seconds: dict[str, float] = {}  # per sampler, including the warm-up call

    def _functions(self, sampler: str):
        kernel, model = (langevin if sampler == "ula" else mala), self.run.model
        frozen = self.run.pipeline.padding_mode == "mask"

        def init(params, x0, mask, settings):
            return kernel.init(x0, _tempered_energy(model, params, mask, settings["temperature"]))

        def segment(key, state, params, mask, settings):
            energy = _tempered_energy(model, params, mask, settings["temperature"])
            config = _config(settings)

            def step_fn(k, s):
                return kernel.step(k, s, energy, config, frozen_mask=~mask if frozen else None)

            state, info = chain.run(step_fn, key, state, self.num_steps, trace=True)
            return state, (jnp.mean(info.acceptance_rate, axis=0), info.energy[-1] * settings["temperature"])

        return init, segment

    def get(self, sampler: str, key, params, x0, mask, settings) -> tuple[Callable, Callable]:
        """(init, segment) compiled for these argument shapes (ahead of time, with one untimed warm-up call)."""
        if (sampler, "segment") not in self._compiled:
            tic = time.perf_counter()
            init, segment = (jax.jit(f) for f in self._functions(sampler))
            init_c = init.lower(params, x0, mask, settings).compile()
            state = init_c(params, x0, mask, settings)
            segment_c = segment.lower(key, state, params, mask, settings).compile()
            jax.block_until_ready(segment_c(key, state, params, mask, settings))  # allocations, thread pools
            self._compiled[(sampler, "init")], self._compiled[(sampler, "segment")] = init_c, segment_c
            self.compile_seconds[sampler] = time.perf_counter() - tic
        return self._compiled[(sampler, "init")], self._compiled[(sampler, "segment")]


def family_key(family: Family) -> jax.Array:
    """The fixed chain key of a setting (from its name, so it does not depend on the grid's order)."""
    return jax.random.fold_in(jax.random.key(STUDY_SEED), zlib.crc32(family.name.encode()) & 0x7FFFFFFF)


@dataclass
class ChainProgress:
    """Where a family's chains stand, so they can be continued: per batch state, steps done, cumulative
    wall seconds, mean acceptance of each segment and mean energy at each segment's end."""

    states: list
    steps: int = 0
    seconds: float = 0.0
    acceptance: list = field(default_factory=list)
    energy: list = field(default_factory=list)


def _padded(x0: np.ndarray, mask: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``x0 (n, N, F)`` and ``mask (n, N)`` padded with copies of the first jet to whole batches."""
    pad = -len(x0) % batch_size
    return (np.concatenate([x0, np.repeat(x0[:1], pad, axis=0)]),
            np.concatenate([mask, np.repeat(mask[:1], pad, axis=0)]))


def _start(init_c: Callable, params, x0: np.ndarray, mask: np.ndarray, settings: dict, batch_size: int,
           charge: float) -> tuple[ChainProgress, list[np.ndarray]]:
    """Initial states per batch (timed, ``charge``: the share of real jets) and their positions."""
    progress, positions = ChainProgress(states=[]), []
    for start in range(0, len(x0), batch_size):
        xb, mb = jnp.asarray(x0[start:start + batch_size]), jnp.asarray(mask[start:start + batch_size])
        tic = time.perf_counter()
        state = jax.block_until_ready(init_c(params, xb, mb, settings))
        progress.seconds += (time.perf_counter() - tic) * charge
        progress.states.append(state)
        positions.append(np.asarray(state.position))
    return progress, positions


@dataclass
class _Segments:
    """What segments ``first..last`` of every batch produced, indexed by segment: wall seconds (charged to
    the real jets), per-batch acceptance and end energy (B,), and positions at the snapshot segments."""

    seconds: np.ndarray
    accepts: list
    energies: list
    positions: dict[int, list]


def _advance(segment_c: Callable, key, progress: ChainProgress, params, mask: np.ndarray, settings: dict,
             batch_size: int, segments: range, snapshot_steps: set[int], num_steps: int, charge: float,
             bar) -> _Segments:
    """Run ``segments`` of every batch from ``progress.states`` (updated in place); segment ``s`` of batch
    ``b`` uses the key ``fold_in(fold_in(key, b), s)``."""
    out = _Segments(np.zeros(segments.stop), [[] for _ in range(segments.stop)],
                    [[] for _ in range(segments.stop)], {steps: [] for steps in snapshot_steps})
    for b, start in enumerate(range(0, len(mask), batch_size)):
        mb = jnp.asarray(mask[start:start + batch_size])
        state = progress.states[b]
        for s in segments:
            tic = time.perf_counter()
            state, (accept, energy) = segment_c(jax.random.fold_in(jax.random.fold_in(key, b), s), state, params,
                                                mb, settings)
            jax.block_until_ready(state)
            out.seconds[s] += (time.perf_counter() - tic) * charge
            out.accepts[s].append(np.asarray(accept))
            out.energies[s].append(np.asarray(energy))
            if s * num_steps in out.positions:
                out.positions[s * num_steps].append(np.asarray(state.position))
            bar.update()
        progress.states[b] = state
    return out


def _snapshots(done: _Segments, progress: ChainProgress, segments: range, num_steps: int, mask: np.ndarray,
               num_jets: int) -> dict[int, dict]:
    """Fold the segments into ``progress`` (seconds, acceptance, energy) and the snapshot dicts of `run_family`."""
    out = {}
    for s in segments:
        progress.seconds += done.seconds[s]
        progress.acceptance.append(float(np.concatenate(done.accepts[s])[:num_jets].mean()))
        progress.energy.append(float(np.concatenate(done.energies[s])[:num_jets].mean()))
        if s * num_steps in done.positions:
            out[s * num_steps] = {"x": np.concatenate(done.positions[s * num_steps])[:num_jets],
                                  "mask": mask[:num_jets], "seconds": progress.seconds,
                                  "acceptance": float(np.mean(progress.acceptance)), "energy": progress.energy[-1]}
    return out


def run_family(run: LoadedRun, family: Family, x0: np.ndarray, mask: np.ndarray, batch_size: int,
               programs: ChainPrograms, *, lengths: tuple[int, ...] | None = None,
               resume: ChainProgress | None = None, progress: bool = True) -> tuple[dict[int, dict], ChainProgress]:
    """Run the family's chains from ``x0 (n, N, F)`` with model mask ``mask (n, N)`` to ``max(lengths)``
    (default ``family.lengths``), or continue them from ``resume``.

    Returns ``{num_steps: {"x", "mask", "seconds", "acceptance", "energy"}}`` for every length (and 0
    when starting): positions ``(n, N, F)``, cumulative wall seconds for all jets (compilation and the
    padding of the last batch excluded), mean MALA acceptance over the steps so far, mean energy at
    that step; and the `ChainProgress` to continue from.
    """
    lengths = tuple(family.lengths if lengths is None else lengths)
    seg = programs.num_steps
    if any(length % seg for length in lengths):
        raise ValueError(f"{family.name}: lengths {lengths} must be multiples of the segment {seg}")
    num_jets = len(x0)
    x0, mask = _padded(x0, mask, batch_size)
    key, params, settings = family_key(family), run.params, family.settings()
    init_c, segment_c = programs.get(family.sampler, key, params, jnp.asarray(x0[:batch_size]),
                                     jnp.asarray(mask[:batch_size]), settings)
    charge = num_jets / len(x0)  # padding chains are not charged to the real jets
    out = {}
    if resume is None:
        resume, positions = _start(init_c, params, x0, mask, settings, batch_size, charge)
        out[0] = {"x": np.concatenate(positions)[:num_jets], "mask": mask[:num_jets], "seconds": resume.seconds,
                  "acceptance": float("nan"), "energy": float("nan")}
    segments = range(resume.steps // seg + 1, max(lengths) // seg + 1)
    with tqdm(total=len(x0) // batch_size * len(segments), desc=family.name, unit="seg", disable=not progress,
              leave=False) as bar:
        done = _advance(segment_c, key, resume, params, mask, settings, batch_size, segments, set(lengths), seg,
                        charge, bar)
    out |= _snapshots(done, resume, segments, seg, mask, num_jets)
    resume.steps = max(resume.steps, (segments.stop - 1) * seg)
    return out, resume


def time_energy_gradient(run: LoadedRun, batch_size: int, repeats: int = 7) -> tuple[float, float]:
    """Seconds per jet of one batched energy+gradient evaluation, the best and the median of ``repeats``
    calls: the cost unit of every chain; the best is less exposed to the machine's load than a chain's timing."""
    x0, mask = noise_starts(run, batch_size)
    efn = lambda params, x, m: energy_fn(run.model, params, m)(x)  # noqa: E731
    grad = jax.jit(jax.grad(lambda p, x, m: jnp.sum(efn(p, x, m)), argnums=1)).lower(run.params, x0, mask).compile()
    jax.block_until_ready(grad(run.params, x0, mask))
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(grad(run.params, x0, mask))
        times.append(time.perf_counter() - tic)
    return min(times) / batch_size, float(np.median(times)) / batch_size
