"""The normalized autoencoder (NAE) on jet images (Dillon, Favaro, Plehn et al., seed 002; dissertation
ch. 5.2) end to end on our own Pythia jets.

One run trains on one background and tags one signal (``data.direction``):

  tag_top   train on QCD (550-650 GeV), tag top jets          (the paper's top tagging)
  tag_qcd   train on top jets, tag QCD                        (the inverse, "symmetric" direction)
  tag_dark  train on QCD (150-300 GeV), tag semi-visible dark jets ("Aachen"), pixel remap pT^n

For each seed: the intensity scale c of the images is fixed from the training images (``intensity.json``,
`intensity_scale_of`; the network sees ``c x``, energies stay in the raw images' units); phase 1 trains the
autoencoder on the MSE; at its end the plain AE is scored on the test sets and the collapse guard checks the
spread of the encoded validation jets (``phase1.npz``; mean resultant length R above
``run.max_latent_resultant`` stops the seed with `LatentCollapseError`); phase 2 trains the NAE (contrastive divergence with on-manifold chains), checks
health every step (a diverging negative energy, the paper's sampler collapse, rolls back to the last
checkpoint with half the learning rate), and selects the checkpoint whose validation loss
``|E(val) - E(negatives)|`` is closest to 0 over the second half of the phase. Both phases write one
Orbax checkpoint sequence (global step) and resume exactly after a kill. The run directory, seeds and
reports are the runner's (`jaxebm.runs`):

    jaxebm train nae --preset cpu --set data.direction=tag_qcd
    python -m experiments.nae_jets --preset cpu          # both directions and the dark-jet scan

Samples and images: `jaxebm.experiments.nae_data`; evaluation (energies, phase-1 summary, validation loss,
latent landscape, tagging): `jaxebm.experiments.nae_eval`; plots and reports: `jaxebm.experiments.nae_report`.

Seed directory: config.json, intensity.json, checkpoints/, metrics.jsonl, phase1.npz, scores.npz,
results.json, report.md, plots/*.png. ``Trained.energy(images) -> (B,)`` is the anomaly score of a trained seed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.config import ConfigError, check_seeds, require_positive
from jaxebm.experiments import nae_eval
from jaxebm.experiments.nae_data import (INTENSITY_FILE, DataConfig, data_files, describe_data, intensity_scale_of,
                                         load_images, read_intensity_scale)
from jaxebm.experiments.nae_eval import BEST_METRIC, batched_energy, image_energy_fn, make_validation_fn, phase1_summary
from jaxebm.experiments.nae_report import ROLE_LABELS, ae_stage_title, plot_latent_map, write_seed_report, write_summary
from jaxebm.inference import anomaly_scores
from jaxebm.models.nae_autoencoder import ConvAE, ConvAEConfig, check_images
from jaxebm.runs import Experiment, SeedJob
from jaxebm.runs.records import atomic_write_bytes, atomic_write_text
from jaxebm.train import nae
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.batches import ArrayBatches
from jaxebm.train.loop import LoopConfig, begin_phase, train_loop
from jaxebm.train.monitor import HealthConfig

__all__ = ["EXPERIMENT", "ExperimentConfig", "LatentCollapseError", "RunConfig", "Trained", "check_latent_spread",
           "evaluate_seed", "validate"]

CONFIG_DIR = Path(__file__).parent / "configs" / "nae"
class LatentCollapseError(RuntimeError):
    """The AE phase ended with every jet encoded to nearly one latent point."""


@dataclass(frozen=True)
class RunConfig:
    """Phase lengths (iterations; ``num_steps`` = AE + NAE iterations, the runner's length), cadence and
    the health check.

    ae_steps: phase-1 iterations (the rest of ``num_steps`` is phase 2). log_every, checkpoint_every,
    eval_every: intervals in iterations. select_after: fraction of phase 2 after which evaluations
    compete for the selected checkpoint. collapse_factor: a NAE step whose |E(x-)| or |E(x-) - E(x+)|
    exceeds this many times the phase-1 validation energy is a sampler collapse (rollback).
    max_rollbacks: rollbacks per seed. num_plot_images: images averaged in the image plots.
    max_latent_resultant: collapse guard, the largest mean resultant length R = |mean z| of the encoded
    validation jets accepted after the AE phase (R = 1: every jet at one latent point); 1 turns the guard off.
    """

    num_steps: int = 1200
    ae_steps: int = 600
    log_every: int = 10
    checkpoint_every: int = 100
    eval_every: int = 50
    select_after: float = 0.5
    collapse_factor: float = 100.0
    max_rollbacks: int = 3
    num_plot_images: int = 500
    max_latent_resultant: float = 0.99

    def __post_init__(self):
        require_positive("run", self, ("num_steps", "ae_steps", "log_every", "checkpoint_every", "eval_every",
                                       "collapse_factor", "num_plot_images"))
        if not self.ae_steps < self.num_steps:
            raise ValueError(f"run.ae_steps ({self.ae_steps}) must be below run.num_steps ({self.num_steps}): "
                             "the NAE phase needs iterations")
        if not 0.0 <= self.select_after < 1.0:
            raise ValueError(f"run.select_after must be in [0, 1), got {self.select_after}")
        if not 0.0 < self.max_latent_resultant <= 1.0:
            raise ValueError(f"run.max_latent_resultant must be in (0, 1], got {self.max_latent_resultant}")


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment: preset name, seeds and the settings of each part."""

    name: str = "cpu"
    seeds: tuple[int, ...] = (0, 1, 2)
    data: DataConfig = field(default_factory=DataConfig)
    model: ConvAEConfig = field(default_factory=ConvAEConfig)
    nae: nae.NAEConfig = field(default_factory=nae.NAEConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        check_seeds(self.seeds)


def validate(config: ExperimentConfig) -> None:
    """Refuse values that only clash across sections, naming the keys (`ConfigError`)."""
    if config.model.image_size != config.data.num_pixels:
        raise ConfigError(f"model.image_size ({config.model.image_size}) must equal data.num_pixels "
                          f"({config.data.num_pixels})")
    for name, batch in (("nae.ae_batch_size", config.nae.ae_batch_size), ("nae.batch_size", config.nae.batch_size)):
        if batch > config.data.num_train:
            raise ConfigError(f"{name} ({batch}) is larger than data.num_train ({config.data.num_train})")
    try:
        for config_ in _loop_configs(config, progress=False):
            del config_
    except ValueError as error:
        raise ConfigError(f"run: {error}") from None


# ---------------------------------------------------------------------------------------------- data


def _seed_model(config: ExperimentConfig, seed_dir: Path, train_images: np.ndarray) -> ConvAE:
    """The seed's network with its intensity scale: read from ``intensity.json``, or computed from the
    training images and recorded there (before any training)."""
    path = Path(seed_dir) / INTENSITY_FILE
    if not path.exists():
        scale = intensity_scale_of(train_images, config.data.intensity_scale)
        record = {"scale": scale, "rule": config.data.intensity_scale,
                  "largest_training_pixel": float(np.max(train_images)), "num_training_images": len(train_images)}
        atomic_write_text(path, json.dumps(record, indent=2))
    return ConvAE(dataclasses.replace(config.model, intensity_scale=read_intensity_scale(seed_dir)))


# ---------------------------------------------------------------------------------------------- training


class Trained(NamedTuple):
    """A trained seed at its selected checkpoint: model (its config holds the seed's intensity scale, so
    every image it scores is scaled the way the training images were), NAE config, state, selected step,
    and the phase-1 summary (``phase1.npz`` contents)."""

    model: ConvAE
    nae_config: nae.NAEConfig
    state: nae.NAEState
    best_step: int
    phase1: dict

    def energy(self, images, batch_size: int = 512) -> np.ndarray:
        """Anomaly score: per-pixel MSE energy ``(B,)`` (raw units) of raw images ``(B, P, P)`` in [0, 1]."""
        images = check_images(images, self.model.config.image_size)
        return batched_energy(self.model, self.nae_config, self.state, images, batch_size)

    def scores(self, images, batch_size: int = 512) -> dict[str, np.ndarray]:
        """The project's anomaly scores (`jaxebm.inference.anomaly_scores`) of images ``(B, P, P)`` in [0, 1]:
        ``energy`` (the per-pixel MSE) and ``score_norm`` (``||grad_x E||`` over the pixels), each ``(B,)``,
        larger = more anomalous."""
        images = check_images(images, self.model.config.image_size)
        return anomaly_scores(image_energy_fn(self.model), {"params": self.state.params, **self.state.spectral},
                             images, batch_size=batch_size)


@functools.lru_cache(maxsize=4)
def _train_steps(model: ConvAE, config: nae.NAEConfig) -> tuple:
    """The jitted AE and NAE steps, built once per process (every seed and run of one config reuses them)."""
    return nae.make_ae_step(model, config), nae.make_nae_step(model, config)


def _loop_configs(config: ExperimentConfig, progress: bool) -> tuple[LoopConfig, LoopConfig]:
    run = config.run
    common = dict(log_every=run.log_every, checkpoint_every=run.checkpoint_every, progress=progress)
    return (LoopConfig(num_steps=run.ae_steps, **common),
            LoopConfig(num_steps=run.num_steps, eval_every=run.eval_every, best_metric=BEST_METRIC, best_mode="min",
                       **common))


def _template(model: ConvAE, config: ExperimentConfig):
    x = jnp.zeros((2, config.data.num_pixels, config.data.num_pixels))
    return jax.eval_shape(lambda key: nae.create_state(key, model, config.nae, x), jax.random.key(0))


def check_latent_spread(phase1: dict, limit: float) -> None:
    """The collapse guard: `LatentCollapseError` naming cause and remedy when the encoded validation jets'
    mean resultant length (``phase1["latent_resultant_length"]``) exceeds ``limit`` (< 1; 1: no check)."""
    resultant, ratio = float(phase1["latent_resultant_length"]), float(phase1["mse_over_mean_image_mse"])
    if limit < 1.0 and resultant > limit:
        raise LatentCollapseError(
            f"the AE phase collapsed: the encoded validation jets have mean resultant length R = {resultant:.4f} > "
            f"{limit} (all near one latent point) and reconstruct to MSE / mean-image MSE = {ratio:.3f}: the decoder "
            "outputs about the average training image for every jet, so no energy from it measures anything but "
            "the distance to that average. Cause: pixel values far below the sigmoid decoder's range "
            "(pixel pT / jet pT ~ 1e-3). Remedy: data.intensity_scale = 'max_pixel' (the network sees the images "
            "scaled to a largest training pixel of 1), or a longer AE phase (run.ae_steps) / larger nae.ae_lr")


def _read_phase1(job: SeedJob) -> dict | None:
    path = job.directory / "phase1.npz"
    if not path.exists():
        return None
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def _restore_selected(job: SeedJob, template) -> tuple[nae.NAEState, int]:
    """The state of the best checkpoint by `BEST_METRIC` (else the newest) and its step."""
    with Checkpointer(job.directory / "checkpoints", best_metric=BEST_METRIC, best_mode="min") as ckpt:
        state, meta = ckpt.restore(template, best=bool(ckpt.steps(best=True)))
    return state, int(meta["step"])


def train_seed(config: ExperimentConfig, job: SeedJob) -> Trained:
    """Intensity scale, phase 1 (AE), the plain-AE summary and collapse guard, phase 2 (NAE); resumes from
    the seed's checkpoints."""
    train = load_images(job.data["background"], config.data, "train")
    model = _seed_model(config, job.directory, train)
    template = _template(model, config)
    ae_loop, nae_loop = _loop_configs(config, job.progress)
    with Checkpointer(job.directory / "checkpoints") as ckpt:
        trained_steps = ckpt.latest_step() or 0
    phase1 = _read_phase1(job)
    if phase1 is None:
        print(f"seed {job.seed}: phase 1, autoencoder on the reconstruction error, to step {config.run.ae_steps}",
              flush=True)
        state = nae.create_state(jax.random.key(job.seed), model, config.nae, jnp.asarray(train[:2]))
        batches = ArrayBatches((train,), config.nae.ae_batch_size, seed=job.seed)
        state = train_loop(_train_steps(model, config.nae)[0], state, batches, job.directory, ae_loop,
                           run_config=config)
        phase1 = phase1_summary(model, config, state, job, train)
        atomic_write_bytes(job.directory / "phase1.npz", lambda handle: np.savez(handle, **phase1))
        title = ae_stage_title(phase1)
        plot_latent_map({title: phase1}, {title: {r: phase1[f"latent_{r}"] for r in ("background", "signal")}},
                        ROLE_LABELS[config.data.direction], job.directory / "plots" / "latent_ae.png")
        trained_steps = config.run.ae_steps
    print(f"seed {job.seed}: AE latent R = {float(phase1['latent_resultant_length']):.3f}, MSE / mean-image MSE = "
          f"{float(phase1['mse_over_mean_image_mse']):.3f} (intensity scale c = {model.config.intensity_scale:.4g})")
    check_latent_spread(phase1, config.run.max_latent_resultant)
    batches = ArrayBatches((train,), config.nae.batch_size, seed=job.seed + 1)
    if trained_steps <= config.run.ae_steps:
        begin_phase(job.directory, template, config.run.ae_steps, lambda state: nae.start_nae_phase(state, config.nae),
                    batches, run_config=config, extra={"phase": 2})
    val = load_images(job.data["background"], config.data, "val")
    select_from = config.run.ae_steps + int(config.run.select_after * (config.run.num_steps - config.run.ae_steps))
    threshold = config.run.collapse_factor * float(phase1["val_energy"])
    health = HealthConfig(max_abs_energy=threshold, max_abs_gap=threshold, max_rollbacks=config.run.max_rollbacks)
    print(f"seed {job.seed}: phase 2, normalized autoencoder (latent and data chains), to step "
          f"{config.run.num_steps}", flush=True)
    state = nae.create_state(jax.random.key(job.seed), model, config.nae, jnp.asarray(train[:2]))
    state = train_loop(_train_steps(model, config.nae)[1], state, batches, job.directory, nae_loop, health=health,
                       eval_fn=make_validation_fn(model, config, val, select_from), run_config=config)
    del state
    selected, best_step = _restore_selected(job, template)
    return Trained(model, config.nae, selected, best_step, phase1)


def load_seed(config: ExperimentConfig, job: SeedJob) -> Trained:
    """A trained seed from its directory, without training (`IntensityScaleError` without ``intensity.json``)."""
    model = ConvAE(dataclasses.replace(config.model, intensity_scale=read_intensity_scale(job.directory)))
    phase1 = _read_phase1(job)
    if phase1 is None:
        raise ConfigError(f"{job.directory}: no phase1.npz: the seed has not finished its AE phase")
    selected, best_step = _restore_selected(job, _template(model, config))
    return Trained(model, config.nae, selected, best_step, phase1)


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate_seed(config: ExperimentConfig, job: SeedJob, trained: Trained) -> dict:
    """AE (phase-1 end) and NAE (selected checkpoint) tagging on the test sets (`nae_eval.evaluate_seed`), then
    the seed's plots and report."""
    results, tests, energies = nae_eval.evaluate_seed(config, job, trained)
    write_seed_report(job.directory, config, results, trained.phase1, tests, energies,
                      nae_eval.figure_inputs(config, trained, tests, job.seed))
    return results


def sample(config: ExperimentConfig, trained: Trained, num_jets: int, seed: int, progress: bool = True):
    """NAE negatives are images, not jets: no jet sample to write."""
    raise ConfigError("the NAE experiment generates images, not jets: `jaxebm sample` does not apply to it")


EXPERIMENT = Experiment(
    name="nae", config_class=ExperimentConfig, presets=CONFIG_DIR, validate=validate, data_files=data_files,
    describe_data=describe_data, train_seed=train_seed, load_seed=load_seed, evaluate_seed=evaluate_seed,
    write_summary=write_summary, write_report=write_summary, sample=sample)
