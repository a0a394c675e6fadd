"""A finished seed run of `jaxebm.experiments.ebm` as the generation study reads it: model, pipeline,
best EMA parameters, replay buffer, test QCD jets, and the chain starts (noise or replay buffer)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.config import from_dict
from jaxebm.data.io import read_jets
from jaxebm.data.pipeline import ConstituentPipeline
from jaxebm.evaluation import jet_observables
from jaxebm.experiments.ebm import BEST_METRIC, ExperimentConfig
from jaxebm.experiments.jet_samples import data_paths
from jaxebm.experiments.generation_study.settings import PT_OVERFLOW, STUDY_SEED
from jaxebm.models.transformer import TransformerEnergy
from jaxebm.train.cd import make_noise_fn
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.state import create_train_state


@dataclass
class LoadedRun:
    """A seed run as the study uses it; ``real_*``: the test QCD jets through the model's eyes
    (four-vectors ``(n, N, 4)``, mask ``(n, N)``, raw features ``(n, N, 3)``)."""

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
    test = read_jets(data_paths(config.data.data_dir)["qcd"], 0, config.data.num_test_jets)
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


def read_run_samples(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's own generated jets (``samples.h5``: four-vectors ``(n, N, 4)``, mask ``(n, N)``), or None;
    read as raw datasets (older files fail today's jet-summary checks)."""
    path = Path(run_dir) / "samples.h5"
    if not path.exists():
        return None
    with h5py.File(path, "r") as file:
        return np.asarray(file["constituents"]), np.asarray(file["mask"], bool)
