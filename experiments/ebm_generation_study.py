"""Generation quality per CPU second of a trained jet EBM: samplers, schedules, noise, starts, temperature.

Loads one finished seed run directory of `experiments.ebm_jets` (config.json, pipeline.json, the best
checkpoint's EMA parameters and its replay buffer; nothing is retrained) and runs chains of many
settings, scoring each against the test QCD jets passed through `ConstituentPipeline.jets_as_model_sees`
(the four-vector path of the generated jets):

- samplers: ULA (`jaxebm.sampling.langevin`, the paper's) and MALA (`jaxebm.sampling.mala`), both with
  the paper's decoupled noise (MALA then rejects almost every move) and with tied noise sqrt(2 step);
- step schedules (the paper's 0.1 x 0.8 every 40 steps, constant 0.1, others), noise 0 / 0.001 / 0.005,
  temperature, chain lengths;
- chain starts: `noise_fn` (the paper's, 0 steps = ``results.json``'s ``noise_init`` when ``--num-jets``
  equals the run's ``num_generated_jets``: the same key and jets) or the checkpoint's replay buffer
  (persistent chains of training).

Each *family* (one sampler setting) runs one chain per jet to its longest length in equal jitted
segments (compiled once, ahead of the clock) and is scored at every requested length, so a family's
lengths are the same chains observed at different times (the schedules depend on the step index
only, so a snapshot at L steps is a chain of length L). Cost per jet: energy-gradient evaluations
(ULA: L; MALA: L + 1, the start's gradient) and the measured wall time per jet (compilation
excluded, the machine's load recorded).

Quality per setting: textbook JSD (fixed ranges, `jaxebm.evaluation`) and W1 of jet pT, mass, M/pT,
the selection distance (sum of W1 / std(real), the checkpoint criterion), W1 of the constituent
features (log pT, eta_rel, phi_rel) over the slots the model sees, the fractions of jets with
pT > 800 GeV (overflow of the JSD range) and < 400 GeV (underflow), and tail diagnostics.

    python -m experiments.ebm_generation_study runs/ebm_jets/cpu/seed_0 --out experiments/results/generation_study
    python -m experiments.ebm_generation_study /tmp/smoke/seed_0 --out /tmp/gs --quick

Outputs under ``--out``: generation_study.json, generation_study.md, quality_vs_evals.png,
quality_vs_time.png, observables_*.png, tails.png, per_jet.npz (written atomically).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

try:  # the experiment's home since the runner refactor
    from jaxebm.experiments.ebm import BEST_METRIC, ExperimentConfig, data_paths
except ImportError:  # the layout the existing run directories were made with
    from jaxebm.experiments.ebm import BEST_METRIC, ExperimentConfig, data_paths
from jaxebm.config import from_dict, to_dict
from jaxebm.data.io import read_jets
from jaxebm.data.pipeline import ConstituentPipeline
from jaxebm.data.preprocess import features_to_four_vectors
from jaxebm.evaluation import JSD_RANGES, generation_quality, jet_observables, selection_distance
from jaxebm.metrics import wasserstein_1d
from jaxebm.models.common import energy_fn
from jaxebm.models.transformer import TransformerEnergy
from jaxebm.plots import plot_observable_histograms
from jaxebm.runs.records import atomic_write_text
from jaxebm.sampling import chain, langevin, mala
from jaxebm.sampling.langevin import LangevinConfig
from jaxebm.sampling.schedules import InverseTime, StepDecay
from jaxebm.train.cd import make_noise_fn
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.state import create_train_state

PT_OVERFLOW, PT_UNDERFLOW = JSD_RANGES["pt"][1], JSD_RANGES["pt"][0]  # 800, 400 GeV
FEATURES = ("log_pt", "eta", "phi")
HARD_LOG_PT = math.log(100.0)  # a "hard" slot: constituent pT > 100 GeV
MAIN_METRIC = "distance"
PAPER_FAMILY = "ula_paper"
STUDY_SEED = 2024


# ----------------------------------------------------------------------------------------------------------------------
# The settings
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    """One sampler setting, run once per jet to ``max(lengths)`` steps and scored at each length.

    sampler: "ula" or "mala". step: float (constant), `StepDecay` or `InverseTime`. noise: float, or
    None for tied ``sqrt(2 * step)``. start: "noise" (`noise_fn`) or "buffer" (the checkpoint's replay
    buffer). floor: the length kept when the time budget is short (while it fits at all; default the
    shortest). extra: longer lengths the same chains are continued to at the end if time is left.
    """

    name: str
    description: str
    sampler: str = "ula"
    step: Any = 0.1
    noise: float | None = 0.001
    temperature: float = 1.0
    start: str = "noise"
    lengths: tuple[int, ...] = (25, 50, 100, 200)
    floor: int | None = None
    extra: tuple[int, ...] = ()

    def __post_init__(self):
        if self.sampler not in ("ula", "mala") or self.start not in ("noise", "buffer"):
            raise ValueError(f"bad family {self}")
        if not self.lengths or min(self.lengths) < 1 or (self.extra and min(self.extra) <= max(self.lengths)):
            raise ValueError(f"family {self.name}: lengths must be positive and extra longer, got {self}")
        if not isinstance(self.step, (float, StepDecay, InverseTime)):
            raise ValueError(f"family {self.name}: step must be a float, StepDecay or InverseTime, got {self.step!r}")

    @property
    def langevin_config(self) -> LangevinConfig:
        """The library config of this setting (the study runs the same chain with the settings as arguments)."""
        return LangevinConfig(step_size=self.step, noise_scale=self.noise, temperature=self.temperature)

    @property
    def guaranteed(self) -> int:
        return min(self.lengths) if self.floor is None else self.floor

    def evaluations(self, num_steps: int) -> int:
        """Energy-gradient evaluations per jet after ``num_steps`` (MALA also evaluates its start)."""
        return num_steps + (1 if self.sampler == "mala" and num_steps > 0 else 0)

    @property
    def generation_config(self) -> dict | None:
        if self.sampler != "ula" or self.start != "noise" or self.noise is None:
            return None
        if isinstance(self.step, float):
            decay = {"step_size": self.step, "step_decay": 1.0, "decay_every": 40}
        elif isinstance(self.step, StepDecay):
            decay = {"step_size": self.step.init_value, "step_decay": self.step.factor, "decay_every": self.step.every}
        else:
            return None
        return decay | {"noise_scale": self.noise, "temperature": self.temperature}

    def describe_step(self) -> str:
        step = self.step
        if isinstance(step, float):
            text = f"{step:g}"
        elif isinstance(step, StepDecay):
            text = f"{step.init_value:g} x {step.factor:g} / {step.every}"
        else:
            text = f"{step.init_value:g} / (1 + {step.rate:g} t)"
        return text + (" (tied noise sqrt(2 step))" if self.noise is None else "")

    def settings(self) -> dict[str, np.ndarray]:
        """The setting as chain arguments: step ``step * factor ** (t // every) / (1 + rate t)``, noise, T."""
        step = self.step
        if isinstance(step, float):
            init, factor, every, rate = step, 1.0, 1, 0.0
        elif isinstance(step, StepDecay):
            init, factor, every, rate = step.init_value, step.factor, step.every, 0.0
        else:
            init, factor, every, rate = step.init_value, 1.0, 1, step.rate
        return {"step": np.float32(init), "factor": np.float32(factor), "every": np.int32(every),
                "rate": np.float32(rate), "noise": np.float32(0.0 if self.noise is None else self.noise),
                "tied": np.bool_(self.noise is None), "temperature": np.float32(self.temperature)}


PAPER_STEP = StepDecay(0.1, 0.8, 40)
TRAIN_T_EFF = 0.005 ** 2 / (2 * 0.1)  # stationary temperature of the training chain (step 0.1, noise 0.005)


def study_grid(quick: bool) -> list[Family]:
    """The settings of the study, in priority order; ``quick``: a tiny grid for tests (seconds on the smoke run)."""
    if quick:
        return [
            Family(PAPER_FAMILY, "paper: ULA, step 0.1 x 0.8 / 40, noise 0.001", step=PAPER_STEP, lengths=(4, 8)),
            Family("mala_tied_train_T", "MALA, tied noise, T = T_eff of training: the exact training chain",
                   sampler="mala", step=0.1 * TRAIN_T_EFF, noise=None, temperature=TRAIN_T_EFF, lengths=(4, 8)),
            Family("buffer_ula_train", "replay buffer, then ULA step 0.1 noise 0.005", noise=0.005, start="buffer",
                   lengths=(4, 8)),
        ]
    short, brief = (25, 50, 100), (25, 50)
    return [
        Family(PAPER_FAMILY, "paper: ULA, step 0.1 x 0.8 / 40, noise 0.001", step=PAPER_STEP, floor=200,
               extra=(400,)),
        Family("ula_const_n0.005", "ULA, constant step 0.1, noise 0.005 (the training chain)", noise=0.005,
               floor=50, extra=(400,)),
        Family("buffer_ula_train", "replay buffer, then ULA step 0.1 noise 0.005 (the training chain continued)",
               noise=0.005, start="buffer", lengths=short),
        Family("mala_tied_train_T", f"MALA, tied noise, step {0.1 * TRAIN_T_EFF:.3g}, T = {TRAIN_T_EFF:.3g} (T_eff of "
               "the training chain): the training chain made exact", sampler="mala", step=0.1 * TRAIN_T_EFF,
               noise=None, temperature=TRAIN_T_EFF, lengths=short),
        Family("mala_paper", "MALA, paper schedule, noise 0.001 (decoupled, T = 1)", sampler="mala",
               step=PAPER_STEP, lengths=brief),
        Family("ula_paper_T0.5", "ULA, paper schedule, noise 0.001, T = 0.5", step=PAPER_STEP, temperature=0.5,
               lengths=short),
        Family("ula_paper_T2", "ULA, paper schedule, noise 0.001, T = 2", step=PAPER_STEP, temperature=2.0,
               lengths=short),
        Family("ula_paper_n0", "ULA, paper schedule, noise 0 (annealed gradient descent)", step=PAPER_STEP,
               noise=0.0, lengths=short),
        Family("ula_paper_n0.005", "ULA, paper schedule, noise 0.005 (training noise)", step=PAPER_STEP,
               noise=0.005, lengths=short),
        Family("ula_const_n0.001", "ULA, constant step 0.1, noise 0.001", lengths=short, extra=(200,)),
        Family("ula_fast_decay", "ULA, step 0.2 x 0.5 / 25, noise 0.001", step=StepDecay(0.2, 0.5, 25),
               lengths=short),
        Family("mala_tied_T1", "MALA, tied noise sqrt(2 step), step 1e-3, T = 1 (the model's own density)",
               sampler="mala", step=1e-3, noise=None, lengths=brief),
        Family("buffer_ula_paper", "replay buffer, then the paper's chain", step=PAPER_STEP, start="buffer",
               lengths=brief),
        Family("ula_inv_time", "ULA, step 0.2 / (1 + t / 50), noise 0.001", step=InverseTime(0.2, 0.02),
               lengths=short),
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Loading a run
# ----------------------------------------------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    run_dir: Path
    config: ExperimentConfig
    pipeline: ConstituentPipeline
    model: TransformerEnergy
    noise_fn: Callable
    params: Any
    buffer: tuple[np.ndarray, np.ndarray]  # features (capacity, N, F), model mask (capacity, N)
    seed: int
    best_step: int
    results: dict | None
    real_p4: np.ndarray = field(repr=False, default=None)
    real_mask: np.ndarray = field(repr=False, default=None)
    real_raw: np.ndarray = field(repr=False, default=None)  # (n, N, 3) raw features; model-mask slots
    tail_pt: float = PT_OVERFLOW  # the top edge of the jet pT plots: jets above it fill their top (overflow) bin


def load_run(run_dir: Path, data_dir: str | None = None) -> LoadedRun:
    """Model, pipeline, noise_fn, best EMA parameters, replay buffer and test QCD jets of a seed run."""
    run_dir = Path(run_dir)
    config_path = next((p for p in (run_dir / "config.json", run_dir.parent / "config.json") if p.exists()),
                       run_dir / "config.json")
    config = from_dict(ExperimentConfig, json.loads(config_path.read_text()))
    if data_dir is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=data_dir))
    pipeline = ConstituentPipeline.from_dict(json.loads((run_dir / "pipeline.json").read_text()))
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else None
    seed = int(results["seed"]) if results else int(run_dir.name.rsplit("_", 1)[-1])
    model = TransformerEnergy(config.model)
    noise_fn = make_noise_fn(**pipeline.noise_parameters())
    n = pipeline.num_constituents
    example_x = np.zeros((config.cd.batch_size, n, config.model.num_features), np.float32)
    example_mask = np.ones((config.cd.batch_size, n), bool)
    template = jax.eval_shape(lambda key: create_train_state(key, model, config.cd, example_x, example_mask, noise_fn),
                              jax.random.key(seed))
    with Checkpointer(run_dir / "checkpoints", best_metric=BEST_METRIC, best_mode="min") as ckpt:
        has_best = bool(ckpt.steps(best=True))
        state, meta = ckpt.restore(template, best=has_best)
    samples = state.buffer.samples
    if isinstance(samples, (tuple, list)):
        buffer = (np.asarray(samples[0]), np.asarray(samples[1], bool))
    else:
        buffer = (np.asarray(samples), np.ones(samples.shape[:2], bool))
    run = LoadedRun(run_dir, config, pipeline, model, noise_fn, state.ema_params, buffer, seed, int(meta["step"]),
                    results)
    test = read_jets(data_paths(config.data)["qcd"], 0, config.data.num_test_jets)
    run.real_p4, run.real_mask = pipeline.jets_as_model_sees(test)
    x, model_mask, _ = pipeline.transform(test)
    run.real_raw = pipeline.to_raw_features(x, model_mask)
    run.tail_pt = plot_top_edge(jet_observables(run.real_p4, run.real_mask)["pt"])
    return run


def plot_top_edge(real_pt: np.ndarray) -> float:
    """Where `jaxebm.plots` ends its jet pT histograms (the real 99.9% quantile plus 10% of the 0.1-99.9%
    range): generated jets above it land in the top bin, the "overflow bin" of the runs' observables.png."""
    low, high = np.quantile(real_pt, [0.001, 0.999])
    return float(high + 0.1 * (high - low))


def noise_starts(run: LoadedRun, num_jets: int) -> tuple[np.ndarray, np.ndarray]:
    """Chain starts from `noise_fn` with ``evaluate_seed``'s key: the jets of ``results.json``'s
    ``noise_init`` when ``num_jets == run.num_generated_jets``."""
    _, key_noise = jax.random.split(jax.random.key(10_000 + run.seed))
    noise = run.noise_fn(key_noise, num_jets)
    x, mask = noise if isinstance(noise, tuple) else (noise, jnp.ones(noise.shape[:2], bool))
    return np.asarray(x, np.float32), np.asarray(mask, bool)


def buffer_starts(run: LoadedRun, num_jets: int) -> tuple[np.ndarray, np.ndarray]:
    """``num_jets`` entries of the checkpoint's replay buffer (without replacement while it lasts)."""
    features, mask = run.buffer
    rng = np.random.default_rng(STUDY_SEED)
    rows = rng.permutation(len(features))
    if num_jets > len(rows):
        rows = np.concatenate([rows, rng.integers(0, len(features), num_jets - len(rows))])
    rows = rows[:num_jets]
    return features[rows].astype(np.float32), mask[rows]


# ----------------------------------------------------------------------------------------------------------------------
# Chains
# ----------------------------------------------------------------------------------------------------------------------

def _step_size(settings):
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
    pad = -num_jets % batch_size
    x0 = np.concatenate([x0, np.repeat(x0[:1], pad, axis=0)])
    mask = np.concatenate([mask, np.repeat(mask[:1], pad, axis=0)])
    key, params, settings = family_key(family), run.params, family.settings()
    init_c, segment_c = programs.get(family.sampler, key, params, jnp.asarray(x0[:batch_size]),
                                     jnp.asarray(mask[:batch_size]), settings)
    batches = list(range(0, len(x0), batch_size))
    charge = num_jets / len(x0)  # padding chains are not charged to the real jets
    snapshots: dict[int, list] = {length: [] for length in lengths}
    if resume is None:
        resume = ChainProgress(states=[])
        snapshots[0] = []
        for start in batches:
            xb, mb = jnp.asarray(x0[start:start + batch_size]), jnp.asarray(mask[start:start + batch_size])
            tic = time.perf_counter()
            state = jax.block_until_ready(init_c(params, xb, mb, settings))
            resume.seconds += (time.perf_counter() - tic) * charge
            resume.states.append(state)
            snapshots[0].append(np.asarray(state.position))
    first, last = resume.steps // seg + 1, max(lengths) // seg
    bar = tqdm(total=len(batches) * max(0, last - first + 1), desc=family.name, unit="seg", disable=not progress,
               leave=False)
    seconds = np.zeros(last + 1)
    accepts, energies = [[] for _ in range(last + 1)], [[] for _ in range(last + 1)]
    for b, start in enumerate(batches):
        mb = jnp.asarray(mask[start:start + batch_size])
        state = resume.states[b]
        for s in range(first, last + 1):
            tic = time.perf_counter()
            state, (accept, energy) = segment_c(jax.random.fold_in(jax.random.fold_in(key, b), s), state, params,
                                                mb, settings)
            jax.block_until_ready(state)
            seconds[s] += (time.perf_counter() - tic) * charge
            accepts[s].append(np.asarray(accept))
            energies[s].append(np.asarray(energy))
            if s * seg in snapshots:
                snapshots[s * seg].append(np.asarray(state.position))
            bar.update()
        resume.states[b] = state
    bar.close()
    out = {}
    if 0 in snapshots:
        out[0] = {"x": np.concatenate(snapshots[0])[:num_jets], "mask": mask[:num_jets], "seconds": resume.seconds,
                  "acceptance": float("nan"), "energy": float("nan")}
    for s in range(first, last + 1):
        resume.seconds += seconds[s]
        resume.acceptance.append(float(np.concatenate(accepts[s])[:num_jets].mean()))
        resume.energy.append(float(np.concatenate(energies[s])[:num_jets].mean()))
        if s * seg in snapshots:
            out[s * seg] = {"x": np.concatenate(snapshots[s * seg])[:num_jets], "mask": mask[:num_jets],
                            "seconds": resume.seconds, "acceptance": float(np.mean(resume.acceptance)),
                            "energy": resume.energy[-1]}
    resume.steps = max(resume.steps, last * seg)
    return out, resume


def time_energy_gradient(run: LoadedRun, batch_size: int, repeats: int = 7) -> float:
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


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------

def leading_log_pt(raw: np.ndarray, mask: np.ndarray, k: int = 3) -> np.ndarray:
    """``(n, k)`` log pT of the k hardest slots (descending; -inf where a jet has fewer)."""
    log_pt = np.where(mask, raw[..., 0], -np.inf)
    return -np.sort(-log_pt, axis=1)[:, :k]


def _stats(p4: np.ndarray, raw: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    mask = np.asarray(mask, bool)
    finite = np.all(np.isfinite(p4), axis=(1, 2)) & np.all(np.isfinite(raw), axis=(1, 2))
    obs = jet_observables(np.where(finite[:, None, None], p4, 0.0), mask)
    slot_pt = np.where(mask, np.exp(np.clip(np.nan_to_num(raw[..., 0]), -50, 50)), 0.0)
    return {"p4": p4, "raw": raw, "mask": mask, "finite": finite, "pt": obs["pt"], "mass": obs["mass"],
            "lead": leading_log_pt(raw, mask), "num_hard": np.sum(mask & (raw[..., 0] > HARD_LOG_PT), axis=1),
            "scalar_pt": slot_pt.sum(axis=1), "lead_pt_share": slot_pt.max(axis=1) / np.maximum(slot_pt.sum(axis=1), 1e-9)}


def jet_stats(pipeline: ConstituentPipeline, x: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per-jet quantities of model-space features: four-vectors, raw features, observables, hard slots."""
    return _stats(pipeline.to_four_vectors(x, mask), pipeline.to_raw_features(x, mask), mask)


def jet_stats_from_four_vectors(p4: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The same from four-vectors in the centred, rotated jet frame (e.g. a run's samples.h5): raw features
    (log pT, eta, phi) read back from them (zeros where ``mask`` is False)."""
    p4 = np.asarray(p4, np.float64)
    pt = np.hypot(p4[..., 1], p4[..., 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.stack([np.log(pt), np.arcsinh(p4[..., 3] / pt), np.arctan2(p4[..., 2], p4[..., 1])], axis=-1)
    raw = np.where(np.asarray(mask, bool)[..., None], raw, 0.0)
    return _stats(p4, raw, mask)


def score(run: LoadedRun, x: np.ndarray | None, mask: np.ndarray, *, seed: int = 0,
          stats: dict | None = None) -> tuple[dict[str, float], dict]:
    """Every metric of one generated sample (model-space ``x``, model ``mask``, or precomputed ``stats``)
    and its per-jet stats.

    Jets with non-finite features (diverged chains) are dropped from the metrics and counted in
    ``nonfinite_frac``.
    """
    if stats is None:
        stats = jet_stats(run.pipeline, x, mask)
    ok = stats["finite"]
    metrics: dict[str, float] = {"nonfinite_frac": float(1 - ok.mean())}
    if ok.sum() < 2:
        return metrics, stats
    p4, m = stats["p4"][ok], mask[ok]
    metrics |= generation_quality(run.real_p4, run.real_mask, p4, m, with_jetnet=False)
    metrics["distance"], metrics["distance_err"] = selection_distance(run.real_p4, run.real_mask, p4, m, seed=seed)
    real_slots, gen_slots = run.real_raw[run.real_mask], stats["raw"][ok][m]
    for i, name in enumerate(FEATURES):
        metrics[f"w1_const_{name}"] = wasserstein_1d(real_slots[:, i], gen_slots[:, i])
    pt = stats["pt"][ok]
    metrics["frac_pt_over"] = float(np.mean(pt > PT_OVERFLOW))
    metrics["frac_pt_under"] = float(np.mean(pt < PT_UNDERFLOW))
    metrics["frac_pt_tail"] = float(np.mean(pt > run.tail_pt))
    tail = pt > run.tail_pt
    metrics["lead_log_pt"] = float(stats["lead"][ok][:, 0].mean())
    metrics["num_hard"] = float(stats["num_hard"][ok].mean())
    metrics["lead_log_pt_tail"] = float(stats["lead"][ok][tail, 0].mean()) if tail.any() else float("nan")
    metrics["num_hard_tail"] = float(stats["num_hard"][ok][tail].mean()) if tail.any() else float("nan")
    return metrics, stats


def real_reference(run: LoadedRun) -> dict[str, float]:
    """The same per-jet summaries for the test QCD jets (the targets)."""
    stats = _stats(run.real_p4, run.real_raw, run.real_mask)
    pt, lead = stats["pt"], stats["lead"]
    return {"num_jets": int(len(pt)), "frac_pt_over": float(np.mean(pt > PT_OVERFLOW)), "tail_pt": run.tail_pt,
            "frac_pt_tail": float(np.mean(pt > run.tail_pt)),
            "frac_pt_under": float(np.mean(pt < PT_UNDERFLOW)), "lead_log_pt": float(lead[:, 0].mean()),
            "second_log_pt": float(lead[:, 1].mean()), "third_log_pt": float(lead[:, 2].mean()),
            "lead_log_pt_q99": float(np.quantile(lead[:, 0], 0.99)), "num_hard": float(stats["num_hard"].mean()),
            "lead_pt_share": float(stats["lead_pt_share"].mean()), "scalar_pt_median": float(np.median(stats["scalar_pt"])),
            "pt_q01_50_99": np.quantile(pt, [0.01, 0.5, 0.99]).tolist()}


# ----------------------------------------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "jax_backend": jax.default_backend(), "jax": jax.__version__}


def _load() -> float:
    return float(os.getloadavg()[0])


def work_plan(families: list[Family]) -> list[tuple[str, int]]:
    """The order chains are run (and continued) in: ``(family name, length to reach)``.

    First every family to its floor (the paper's setting to 200 steps, the others to their shortest
    length), then round by round every family to its next length, then the extra lengths in priority
    order. Under a time budget the study stops a family at the first item that does not fit, so a short
    budget leaves every family with its shortest chains rather than some families with none.
    """
    items = [(f.name, f.guaranteed) for f in families]
    rest = {f.name: [length for length in f.lengths if length > f.guaranteed] for f in families}
    while any(rest.values()):
        items += [(f.name, rest[f.name].pop(0)) for f in families if rest[f.name]]
    return items + [(f.name, length) for f in families for length in f.extra]


def run_study(run: LoadedRun, families: list[Family], num_jets: int, batch_size: int, *,
              keep: set[str] | None = None, progress: bool = True, max_seconds: float | None = None,
              seconds_per_jet_eval: float = 1e-3, overhead_seconds: float = 5.0) -> tuple[list[dict], dict, list]:
    """Every family's chains and scores, run and continued in the order of `work_plan` while the time
    budget lasts (all of it without a budget).

    ``max_seconds``: time budget of the whole call, planned with the measured cost per jet and
    evaluation (``seconds_per_jet_eval`` until a family has run) and ``overhead_seconds`` per family
    (scoring; then measured). Compilation (once per sampler) is charged to the first family of the sampler.
    Returns the rows (one per family and length, plus the 0-step starts), ``{setting: per-jet stats}`` for
    the settings in ``keep`` (None: all) and the list of families cut or skipped by the budget.
    """
    t0 = time.perf_counter()
    segment = math.gcd(*(length for f in families for length in f.lengths + f.extra))
    programs = ChainPrograms(run, segment)
    starts = {"noise": noise_starts(run, num_jets)}
    if any(f.start == "buffer" for f in families):
        starts["buffer"] = buffer_starts(run, num_jets)
    rows, kept, cuts, start_stats = [], {}, [], {}
    for name, (x, mask) in starts.items():
        metrics, stats = score(run, x, mask, seed=run.seed)
        start_stats[name] = stats
        setting = f"{name}_start"
        rows.append({"setting": setting, "family": f"{name}_start", "description": f"{name} start, 0 steps",
                     "start": name, "sampler": "-", "steps": 0, "evals_per_jet": 0, "us_per_jet": 0.0,
                     "acceptance": float("nan"), "energy": float("nan"), **metrics})
        kept[setting] = stats
    chain_seconds, jet_evals, overheads = 0.0, 0, []

    def seconds_left() -> float:
        return math.inf if max_seconds is None else max_seconds - (time.perf_counter() - t0)

    def rate() -> float:
        return chain_seconds / jet_evals if jet_evals else seconds_per_jet_eval

    def add_rows(family: Family, snapshots: dict, loads: list[float]) -> None:
        start_pt = start_stats[family.start]["pt"]
        for length, snap in sorted(snapshots.items()):
            if length == 0:
                continue
            metrics, stats = score(run, snap["x"], snap["mask"], seed=run.seed)
            ok = stats["finite"]
            tail_end, tail_start = stats["pt"] > run.tail_pt, start_pt > run.tail_pt
            metrics["corr_start_end_pt"] = (float(np.corrcoef(start_pt[ok], stats["pt"][ok])[0, 1])
                                            if ok.sum() > 2 and np.std(stats["pt"][ok]) > 0 else float("nan"))
            metrics["frac_tail_from_tail_start"] = (float(np.mean(tail_start[tail_end & ok]))
                                                    if (tail_end & ok).any() else float("nan"))
            setting = f"{family.name}@{length}"
            rows.append({"setting": setting, "family": family.name, "description": family.description,
                         "start": family.start, "sampler": family.sampler, "step": family.describe_step(),
                         "noise": "tied" if family.noise is None else family.noise,
                         "temperature": family.temperature, "steps": length,
                         "evals_per_jet": family.evaluations(length), "us_per_jet": 1e6 * snap["seconds"] / num_jets,
                         "acceptance": snap["acceptance"], "energy": snap["energy"], "load_avg_1min": loads,
                         "generation_config": family.generation_config and
                         (family.generation_config | {"num_steps": length}), **metrics})
            if keep is None or setting in keep or family.name in keep:
                kept[setting] = stats

    states: dict[str, ChainProgress] = {}
    closed: set[str] = set()
    done: dict[str, list[int]] = {f.name: [] for f in families}
    by_name = {f.name: f for f in families}
    plan = work_plan(families)
    for name, target in tqdm(plan, desc="chains", unit="item", disable=not progress):
        family, state = by_name[name], states.get(name)
        steps = 0 if state is None else state.steps
        if name in closed or target <= steps or (state is None and target != family.guaranteed):
            continue
        overhead = float(np.mean(overheads)) if overheads else overhead_seconds
        if family.sampler not in programs.compile_seconds:
            overhead += max(programs.compile_seconds.values(), default=overhead_seconds)
        cost = (family.evaluations(target) - family.evaluations(steps)) * num_jets * rate() + overhead
        if cost > seconds_left():
            closed.add(name)  # its later items are longer still
            continue
        lengths = tuple(length for length in family.lengths + family.extra if steps < length <= target)
        t_family, load_before, seconds_before = time.perf_counter(), _load(), 0.0 if state is None else state.seconds
        compiled_before = set(programs.compile_seconds)
        x0, mask = starts[family.start]
        snapshots, state = run_family(run, family, x0, mask, batch_size, programs, lengths=lengths, resume=state,
                                      progress=progress)
        states[name] = state
        done[name] += list(lengths)
        chain_seconds += state.seconds - seconds_before
        jet_evals += (family.evaluations(state.steps) - family.evaluations(steps)) * num_jets
        add_rows(family, snapshots, [load_before, _load()])
        compiled = programs.compile_seconds.get(family.sampler, 0.0) if family.sampler not in compiled_before else 0.0
        overheads.append(time.perf_counter() - t_family - (state.seconds - seconds_before) - compiled)
    cuts = [{"family": f.name, "planned": list(f.lengths + f.extra), "run": sorted(done[f.name])}
            for f in families if sorted(done[f.name]) != list(f.lengths + f.extra)]
    order = [f.name for f in families]
    rows.sort(key=lambda r: (order.index(r["family"]) if r["family"] in order else -1, r["steps"]))
    return rows, kept, cuts


def pick_budget_winners(rows: list[dict], budgets_us: list[float], cost_key: str = "est_us_per_jet") -> list[dict]:
    """For each CPU budget (us per jet): the lowest selection distance among settings within it, over
    all settings and over those `generate` can run (ULA from noise). ``cost_key``: the estimated cost
    (evaluations x the least-loaded cost of one; the measured wall times swing with the machine's load)
    or the measured ``us_per_jet``."""
    out = []
    for budget in budgets_us:
        entry = {"budget_us_per_jet": budget, "cost": cost_key}
        for label, pool in (("any", rows), ("generate", [r for r in rows if r.get("generation_config")])):
            within = [r for r in pool if (r.get(cost_key) if r.get(cost_key) is not None else math.inf) <= budget
                      and np.isfinite(r.get(MAIN_METRIC, np.nan) if r.get(MAIN_METRIC) is not None else np.nan)]
            best = min(within, key=lambda r: r[MAIN_METRIC]) if within else None
            entry[label] = None if best is None else {k: best.get(k) for k in (
                "setting", "us_per_jet", "est_us_per_jet", "evals_per_jet", MAIN_METRIC, "distance_err")}
        out.append(entry)
    return out


def recommend(rows: list[dict]) -> tuple[dict | None, str]:
    """The recommended `GenerationConfig`: among settings `generate` can run, the cheapest whose
    selection distance is within twice the bootstrap error (combined) or 5% of the best one's; among
    equally cheap ones, the one whose distance grows least when the same chain runs twice as long (a
    default should not degrade when someone runs it longer; unknown counts as worst), then the closest."""
    pool = [r for r in rows if r.get("generation_config") and np.isfinite(r.get(MAIN_METRIC, np.nan))]
    if not pool:
        return None, "No setting `generate` can run (ULA from noise) was completed within the time budget."
    best = min(pool, key=lambda r: r[MAIN_METRIC])
    tolerance = lambda r: max(2 * math.hypot(r["distance_err"], best["distance_err"]), 0.05 * best[MAIN_METRIC])  # noqa: E731
    near = [r for r in pool if r[MAIN_METRIC] <= best[MAIN_METRIC] + tolerance(r)]
    by_setting = {r["setting"]: r for r in rows}

    def growth(r: dict) -> float:
        longer = by_setting.get(f"{r['family']}@{2 * r['steps']}")
        return math.inf if longer is None else max(0.0, longer[MAIN_METRIC] - r[MAIN_METRIC])

    choice = min(near, key=lambda r: (r["evals_per_jet"], growth(r), r[MAIN_METRIC]))
    ties = [r for r in near if r["evals_per_jet"] == choice["evals_per_jet"] and r is not choice]
    paper = next((r for r in rows if r["setting"] == paper_reference(rows)), None)
    reason = (f"`{choice['setting']}` reaches selection distance {choice[MAIN_METRIC]:.3f} ± {choice['distance_err']:.3f} "
              f"with {choice['evals_per_jet']} gradient evaluations per jet (~{choice.get('est_us_per_jet', np.nan) / 1e3:.0f} ms "
              f"per jet here, {choice['us_per_jet'] / 1e3:.0f} ms measured under the load); "
              f"the best setting `generate` can run, `{best['setting']}`, reaches {best[MAIN_METRIC]:.3f} ± "
              f"{best['distance_err']:.3f} with {best['evals_per_jet']} evaluations, within the tolerance "
              f"(2 combined bootstrap errors or 5%).")
    if ties:
        reason += (" Equally cheap and as close: " + ", ".join(
            f"`{r['setting']}` ({r[MAIN_METRIC]:.3f}, at twice the length {'+' if growth(r) > 0 else ''}"
            f"{growth(r):.3f})" for r in ties) + f"; the choice changes least at twice the length "
            f"(+{growth(choice):.3f}).")
    if paper is not None:
        reason += (f" The paper's setting ({paper['steps']} steps) gives {paper[MAIN_METRIC]:.3f} ± {paper['distance_err']:.3f} "
                   f"at {paper['evals_per_jet']} evaluations; jets in the pT tail (the plots' top bin) "
                   f"{100 * paper['frac_pt_tail']:.1f}% vs {100 * choice['frac_pt_tail']:.1f}% for the recommendation.")
    return choice, reason


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------

def _atomic_plot(path: Path, draw: Callable[[Path], Any]) -> Path:
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    draw(tmp)
    os.replace(tmp, path)
    return path


def _to_json(value):
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _to_json(value.tolist())
    return value


PLOT_NAMES = ("quality_vs_evals.png", "quality_vs_time.png", "observables_paper.png", "observables_recommended.png",
              "observables_paper_vs_recommended.png", "tails.png")
PLOT_METRICS = (("distance", "selection distance"), ("jsd_pt", "JSD(pT)"), ("jsd_mass", "JSD(M)"),
                ("w1_const_log_pt", "W1 constituent log pT"), ("w1_const_eta", "W1 constituent eta"),
                ("frac_pt_tail", "fraction in the pT plots' top bin"))


def plot_quality(rows: list[dict], path: Path, x_key: str, x_label: str, dpi: int = 110) -> Path:
    families = [f for f in dict.fromkeys(r["family"] for r in rows) if not f.endswith("_start") and f != "run_samples"]
    start_rows = {r["family"]: r for r in rows if r["family"].endswith("_start")}
    samples = next((r for r in rows if r["family"] == "run_samples"), None)

    def draw(p):
        fig = Figure(figsize=(15, 9))
        axes = fig.subplots(2, 3).ravel()
        palette = matplotlib.colormaps["tab20"]
        for ax, (metric, label) in zip(axes, PLOT_METRICS):
            for i, fam in enumerate(families):
                pts = sorted((r[x_key], r.get(metric, np.nan)) for r in rows if r["family"] == fam)
                xs, ys = zip(*pts)
                start = next(r["start"] for r in rows if r["family"] == fam)
                sampler = next(r["sampler"] for r in rows if r["family"] == fam)
                ax.plot(xs, ys, marker="s" if sampler == "mala" else "o", ms=3.5, color=palette(i % 20),
                        ls="--" if start == "buffer" else "-", label=fam)
            if samples is not None and np.isfinite(samples.get(x_key, np.nan)):
                ax.plot([samples[x_key]], [samples.get(metric, np.nan)], "k*", ms=10, label="run's samples.h5")
            for j, (fam, r) in enumerate(start_rows.items()):
                if np.isfinite(r.get(metric, np.nan)):
                    ax.axhline(r[metric], color="grey", ls=["--", ":"][j % 2], lw=1, label=f"{fam} (0 steps)")
            ax.set_xscale("log")
            if x_key == "evals_per_jet":
                ticks = sorted({r["evals_per_jet"] for r in rows if r["evals_per_jet"]})
                ax.set_xticks([t for t in ticks if t in (25, 50, 100, 200, 400)] or ticks)
                ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel(x_label)
            ax.set_ylabel(label)
            if metric != "frac_pt_tail":
                ax.set_yscale("log")
        axes[0].legend(fontsize="x-small", ncol=2)
        fig.suptitle("dashed: chains from the replay buffer; squares: MALA; grey lines: the chain starts (0 steps)",
                     fontsize="small")
        fig.tight_layout()
        fig.savefig(p, dpi=dpi)

    return _atomic_plot(path, draw)


def observables_of(per_jet: dict) -> dict[str, np.ndarray]:
    """Jet pT, mass, M/pT and the hardest constituent's log pT of the finite jets of a sample, from its
    per-jet stats or the arrays of per_jet.npz (keys pt, mass, lead, finite)."""
    ok = np.asarray(per_jet["finite"], bool)
    pt, mass = np.asarray(per_jet["pt"], np.float64)[ok], np.asarray(per_jet["mass"], np.float64)[ok]
    return {"pt": pt, "mass": mass, "m_over_pt": np.where(pt > 0, mass / np.where(pt > 0, pt, 1.0), 0.0),
            "lead": np.asarray(per_jet["lead"], np.float64)[ok][:, 0]}


def plot_observables(real: dict, samples: dict[str, dict], out: Path, tail_pt: float, dpi: int = 110) -> list[str]:
    """``observables_<tag>.png`` (real vs each sample, `jaxebm.plots.plot_observable_histograms`) and
    ``observables_paper_vs_recommended.png`` (all of them over the real jets; the pT panel marks 400 and
    800 GeV, the JSD range, and the tail edge). ``real``, ``samples``: `observables_of` dicts."""
    keys = ("pt", "mass", "m_over_pt")
    names = []
    for label, obs in samples.items():
        names.append(_atomic_plot(out / f"observables_{label.split(' ')[0]}.png", lambda p, g=obs, lab=label:
                                  plot_observable_histograms({k: real[k] for k in keys}, {k: g[k] for k in keys}, p,
                                                             names=("Real", lab))).name)
    labels = {"pt": "jet pT [GeV]", "mass": "jet mass [GeV]", "m_over_pt": "M / pT",
              "lead": "hardest constituent log(pT / GeV)"}

    def draw(p):
        fig = Figure(figsize=(16, 4))
        axes = fig.subplots(1, 4)
        for ax, key in zip(axes, labels):
            lo, hi = np.quantile(real[key], [0.001, 0.999])
            if key == "pt":
                lo, hi = min(lo, 300.0), max(hi, 1000.0)
            edges = np.linspace(lo, hi, 51)
            ax.hist(np.clip(real[key], lo, hi), edges, density=True, histtype="stepfilled", color="lightgrey",
                    label="real (test QCD)")
            for i, (name, obs) in enumerate(samples.items()):
                ax.hist(np.clip(obs[key], lo, hi), edges, density=True, histtype="step", lw=1.5, color=f"C{i}",
                        label=name)
            if key == "pt":
                for edge, style in ((PT_UNDERFLOW, ":"), (PT_OVERFLOW, ":"), (tail_pt, "--")):
                    ax.axvline(edge, color="k", ls=style, lw=0.8)
            ax.set_xlabel(labels[key])
        axes[0].legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(p, dpi=dpi)

    names.append(_atomic_plot(out / "observables_paper_vs_recommended.png", draw).name)
    return names


def plot_tails(run: LoadedRun, stats: dict, path: Path, name: str, dpi: int = 110) -> Path:
    """Mean log pT per slot rank: real jets, generated jets in the pT overflow, the other generated jets."""
    real_sorted = -np.sort(-np.where(run.real_mask, run.real_raw[..., 0], -np.inf), axis=1)
    gen_raw = stats["raw"][stats["finite"]]
    gen_mask = stats["mask"][stats["finite"]]
    gen_sorted = -np.sort(-np.where(gen_mask, gen_raw[..., 0], -np.inf), axis=1)
    over = stats["pt"][stats["finite"]] > run.tail_pt
    edge = f"{run.tail_pt:.0f}"

    def draw(p):
        fig = Figure(figsize=(11, 4))
        ax, ax2 = fig.subplots(1, 2)
        ranks = np.arange(1, real_sorted.shape[1] + 1)
        for label, values, style in (("real", real_sorted, "k-"), (f"{name}, pT > {edge}", gen_sorted[over], "r-"),
                                     (f"{name}, pT <= {edge}", gen_sorted[~over], "b--")):
            if len(values):
                ax.plot(ranks, np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0), style,
                        label=f"{label} ({len(values)} jets)")
        ax.set_xlabel("slot rank by log pT")
        ax.set_ylabel("mean log(pT / GeV)")
        ax.legend(fontsize="small")
        real_cum = np.cumsum(np.where(np.isfinite(real_sorted), np.exp(real_sorted), 0), axis=1).mean(0)
        for label, values, style in (("real", None, "k-"), (f"{name}, pT > {edge}", gen_sorted[over], "r-"),
                                     (f"{name}, pT <= {edge}", gen_sorted[~over], "b--")):
            cum = real_cum if values is None else (np.cumsum(np.where(np.isfinite(values), np.exp(values), 0), axis=1)
                                                   .mean(0) if len(values) else None)
            if cum is not None:
                ax2.plot(ranks, cum, style, label=label)
        ax2.set_xlabel("slot rank by log pT")
        ax2.set_ylabel("mean cumulative scalar pT [GeV]")
        ax2.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(p, dpi=dpi)

    return _atomic_plot(path, draw)


def paper_reference(rows: list[dict]) -> str | None:
    """The paper's setting as run: 200 steps, else its longest chain in the study."""
    paper = sorted((r for r in rows if r["family"] == PAPER_FAMILY), key=lambda r: r["steps"])
    if not paper:
        return None
    return next((r["setting"] for r in paper if r["steps"] == 200), paper[-1]["setting"])


def _tail_detail(setting: str, stats: dict, real_ref: dict, start: dict | None) -> dict:
    """Tail jets (pT above the plots' top edge, ``real_ref["tail_pt"]``) against the other generated jets:
    their hardest constituents, how much of the tail the single hardest constituent makes, and (with
    ``start``, the chains' starting stats) how the starts of the tail jets looked."""
    ok = stats["finite"]
    pt, lead, num_hard = stats["pt"][ok], stats["lead"][ok], stats["num_hard"][ok]
    edge = real_ref["tail_pt"]
    over = pt > edge
    detail: dict[str, Any] = {"setting": setting, "num_jets": int(ok.sum()), "frac_tail": float(over.mean()),
                              "frac_over": float(np.mean(pt > PT_OVERFLOW)), "frac_under": float(np.mean(pt < PT_UNDERFLOW))}
    if start is not None:
        start_pt = start["pt"][ok]
        start_lead = start["lead"][ok][:, 0]
    for label, sel in (("overflow", over), ("rest", ~over)):
        if not sel.any():
            continue
        part = {"num_jets": int(sel.sum()), "lead_log_pt": lead[sel, 0].mean().item(),
                "second_log_pt": lead[sel, 1].mean().item(), "third_log_pt": lead[sel, 2].mean().item(),
                "num_hard": num_hard[sel].mean().item(), "lead_pt_share": stats["lead_pt_share"][ok][sel].mean().item(),
                "scalar_pt_median": float(np.median(stats["scalar_pt"][ok][sel])), "pt_median": float(np.median(pt[sel]))}
        if start is not None:
            part |= {"start_pt_median": float(np.median(start_pt[sel])),
                     "frac_start_pt_tail": float(np.mean(start_pt[sel] > edge)),
                     "start_lead_log_pt": float(np.mean(start_lead[sel])),
                     "frac_start_lead_above_real_q99": float(np.mean(start_lead[sel] > real_ref["lead_log_pt_q99"]))}
        detail[label] = part
    # the overflow left when only the hardest slot of each jet is capped at the real 99% quantile
    raw, m = stats["raw"][ok].copy(), stats["mask"][ok]
    hardest = np.argmax(np.where(m, raw[..., 0], -np.inf), axis=1)
    rows = np.arange(len(raw))
    raw[rows, hardest, 0] = np.minimum(raw[rows, hardest, 0], real_ref["lead_log_pt_q99"])
    capped_pt = jet_observables(features_to_four_vectors(raw, m), m)["pt"]
    detail["frac_tail_with_lead_capped_at_real_q99"] = float(np.mean(capped_pt > edge))
    detail["frac_lead_above_real_q99"] = float(np.mean(lead[:, 0] > real_ref["lead_log_pt_q99"]))
    if start is not None:
        detail["corr_start_lead_end_lead"] = float(np.corrcoef(start_lead, lead[:, 0])[0, 1])
        detail["corr_start_pt_end_pt"] = float(np.corrcoef(start_pt, pt)[0, 1])
    return detail


def tail_analysis(run: LoadedRun, rows: list[dict], kept: dict, real_ref: dict) -> dict:
    """Numbers behind the generated pT tails (see `tail_text` and the markdown for the reading)."""
    out: dict[str, Any] = {"real": real_ref}
    paper_rows = sorted((r for r in rows if r["family"] == PAPER_FAMILY), key=lambda r: r["steps"])
    out["paper_vs_length"] = [{k: r.get(k) for k in ("steps", "frac_pt_tail", "frac_pt_over", "frac_pt_under",
                                                   "lead_log_pt", "num_hard", "lead_log_pt_tail", "num_hard_tail",
                                                   "corr_start_end_pt", "frac_tail_from_tail_start")}
                              for r in paper_rows]
    out["tail_by_setting"] = {r["setting"]: [r.get("frac_pt_tail"), r.get("frac_pt_over")] for r in rows}
    ref = paper_reference(rows)
    if ref is not None and ref in kept:
        start = kept["noise_start"]
        out["paper_detail"] = _tail_detail(ref, kept[ref], real_ref, start)
    if "run_samples" in kept:
        out["samples_detail"] = _tail_detail("run_samples", kept["run_samples"], real_ref, None)
    out["noise_start_detail"] = _tail_detail("noise_start", kept["noise_start"], real_ref, None)
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


TABLE_COLUMNS = (("setting", "setting"), ("evals_per_jet", "evals/jet"), ("us_per_jet", "us/jet"),
                 ("est_us_per_jet", "est us/jet"),
                 ("distance", "distance"), ("distance_err", "±"), ("jsd_pt", "JSD pT"), ("jsd_mass", "JSD M"),
                 ("jsd_m_over_pt", "JSD M/pT"), ("w1_pt", "W1 pT"), ("w1_mass", "W1 M"),
                 ("w1_m_over_pt", "W1 M/pT"), ("w1_const_log_pt", "W1 logpT"), ("w1_const_eta", "W1 eta"),
                 ("w1_const_phi", "W1 phi"), ("frac_pt_tail", "tail"), ("frac_pt_over", ">800"),
                 ("frac_pt_under", "<400"),
                 ("acceptance", "accept"), ("nonfinite_frac", "diverged"))


def write_markdown(path: Path, study: dict) -> None:
    rows, m = study["rows"], study["machine"]
    lines = [f"# Generation study: quality per CPU time of `{study['run_dir']}`", ""]
    lines += [f"Checkpoint: best (EMA parameters, step {study['best_step']}) of seed {study['seed']}; model "
              f"{study['model']}; feature space `{study['feature_space']}`, padding `{study['padding_mode']}`, "
              f"N = {study['num_constituents']}. {study['num_jets']} generated jets per setting (chains in batches of "
              f"{study['batch_size']}) against {study['real']['num_jets']} test QCD jets (through "
              f"`jets_as_model_sees`).", ""]
    loads = [x for r in rows for x in (r.get("load_avg_1min") or []) if x is not None] + list(study["load_avg"])
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores (shared), JAX {m['jax']} on {m['jax_backend']}; 1-minute load "
              f"average between {min(loads):.1f} and {max(loads):.1f} during the study"
              + (" (other jobs on the machine, e.g. test suites and training runs, took a varying share of the two "
                 "cores, so the measured times are inflated and noisy: the same 25 steps took between "
                 f"{min(r['us_per_jet'] for r in rows if r.get('evals_per_jet') == 25 and np.isfinite(r['us_per_jet'])) / 1e3:.0f}"
                 f" and {max(r['us_per_jet'] for r in rows if r.get('evals_per_jet') == 25 and np.isfinite(r['us_per_jet'])) / 1e3:.0f}"
                 " ms per jet)" if max(loads) > m["cores"] and any(r.get("evals_per_jet") == 25 for r in rows) else "")
              + f". One batched energy+gradient evaluation at the start: {study['grad_us_per_jet']:.0f} us per jet (best "
              f"of 7, batch {study['batch_size']}); the least-loaded cost seen in the chains, "
              f"{study['unit_us_per_eval']:.0f} us, gives the `est us/jet` column (evaluations x that). Total study time "
              f"{study['total_seconds'] / 60:.1f} min.", ""]
    lines += ["Columns: gradient evaluations per jet (ULA: steps; MALA: steps + 1); measured wall time per jet "
              "(compilation excluded; chains in jitted segments of 25 steps) and the estimate; selection distance = "
              "sum over pT, M, M/pT of W1 / std(real) with its bootstrap error (lower is better); textbook JSDs on "
              "fixed ranges; W1 of jet pT [GeV], M [GeV], M/pT; W1 of the constituent features over the slots the "
              "model sees (raw log pT, eta_rel, phi_rel); fractions of jets in the tail (above the plots' top edge, "
              f"{study['real']['tail_pt']:.0f} GeV), above 800 and below 400 GeV; MALA's mean "
              "acceptance; diverged (non-finite) jets.", ""]
    ref = study["reference"]
    lines += [f"Reference levels: real test jets have {100 * ref['real']['frac_pt_tail']:.2f}% above "
              f"{ref['real']['tail_pt']:.0f} GeV (the pT tail), {100 * ref['real']['frac_pt_over']:.2f}% above 800 GeV and "
              f"{100 * ref['real']['frac_pt_under']:.2f}% below 400 GeV"
              + (f"; truth vs truth (results.json) distance {ref['truth_vs_truth']['distance']:.3f}, JSD pT "
                 f"{ref['truth_vs_truth']['jsd_pt']:.4f}" if ref.get("truth_vs_truth") else "") + ".", ""]
    table = ["## All settings", "", "| " + " | ".join(h for _, h in TABLE_COLUMNS) + " |",
             "| " + " | ".join(["---"] + ["---:"] * (len(TABLE_COLUMNS) - 1)) + " |"]
    for r in rows:
        table.append("| " + " | ".join(f"`{r['setting']}`" if k == "setting" else
                                       _fmt(r.get(k), 4 if k.startswith("frac") else 3) for k, _ in TABLE_COLUMNS)
                     + " |")
    table += ["", "Families:", ""]
    for fam in study["families"]:
        table.append(f"- `{fam['name']}`: {fam['description']} (step {fam['step']}, noise {fam['noise']}, "
                     f"T {fam['temperature']:g}, start {fam['start']}, lengths {fam['lengths']})")
    if study.get("notes"):
        lines += ["## Summary", "", study["notes"], ""]
    lines += ["## Best setting per CPU-time budget", "",
              "Lowest selection distance among the settings whose estimated time per jet (evaluations x "
              f"{study['unit_us_per_eval']:.0f} us, the least-loaded cost of one evaluation seen; the measured times "
              "swung several-fold with the load for the same work) is within the budget; "
              "'any' includes buffer starts (they need a trained replay buffer and reuse its chains), 'generate' "
              "only settings `jaxebm.inference.generate` can run (ULA from noise).", "",
              "| budget (us/jet) | best (any) | distance | best (`generate`) | distance |", "| ---: | --- | ---: | --- | ---: |"]
    for b in study["budgets"]:
        cells = []
        for label in ("any", "generate"):
            w = b[label]
            cells += ["-", "-"] if w is None else [
                f"`{w['setting']}` ({w['evals_per_jet']} evals, est {w['est_us_per_jet']:.0f} us, measured "
                f"{_fmt(w['us_per_jet'], 3)} us)", f"{w['distance']:.3f} ± {w['distance_err']:.3f}"]
        lines.append(f"| {b['budget_us_per_jet']:.0f} ({b['budget_us_per_jet'] / study['unit_us_per_eval']:.0f} evals) | "
                     + " | ".join(cells) + " |")
    rec = study["recommendation"]
    lines += ["", "## Recommended generation default", "", rec["reason"], ""]
    if rec["generation_config"]:
        lines += ["As a `GenerationConfig`: `" + json.dumps(rec["generation_config"]) + "`.", ""]
    if study.get("budget_cuts"):
        lines += ["Cut to the time budget (" + str(study["max_minutes"]) + " min): " + "; ".join(
            f"`{c['family']}` {c['planned']} -> {c['run'] or 'skipped'}" for c in study["budget_cuts"]) + ".", ""]
    lines += ["## Findings (computed from the table)", ""] + [f"- {item}" for item in study.get("findings", [])] + [""]
    lines += table + [""]
    lines += ["## Generated jet pT tails: the numbers", ""] + study.get("tail_text", ["(no analysis)"]) + [""]
    lines += ["## Plots", ""] + [f"- [{p}]({p})" for p in study["plots"]] + [""]
    atomic_write_text(path, "\n".join(lines))


def findings(rows: list[dict]) -> list[str]:
    """Sentences with the numbers the grid answers directly (skipped where a setting was not run)."""
    by = {r["setting"]: r for r in rows}

    def d(setting: str) -> str:
        r = by[setting]
        return f"{r[MAIN_METRIC]:.3f} ± {r['distance_err']:.3f}"

    def over(setting: str) -> str:
        return f"{100 * by[setting]['frac_pt_tail']:.1f}%"

    out = []
    paper = sorted((r for r in rows if r["family"] == PAPER_FAMILY), key=lambda r: r["steps"])
    if paper and "noise_start" in by:
        out.append("Chain length, paper setting: selection distance " + ", ".join(
            f"{r['steps']} steps {d(r['setting'])}" for r in paper) + f" (noise start {d('noise_start')}); JSD(pT) "
            + ", ".join(f"{r['jsd_pt']:.3f}" for r in paper) + "; W1 of constituent log pT "
            + ", ".join(f"{r['w1_const_log_pt']:.3f}" for r in paper) + ".")
    common = [s for s in (100, 50, 25) if all(f"{f}@{s}" in by for f in (PAPER_FAMILY, "ula_const_n0.001"))]
    if common:
        s_ = common[0]
        out.append(f"Schedule at {s_} steps (noise 0.001): paper decay {d(f'{PAPER_FAMILY}@{s_}')}, constant 0.1 "
                   f"{d(f'ula_const_n0.001@{s_}')}" + "".join(
                       f", {name} {d(f'{name}@{s_}')}" for name in ("ula_fast_decay", "ula_inv_time")
                       if f"{name}@{s_}" in by) + ".")
    for s_ in (100, 50, 25):
        names = [n for n in ("ula_paper_n0", PAPER_FAMILY, "ula_paper_n0.005") if f"{n}@{s_}" in by]
        if len(names) > 1:
            out.append(f"Noise at {s_} steps (paper schedule): " + ", ".join(
                f"{ {'ula_paper_n0': 'noise 0', PAPER_FAMILY: 'noise 0.001', 'ula_paper_n0.005': 'noise 0.005'}[n]} "
                f"{d(f'{n}@{s_}')} (tail {over(f'{n}@{s_}')})" for n in names) + ".")
            break
    for s_ in (100, 50, 25):
        names = [n for n in ("ula_paper_T0.5", PAPER_FAMILY, "ula_paper_T2") if f"{n}@{s_}" in by]
        if len(names) > 1:
            out.append(f"Temperature at {s_} steps (paper schedule, noise 0.001; for ULA T only rescales the "
                       "drift, step / T): " + ", ".join(
                           f"T = { {'ula_paper_T0.5': '0.5', PAPER_FAMILY: '1', 'ula_paper_T2': '2'}[n]} "
                           f"{d(f'{n}@{s_}')} (tail {over(f'{n}@{s_}')})" for n in names) + ".")
            break
    mala_paper = sorted((r for r in rows if r["family"] == "mala_paper"), key=lambda r: r["steps"])
    if mala_paper:
        r = mala_paper[-1]
        accepted = "< 0.01%" if r["acceptance"] < 1e-4 else f"{100 * r['acceptance']:.2g}%"
        out.append(f"MALA with the paper's decoupled noise (0.001, step 0.1 x 0.8 / 40, T = 1) accepts "
                   f"{accepted} of its moves over {r['steps']} steps: the proposal is a drift of "
                   f"step x grad E with a tiny spread, its reverse move is essentially impossible, so the chains stay "
                   f"at their starts (distance {d(r['setting'])} vs noise start {d('noise_start')}).")
    tied = sorted((r for r in rows if r["family"] == "mala_tied_T1"), key=lambda r: r["steps"])
    if tied:
        r = tied[-1]
        out.append(f"MALA with tied noise at T = 1 (step 1e-3, noise 0.045), i.e. sampling the model's own density "
                   f"exp(-E): acceptance {100 * r['acceptance']:.0f}%, distance {d(r['setting'])} after {r['steps']} "
                   f"steps, tail {over(r['setting'])}.")
    exact = sorted((r for r in rows if r["family"] == "mala_tied_train_T"), key=lambda r: r["steps"])
    for r in exact:
        twin = by.get(f"ula_const_n0.005@{r['steps']}")
        if twin is not None and r is exact[-1]:
            out.append(f"The training chain (ULA step 0.1, noise 0.005: stationary T_eff = {TRAIN_T_EFF:.3g}) made "
                       f"exact by MALA at that temperature accepts {100 * r['acceptance']:.0f}% of moves; after "
                       f"{r['steps']} steps: MALA {d(r['setting'])}, ULA {d(twin['setting'])}.")
    buffer = sorted((r for r in rows if r["family"].startswith("buffer_ula")), key=lambda r: (r["family"], r["steps"]))
    if "run_samples" in by and paper:
        r, p = by["run_samples"], next((q for q in paper if q["steps"] == by["run_samples"]["steps"]), None)
        if p is not None:
            out.append(f"Check against the run's own generated jets (samples.h5, {r['steps']} steps, another key): "
                       f"distance {d('run_samples')} vs this study's {d(p['setting'])}, tail {over('run_samples')} "
                       f"vs {over(p['setting'])}.")
    if "buffer_start" in by:
        ref = paper_reference(rows)
        text = (f"Replay-buffer starts (persistent chains of training): 0 steps {d('buffer_start')}, tail "
                f"{over('buffer_start')}")
        text += "".join(f"; {r['family']} {r['steps']} steps {d(r['setting'])}" for r in buffer)
        if ref:
            text += f" (paper setting {ref}: {d(ref)}, tail {over(ref)})"
        out.append(text + ".")
    return out


def tail_text(tails: dict) -> list[str]:
    """The markdown tables of `tail_analysis` (numbers; the reading is in the findings)."""
    real = tails["real"]
    edge = real["tail_pt"]
    lines = [f"Tail: jet pT above {edge:.0f} GeV, the top edge of the runs' jet pT plots (`jaxebm.plots`: the real "
             f"99.9% quantile plus 10% of the range), so these jets fill the plots' top (overflow) bin; the JSD range "
             f"ends at 800 GeV.", "",
             f"Real test jets: {100 * real['frac_pt_tail']:.2f}% above {edge:.0f} GeV, {100 * real['frac_pt_over']:.2f}% "
             f"above 800 GeV, {100 * real['frac_pt_under']:.2f}% below 400 GeV; hardest constituent log pT mean "
             f"{real['lead_log_pt']:.2f} (99% quantile {real['lead_log_pt_q99']:.2f}, i.e. "
             f"{math.exp(real['lead_log_pt_q99']):.0f} GeV), 2nd {real['second_log_pt']:.2f}, 3rd {real['third_log_pt']:.2f}; "
             f"{real['num_hard']:.2f} constituents above 100 GeV per jet; hardest constituent's share of the scalar "
             f"pT sum {real['lead_pt_share']:.2f}.", ""]
    lines += [f"Paper setting against chain length (the same noise starts): fractions above {edge:.0f} GeV, above 800 "
              "and below 400 GeV; mean hardest log pT and number of constituents above 100 GeV (all jets; tail "
              "jets); correlation of each chain's start and end jet pT; share of the tail jets whose noise start "
              "was already in the tail:", "",
              f"| steps | >{edge:.0f} | >800 | <400 | hardest log pT | >100 GeV constituents | hardest log pT (tail) "
              "| >100 GeV constituents (tail) | corr(start, end pT) | tail from tail start |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in tails["paper_vs_length"]:
        lines.append("| " + " | ".join(_fmt(r[k], 3) for k in (
            "steps", "frac_pt_tail", "frac_pt_over", "frac_pt_under", "lead_log_pt", "num_hard", "lead_log_pt_tail",
            "num_hard_tail", "corr_start_end_pt", "frac_tail_from_tail_start")) + " |")
    details = [tails[k] for k in ("noise_start_detail", "paper_detail", "samples_detail") if k in tails]
    if details:
        lines += ["", f"Tail jets (pT > {edge:.0f} GeV) against the rest of the same sample: hardest three "
                  "constituents' log pT, constituents above 100 GeV, the hardest one's share of the scalar pT sum, "
                  "median scalar pT sum; for chains from noise also the start's median jet pT and hardest log pT, "
                  "and the share of starts whose hardest constituent was above the real 99% quantile:", "",
                  "| sample | part | jets | log pT 1st / 2nd / 3rd | >100 GeV constituents | hardest share | scalar pT [GeV] "
                  "| start pT [GeV] | start hardest log pT | start hardest > real q99 |",
                  "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines.append(f"| real | all | {real['num_jets']} | {real['lead_log_pt']:.2f} / {real['second_log_pt']:.2f} / "
                     f"{real['third_log_pt']:.2f} | {real['num_hard']:.2f} | {real['lead_pt_share']:.2f} | "
                     f"{real['scalar_pt_median']:.0f} | | | |")
        for d in details:
            for part in ("overflow", "rest"):
                if part not in d:
                    continue
                q = d[part]
                lines.append(f"| `{d['setting']}` | {'tail' if part == 'overflow' else 'rest'} | {q['num_jets']} | "
                             f"{q['lead_log_pt']:.2f} / {q['second_log_pt']:.2f} / {q['third_log_pt']:.2f} | "
                             f"{q['num_hard']:.2f} | {q['lead_pt_share']:.2f} | {q['scalar_pt_median']:.0f} | "
                             f"{_fmt(q.get('start_pt_median'), 3)} | {_fmt(q.get('start_lead_log_pt'), 3)} | "
                             f"{_fmt(q.get('frac_start_lead_above_real_q99'), 3)} |")
        lines += [""]
        for d in details:
            text = (f"`{d['setting']}`: {100 * d['frac_tail']:.1f}% above {edge:.0f} GeV, {100 * d['frac_over']:.1f}% above "
                    f"800 GeV; hardest constituent above the real 99% quantile in {100 * d['frac_lead_above_real_q99']:.1f}% "
                    f"of jets; capping only that constituent at the real 99% quantile leaves "
                    f"{100 * d['frac_tail_with_lead_capped_at_real_q99']:.1f}% above {edge:.0f} GeV")
            if "corr_start_pt_end_pt" in d:
                text += (f"; correlation of start and end over the chains: jet pT {d['corr_start_pt_end_pt']:.2f}, "
                         f"hardest log pT {d['corr_start_lead_end_lead']:.2f}")
            lines.append(f"- {text}.")
    lines += ["", f"Fractions above {edge:.0f} / above 800 GeV for every setting: " + ", ".join(
        f"`{k}` {100 * v[0]:.1f}% / {100 * v[1]:.1f}%" for k, v in tails["tail_by_setting"].items()
        if v[0] is not None and v[1] is not None and np.isfinite(v[0]) and np.isfinite(v[1])) + "."]
    return lines


def save_per_jet(path: Path, kept: dict, run: LoadedRun) -> None:
    """Per-jet summaries of every sample (``<setting>.<name>``: pt, mass, hardest three log pT, constituents
    above 100 GeV, the hardest one's share of the scalar pT, scalar pT sum, finite), and ``real.*``."""
    arrays = {}
    for setting, stats in {"real": _stats(run.real_p4, run.real_raw, run.real_mask), **kept}.items():
        for name in ("pt", "mass", "lead", "num_hard", "lead_pt_share", "scalar_pt", "finite"):
            arrays[f"{setting}.{name}"] = np.asarray(stats[name], bool if name == "finite" else np.float32)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def finish(study: dict, out: Path, notes: Path | None = None, kept: dict | None = None,
           run: LoadedRun | None = None) -> dict:
    """The parts computed from the rows (budgets, recommendation, findings, tail tables), the plots and
    the files. Without ``kept`` / ``run`` (``--report-only``) the observables plots are redrawn from the
    earlier study's per_jet.npz, and its tails plot and per_jet.npz are left as they are."""
    rows = study["rows"]
    measured = [r["us_per_jet"] / r["evals_per_jet"] for r in rows
                if r.get("evals_per_jet") and np.isfinite(r.get("us_per_jet", np.nan)) and r["us_per_jet"] > 0]
    study["unit_us_per_eval"] = min([study["grad_us_per_jet"]] + measured)
    for r in rows:
        r["est_us_per_jet"] = study["unit_us_per_eval"] * r["evals_per_jet"]
    most = max((r["evals_per_jet"] for r in rows), default=1)
    study["budgets"] = pick_budget_winners(rows, [1.001 * n * study["unit_us_per_eval"] for n in (0, 25, 50, 100, 200, 400)
                                                  if n <= most])
    recommendation, reason = recommend(rows)
    study["recommendation"] = {"setting": recommendation and recommendation["setting"],
                               "generation_config": recommendation and recommendation["generation_config"],
                               "reason": reason}
    study["findings"] = findings(rows)
    if notes is not None:
        study["notes"] = notes.read_text().strip()
    study["tail_text"] = tail_text(study["tails"])
    out.mkdir(parents=True, exist_ok=True)
    dpi = 50 if study.get("quick") else 110
    plots = [plot_quality(rows, out / "quality_vs_evals.png", "evals_per_jet", "energy-gradient evaluations per jet",
                          dpi).name,
             plot_quality(rows, out / "quality_vs_time.png", "us_per_jet", "measured wall time per jet [us]",
                          dpi).name]
    paper_setting = paper_reference(rows)
    chosen = [s_ for s_ in (paper_setting, recommendation and recommendation["setting"]) if s_]
    labels = {s_: f"{'paper' if s_ == paper_setting else 'recommended'} ({s_})" for s_ in dict.fromkeys(chosen)}
    if kept is not None:
        real = observables_of(_stats(run.real_p4, run.real_raw, run.real_mask))
        samples = {label: observables_of(kept[s_]) for s_, label in labels.items()}
    else:  # from the earlier study's per-jet arrays
        with np.load(out / "per_jet.npz") as arrays:
            def sample(prefix):
                return observables_of({k: arrays[f"{prefix}.{k}"] for k in ("pt", "mass", "lead", "finite")})
            real = sample("real")
            samples = {label: sample(s_) for s_, label in labels.items()}
    if samples:
        plots += plot_observables(real, samples, out, study["real"]["tail_pt"], dpi)
    if kept is None:
        plots += [name for name in study.get("plots", []) if name == "tails.png"]
    else:
        if paper_setting:
            plots.append(plot_tails(run, kept[paper_setting], out / "tails.png", paper_setting, dpi).name)
        save_per_jet(out / "per_jet.npz", kept, run)
    for stale in set(PLOT_NAMES) - set(plots):  # left over from an earlier study in the same directory
        (out / stale).unlink(missing_ok=True)
    study["plots"] = plots
    study = _to_json(study)
    atomic_write_text(out / "generation_study.json", json.dumps(study, indent=2))
    write_markdown(out / "generation_study.md", study)
    return study


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a seed run directory of experiments.ebm_jets (seed_<s>/)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--num-jets", type=int, help="generated jets per setting (default: 1000; --quick: the "
                        "run's num_generated_jets, so 0 steps reproduces results.json's noise_init)")
    parser.add_argument("--batch-size", type=int, help="chains per jitted call (default: the run's generation batch)")
    parser.add_argument("--data-dir", help="override the run's data.data_dir (test QCD jets)")
    parser.add_argument("--families", nargs="+", help="run only these families of the grid")
    parser.add_argument("--max-minutes", type=float, help="time budget: chains are run and lengthened in the "
                        "order of `work_plan` while it lasts (what was left out is recorded)")
    parser.add_argument("--quick", action="store_true", help="tiny grid and few jets (tests)")
    parser.add_argument("--notes", type=Path, help="markdown text (the reading of the results) to put at the top of "
                        "the report as its summary; kept by later --report-only runs unless replaced")
    parser.add_argument("--report-only", action="store_true", help="rewrite the markdown, the JSON's derived parts "
                        "and the quality plots from an earlier study's generation_study.json (no chains)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.report_only:
        study = json.loads((args.out / "generation_study.json").read_text())
        for row in study["rows"]:  # JSON keeps NaN as null
            row.update({k: float("nan") for k, v in row.items() if v is None and k != "generation_config"})
        study = finish(study, args.out, args.notes)
        print(f"rewrote {args.out}/generation_study.{{json,md}}; recommended: {study['recommendation']['setting']}")
        return study
    t_start = time.perf_counter()
    load_start = _load()
    run = load_run(args.run_dir, args.data_dir)
    num_jets = args.num_jets or (run.config.run.num_generated_jets if args.quick else 1000)
    batch_size = min(args.batch_size or run.config.generation.batch_size, num_jets)
    families = study_grid(args.quick)
    if args.families:
        unknown = set(args.families) - {f.name for f in families}
        if unknown:
            raise SystemExit(f"unknown families {sorted(unknown)}; known: {[f.name for f in families]}")
        families = [f for f in families if f.name in args.families]
    grad_seconds, grad_seconds_median = time_energy_gradient(run, batch_size)
    max_seconds = None if args.max_minutes is None else 60 * args.max_minutes - (time.perf_counter() - t_start) - 30
    rows, kept, cuts = run_study(run, families, num_jets, batch_size, progress=not args.no_progress,
                                 max_seconds=max_seconds, seconds_per_jet_eval=grad_seconds_median)
    samples_path = args.run_dir / "samples.h5"
    if samples_path.exists():  # the run's own generated jets: evaluate_seed's `generate` with its generation config
        with h5py.File(samples_path, "r") as file:  # raw datasets: older files fail today's jet-summary checks
            sample_p4, sample_mask = np.asarray(file["constituents"]), np.asarray(file["mask"], bool)
        metrics, stats = score(run, None, sample_mask, seed=run.seed,
                               stats=jet_stats_from_four_vectors(sample_p4, sample_mask))
        gen = run.config.generation
        rows.append({"setting": "run_samples", "family": "run_samples", "start": "noise", "sampler": "ula",
                     "description": f"the run's samples.h5 ({len(sample_mask)} jets: `generate` with the run's "
                     f"generation config, {gen.num_steps} steps, another key)", "steps": gen.num_steps,
                     "evals_per_jet": gen.num_steps, "us_per_jet": float("nan"), "acceptance": float("nan"),
                     "energy": float("nan"), **metrics})
        kept["run_samples"] = stats
    real_ref = real_reference(run)
    study = {
        "run_dir": str(args.run_dir), "seed": run.seed, "best_step": run.best_step,
        "model": f"{run.config.model.num_layers} x {run.config.model.d_model} transformer",
        "feature_space": run.pipeline.feature_space, "padding_mode": run.pipeline.padding_mode,
        "num_constituents": run.pipeline.num_constituents, "num_jets": num_jets, "batch_size": batch_size,
        "quick": args.quick, "machine": machine_info(), "load_avg": [load_start, _load()],
        "grad_us_per_jet": 1e6 * grad_seconds, "grad_us_per_jet_median": 1e6 * grad_seconds_median,
        "budget_cuts": cuts, "max_minutes": args.max_minutes, "total_seconds": time.perf_counter() - t_start,
        "families": [{"name": f.name, "description": f.description, "sampler": f.sampler, "step": f.describe_step(),
                      "noise": "tied" if f.noise is None else f.noise, "temperature": f.temperature, "start": f.start,
                      "lengths": list(f.lengths + f.extra)} for f in families],
        "real": real_ref,
        "reference": {"real": real_ref, **({k: run.results[k] for k in ("noise_init", "truth_vs_truth", "generated")}
                                           if run.results else {})},
        "rows": rows,
        "tails": tail_analysis(run, rows, kept, real_ref),
        "config": to_dict(run.config),
    }
    study = finish(study, args.out, args.notes, kept, run)
    print(f"wrote {args.out}/generation_study.{{json,md}}; recommended: {study['recommendation']['setting']}")
    return study


if __name__ == "__main__":
    main()
