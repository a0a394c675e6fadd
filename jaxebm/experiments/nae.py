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

Images (`jet_images_of`): anti-kT R = 0.8, |eta| < 2, centred on the pT-weighted centroid, principal
axis to 12 o'clock, hardest region lower left, 40 x 40 pixels of (0.029, 0.035), pixel pT / jet pT,
Gaussian filter sigma = 1 pixel, then pT -> pT^n (``data.pt_power``), renormalised to unit sum by default
(``data.pt_power_norm``, the public code's remap).

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
from jaxebm.data.generate import GenerationConfig, generate_jets
from jaxebm.data.hidden_valley import hidden_valley_settings
from jaxebm.data.images import REMAP_NORMS, jet_images
from jaxebm.data.io import JetSample, read_jets
from jaxebm.data.preprocess import center_rotate_flip_nae, constituent_features, constituent_pt_eta_phi
from jaxebm.experiments.nae_report import (ROLE_LABELS, ae_stage_title, in_batches, jitted, latent_map, plot_latent_map,
                                           write_seed_report, write_summary)
from jaxebm.inference import energy_scores
from jaxebm.metrics.tagging import tagging_metrics
from jaxebm.models.conv_ae import ConvAE, ConvAEConfig, check_images
from jaxebm.runs import DataFile, Experiment, SeedJob
from jaxebm.runs.records import atomic_write_bytes, atomic_write_text, git_commit
from jaxebm.train import nae
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.loop import LoopConfig, train_loop
from jaxebm.train.monitor import HealthConfig

__all__ = ["DIRECTIONS", "EXPERIMENT", "INTENSITY_SCALES", "DataConfig", "ExperimentConfig", "IntensityScaleError",
           "LatentCollapseError", "RunConfig", "Trained", "check_latent_spread", "data_files", "intensity_scale_of",
           "jet_images_of", "latent_resultant_length", "read_intensity_scale", "validate"]

CONFIG_DIR = Path(__file__).parent / "configs" / "nae"
BEST_METRIC = "val_abs_loss"
# direction -> (background sample, signal sample); samples -> (process, jet pT window, pTHat window) in GeV.
DIRECTIONS = {"tag_top": ("qcd", "top"), "tag_qcd": ("top", "qcd"), "tag_dark": ("qcd_low", "dark")}
SAMPLES = {"qcd": ("qcd", (550.0, 650.0), (500.0, 700.0)), "top": ("top", (550.0, 650.0), (500.0, 700.0)),
           "qcd_low": ("qcd", (150.0, 300.0), (130.0, 330.0)),
           "dark": ("dark", (150.0, 300.0), (0.0, 13000.0))}  # s-channel Z' (2 -> 1): no pTHat cut applies
SAMPLE_LABELS = {"qcd": "QCD", "top": "top", "qcd_low": "QCD", "dark": "dark (Aachen)"}
INTENSITY_SCALES = ("max_pixel", "none")  # c = 1 / (largest training pixel), or c = 1 (the paper's scale)
INTENSITY_FILE = "intensity.json"


class IntensityScaleError(ConfigError):
    """A seed directory without its recorded intensity scale: its model cannot score images."""


class LatentCollapseError(RuntimeError):
    """The AE phase ended with every jet encoded to nearly one latent point."""


@dataclass(frozen=True)
class DataConfig:
    """Jet samples (generated once per sample into ``data_dir``) and their images.

    direction: "tag_top", "tag_qcd" or "tag_dark" (module doc). num_train, num_val: background jets
    trained on / used for model selection; num_test: test jets per class. Each sample file holds
    ``num_train + num_val + num_test`` jets: rows [0, num_train) train, then validation, then test.
    pt_power: pixel remap n (1: none). pt_power_norm: "sum" (I^n / sum I^n, the public code's) or "none".
    intensity_scale: "max_pixel" (c = 1 / largest training pixel, the network sees c x) or "none" (c = 1).
    sigma: Gaussian filter width in pixels. num_pixels: P.
    dark_*: Hidden Valley model of the dark sample ("Aachen" defaults, `jaxebm.data.hidden_valley`).
    generator_seed, num_workers: Pythia seeding and processes.
    """

    data_dir: str = "runs/data/nae"
    direction: str = "tag_top"
    num_train: int = 3000
    num_val: int = 500
    num_test: int = 1000
    pt_power: float = 1.0
    pt_power_norm: str = "sum"
    intensity_scale: str = "none"
    sigma: float = 1.0
    num_pixels: int = 40
    dark_r_inv: float = 0.75
    dark_z_prime_mass: float = 2000.0
    dark_pion_mass: float = 4.0
    dark_rho_mass: float = 5.0
    dark_confinement_scale: float = 5.0
    generator_seed: int = 201
    num_workers: int = 1

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"data.direction must be one of {tuple(DIRECTIONS)}, got {self.direction!r}")
        for name, allowed in (("pt_power_norm", REMAP_NORMS), ("intensity_scale", INTENSITY_SCALES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"data.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        require_positive("data", self, ("num_train", "num_val", "num_test", "pt_power", "sigma", "num_pixels",
                                        "num_workers"))
        self.dark_settings()  # validates the dark model

    def dark_settings(self) -> tuple[str, ...]:
        return hidden_valley_settings(z_prime_mass=self.dark_z_prime_mass, r_inv=self.dark_r_inv,
                                      pion_mass=self.dark_pion_mass, rho_mass=self.dark_rho_mass,
                                      confinement_scale=self.dark_confinement_scale)


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


def _sample_path(data: DataConfig, sample: str) -> Path:
    suffix = (f"_rinv{data.dark_r_inv:g}_mzp{data.dark_z_prime_mass:g}_mpi{data.dark_pion_mass:g}"
              f"_mrho{data.dark_rho_mass:g}_lambda{data.dark_confinement_scale:g}") if sample == "dark" else ""
    return Path(data.data_dir) / f"{sample}{suffix}.h5"


def _generation(data: DataConfig, sample: str) -> GenerationConfig:
    process, (pt_min, pt_max), (hat_min, hat_max) = SAMPLES[sample]
    num_jets = data.num_train + data.num_val + data.num_test
    return GenerationConfig(
        process=process, num_jets=num_jets, seed=data.generator_seed + sorted(SAMPLES).index(sample),
        num_workers=min(data.num_workers, num_jets), jet_radius=0.8, jet_pt_min=pt_min, jet_pt_max=pt_max,
        pt_hat_min=hat_min, pt_hat_max=hat_max,
        extra_pythia_settings=data.dark_settings() if sample == "dark" else ())


def data_files(config: ExperimentConfig) -> dict[str, DataFile]:
    """``{"background": ..., "signal": ...}`` of ``data.direction``: each made by Pythia 8 when missing,
    reused only when its attributes match (process, seed, number of jets, pT window)."""
    files = {}
    for role, sample in zip(("background", "signal"), DIRECTIONS[config.data.direction]):
        generation, path = _generation(config.data, sample), _sample_path(config.data, sample)
        attrs = {key: getattr(generation, key) for key in ("process", "jet_radius", "seed", "num_jets", "jet_pt_min",
                                                           "jet_pt_max")}
        files[role] = DataFile(path, attrs, make=_generator(generation, path))
    return files


def _generator(generation: GenerationConfig, path: Path):
    def make(progress: bool) -> None:
        print(f"generating {generation.num_jets} {generation.process} jets "
              f"({generation.jet_pt_min:g}-{generation.jet_pt_max:g} GeV) -> {path}")
        generate_jets(generation, out_path=path, progress=progress)

    return make


def describe_data(out_dir: Path, config: ExperimentConfig, paths: dict[str, Path]) -> None:
    """``data_summary.json``: jet mass and multiplicity quantiles (16/50/84%) and pT median per sample."""
    path = out_dir / "data_summary.json"
    if path.exists():
        return
    summary = {}
    for role, sample in zip(("background", "signal"), DIRECTIONS[config.data.direction]):
        jets = read_jets(paths[role]).jets
        summary[sample] = {"num_jets": int(len(jets)),
                           "mass_q16_50_84": np.percentile(jets[:, 3], [16, 50, 84]).round(2).tolist(),
                           "multiplicity_q16_50_84": np.percentile(jets[:, 4], [16, 50, 84]).round(1).tolist(),
                           "pt_median": round(float(np.median(jets[:, 0])), 1)}
    atomic_write_text(path, json.dumps(summary, indent=2))
    print("data:", json.dumps({s: v["mass_q16_50_84"] for s, v in summary.items()}), "(jet mass quantiles, GeV)")


def jet_images_of(sample: JetSample, data: DataConfig) -> np.ndarray:
    """The NAE's images ``(n_jets, P, P)`` in [0, 1] of a jet sample (module doc)."""
    pt, _, _ = constituent_pt_eta_phi(sample.constituents, sample.mask)
    features = constituent_features(sample.constituents, sample.mask, sample.jets)
    eta, phi = center_rotate_flip_nae(pt, features[..., 1], features[..., 2], sample.mask)
    images = jet_images(pt, eta, phi, sample.mask, num_pixels=data.num_pixels, sigma=data.sigma,
                        pt_power=data.pt_power, pt_power_norm=data.pt_power_norm)
    return np.clip(images, 0.0, 1.0)  # the filter can leave -1e-9 round-off


def load_images(path: Path, data: DataConfig, split: str) -> np.ndarray:
    """Images of the ``split`` rows ("train", "val", "test") of a sample file."""
    bounds = {"train": (0, data.num_train), "val": (data.num_train, data.num_train + data.num_val),
              "test": (data.num_train + data.num_val, data.num_train + data.num_val + data.num_test)}[split]
    return check_images(jet_images_of(read_jets(path, *bounds), data), data.num_pixels)


def intensity_scale_of(train_images: np.ndarray, rule: str) -> float:
    """The intensity scale c of ``rule`` (`INTENSITY_SCALES`) from the training images ``(n, P, P)``."""
    if rule == "none":
        return 1.0
    if rule != "max_pixel":
        raise ValueError(f"intensity scale rule must be one of {INTENSITY_SCALES}, got {rule!r}")
    brightest = float(np.max(train_images))
    if not brightest > 0:
        raise ValueError("intensity_scale 'max_pixel' needs a positive pixel in the training images; all are 0")
    return 1.0 / brightest


def read_intensity_scale(seed_dir: Path) -> float:
    """The intensity scale recorded in ``seed_dir/intensity.json``; `IntensityScaleError` if it is missing."""
    path = Path(seed_dir) / INTENSITY_FILE
    if not path.exists():
        raise IntensityScaleError(f"{path} is missing: the intensity scale c that this seed's network applies to "
                                  "every image is unknown, so its model cannot score images. Restore the file or "
                                  "retrain the seed")
    return float(json.loads(path.read_text())["scale"])


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


class ImageBatches:
    """Endless shuffled batches ``(images (B, P, P),)`` of an in-memory image array, with the loop's
    exact-resume protocol: ``position = (epoch, batch_index)``, ``restore(position)``. Each epoch is a
    permutation seeded by ``(seed, epoch)``; the last incomplete batch of an epoch is dropped."""

    def __init__(self, images: np.ndarray, batch_size: int, seed: int):
        if batch_size > len(images):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(images)} images")
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self.epoch, self.index = 0, 0

    @property
    def position(self) -> tuple[int, int]:
        return (self.epoch, self.index)

    def restore(self, position) -> None:
        self.epoch, self.index = int(position[0]), int(position[1])

    def __iter__(self):
        return self

    def __next__(self) -> tuple[np.ndarray]:
        if (self.index + 1) * self.batch_size > len(self.images):
            self.epoch, self.index = self.epoch + 1, 0
        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.images))
        rows = order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
        self.index += 1
        return (self.images[rows],)


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
        """The project's anomaly scores (`jaxebm.inference.energy_scores`) of images ``(B, P, P)`` in [0, 1]:
        ``energy`` (the per-pixel MSE) and ``score_norm`` (``||grad_x E||`` over the pixels), each ``(B,)``,
        larger = more anomalous."""
        images = check_images(images, self.model.config.image_size)
        return energy_scores(image_energy_fn(self.model), {"params": self.state.params, **self.state.spectral},
                             images, batch_size=batch_size)


@functools.lru_cache(maxsize=4)
def image_energy_fn(model: ConvAE):
    """``outputs_fn(variables, images (B, P, P), None) -> E (B,)`` for `energy_scores` (one function object
    per model, so one compilation)."""
    return lambda variables, images, mask: model.apply(variables, images, method="energy")


def batched_energy(model: ConvAE, config: nae.NAEConfig, state: nae.NAEState, images: np.ndarray,
                   batch_size: int = 512) -> np.ndarray:
    """Energies ``(n,)`` of ``images (n, P, P)`` under ``state``, in batches (one compiled shape)."""
    return in_batches(jitted(model, config).energy, {"params": state.params, **state.spectral}, images, batch_size)


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


def latent_resultant_length(latents: np.ndarray) -> float:
    """Mean resultant length ``R = |mean z|`` of unit latent vectors ``(n, D_z)``: 1 when all coincide,
    ~0 when they spread over the sphere."""
    return float(np.linalg.norm(np.mean(np.asarray(latents, np.float64), axis=0)))


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


def _phase1_summary(model: ConvAE, config: ExperimentConfig, state: nae.NAEState, job: SeedJob,
                    train: np.ndarray) -> dict:
    """Plain-AE results at the end of phase 1: validation and test energies, test latents, a few
    reconstructions (averaged in the plots), and the collapse-guard numbers of the validation jets:
    ``latent_resultant_length`` and ``mse_over_mean_image_mse`` (their mean MSE over the mean MSE to the
    average training image)."""
    val = load_images(job.data["background"], config.data, "val")
    tests = {role: load_images(job.data[role], config.data, "test") for role in ("background", "signal")}
    energies = {role: batched_energy(model, config.nae, state, x) for role, x in tests.items()}
    variables = {"params": state.params, **state.spectral}
    num = config.run.num_plot_images
    fns = jitted(model, config.nae)
    latents = {role: in_batches(fns.encode, variables, x) for role, x in tests.items()}
    recon = {role: in_batches(fns.reconstruct, variables, x[:num]).mean(0) for role, x in tests.items()}
    val_energy = float(np.mean(batched_energy(model, config.nae, state, val)))
    mean_image_mse = float(np.mean(np.square(val - train.mean(axis=0))))
    return {"val_energy": np.float64(val_energy), "step": np.int64(int(state.step)),
            "latent_resultant_length": np.float64(latent_resultant_length(in_batches(fns.encode, variables, val))),
            "mse_over_mean_image_mse": np.float64(val_energy / mean_image_mse),
            **{f"energy_{r}": e for r, e in energies.items()}, **{f"latent_{r}": z for r, z in latents.items()},
            **{f"recon_mean_{r}": m for r, m in recon.items()},
            **latent_map(model, config.nae, state, latents["background"], seed=job.seed)}


def _read_phase1(job: SeedJob) -> dict | None:
    path = job.directory / "phase1.npz"
    if not path.exists():
        return None
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def make_validation_fn(model: ConvAE, config: ExperimentConfig, val_images: np.ndarray, select_from: int):
    """``eval_fn(state)``: the NAE loss on validation positives against one batch of fresh negatives,
    ``val_loss = mean E(val) - mean E(x-)`` and ``val_e_pos``, ``val_e_neg``; from step ``select_from``
    on also ``val_abs_loss = |val_loss|`` (what ranks the selected checkpoint)."""
    sample = jitted(model, config.nae).negatives

    def eval_fn(state) -> dict[str, float]:
        key = jax.random.fold_in(jax.random.key(4242), int(state.step))
        negatives = np.asarray(sample(key, state).x_end)
        e_pos = float(np.mean(batched_energy(model, config.nae, state, val_images)))
        e_neg = float(np.mean(batched_energy(model, config.nae, state, negatives)))
        metrics = {"val_e_pos": e_pos, "val_e_neg": e_neg, "val_loss": e_pos - e_neg}
        if int(state.step) >= select_from:
            metrics[BEST_METRIC] = abs(e_pos - e_neg)
        return metrics

    return eval_fn


def _restore_selected(job: SeedJob, template) -> tuple[nae.NAEState, int]:
    """The state of the best checkpoint by `BEST_METRIC` (else the newest) and its step."""
    with Checkpointer(job.directory / "checkpoints", best_metric=BEST_METRIC, best_mode="min") as ckpt:
        state, meta = ckpt.restore(template, best=bool(ckpt.steps(best=True)))
    return state, int(meta["step"])


def _start_phase2(job: SeedJob, config: ExperimentConfig, template, batches: ImageBatches) -> None:
    """Replace the phase-1 end checkpoint (step ``ae_steps``) by the NAE starting state (fresh optimiser;
    idempotent, so a crash in between is harmless), with the phase-2 data position."""
    with Checkpointer(job.directory / "checkpoints") as ckpt:
        state, _ = ckpt.restore(template, step=config.run.ae_steps)
        ckpt.save(nae.start_nae_phase(state, config.nae), data_position=batches.position, config=config,
                  extra={"num_rollbacks": 0, "phase": 2})


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
        batches = ImageBatches(train, config.nae.ae_batch_size, seed=job.seed)
        state = train_loop(_train_steps(model, config.nae)[0], state, batches, job.directory, ae_loop,
                           run_config=config)
        phase1 = _phase1_summary(model, config, state, job, train)
        atomic_write_bytes(job.directory / "phase1.npz", lambda handle: np.savez(handle, **phase1))
        title = ae_stage_title(phase1)
        plot_latent_map({title: phase1}, {title: {r: phase1[f"latent_{r}"] for r in ("background", "signal")}},
                        ROLE_LABELS[config.data.direction], job.directory / "plots" / "latent_ae.png")
        trained_steps = config.run.ae_steps
    print(f"seed {job.seed}: AE latent R = {float(phase1['latent_resultant_length']):.3f}, MSE / mean-image MSE = "
          f"{float(phase1['mse_over_mean_image_mse']):.3f} (intensity scale c = {model.config.intensity_scale:.4g})")
    check_latent_spread(phase1, config.run.max_latent_resultant)
    batches = ImageBatches(train, config.nae.batch_size, seed=job.seed + 1)
    if trained_steps <= config.run.ae_steps:
        _start_phase2(job, config, template, batches)
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


def _tagging(background: np.ndarray, signal: np.ndarray) -> dict[str, float]:
    labels = np.r_[np.zeros(len(background)), np.ones(len(signal))]
    metrics = tagging_metrics(labels, np.r_[background, signal], signal_efficiencies=(0.2,))
    return {"auc": metrics["auc"], "inv_eps_b_0.2": metrics["rejection_at_0.2"]}


def evaluate_seed(config: ExperimentConfig, job: SeedJob, trained: Trained) -> dict:
    """AE (phase-1 end) and NAE (selected checkpoint) tagging on the test sets, plus the plots."""
    tests = {role: load_images(job.data[role], config.data, "test") for role in ("background", "signal")}
    energies = {role: trained.energy(x) for role, x in tests.items()}
    phase1 = trained.phase1
    results = {
        "seed": job.seed, "direction": config.data.direction, "pt_power": config.data.pt_power,
        "pt_power_norm": config.data.pt_power_norm, "intensity_scale": trained.model.config.intensity_scale,
        "git_commit": git_commit(),
        "ae": {**_tagging(phase1["energy_background"], phase1["energy_signal"]),
               "latent_resultant_length": float(phase1["latent_resultant_length"]),
               "mse_over_mean_image_mse": float(phase1["mse_over_mean_image_mse"])},
        "nae": _tagging(energies["background"], energies["signal"]),
        "selected_step": trained.best_step, "ae_steps": config.run.ae_steps, "num_steps": config.run.num_steps,
        "mean_energy": {"ae": {r: float(np.mean(phase1[f"energy_{r}"])) for r in ("background", "signal")},
                        "nae": {r: float(np.mean(e)) for r, e in energies.items()}},
    }
    atomic_write_bytes(job.directory / "scores.npz", lambda handle: np.savez(
        handle, **{f"nae_{r}": e for r, e in energies.items()},
        **{f"ae_{r}": phase1[f"energy_{r}"] for r in ("background", "signal")}))
    results["timing"] = _timing(job.directory)
    write_seed_report(job.directory, config, results, trained, tests, energies)
    return results


def _timing(seed_dir: Path) -> dict[str, float]:
    """Training wall time (s) per phase from ``metrics.jsonl`` (the loop's ``time`` column, reset at each start)."""
    from jaxebm.train.monitor import read_metrics

    path = seed_dir / "metrics.jsonl"
    rows = read_metrics(path) if path.exists() else []
    total, last = 0.0, 0.0
    for row in rows:
        if "time" not in row:
            continue
        if row["time"] < last:
            total += last
        last = row["time"]
    return {"train_seconds": round(total + last, 1)}


def sample(config: ExperimentConfig, trained: Trained, num_jets: int, seed: int, progress: bool = True):
    """NAE negatives are images, not jets: no jet sample to write."""
    raise ConfigError("the NAE experiment generates images, not jets: `jaxebm sample` does not apply to it")


EXPERIMENT = Experiment(
    name="nae", config_class=ExperimentConfig, presets=CONFIG_DIR, validate=validate, data_files=data_files,
    describe_data=describe_data, train_seed=train_seed, load_seed=load_seed, evaluate_seed=evaluate_seed,
    write_summary=write_summary, write_report=write_summary, sample=sample)
