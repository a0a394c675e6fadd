"""Jet samples and jet images of the NAE experiment (`jaxebm.experiments.nae`): the background and signal
files of each direction (Pythia 8, made when missing), their images, and the intensity scale c of a seed.

Images (`jet_images_of`): anti-kT R = 0.8, |eta| < 2, centred on the pT-weighted centroid, principal
axis to 12 o'clock, hardest region lower left, 40 x 40 pixels of (0.029, 0.035), pixel pT / jet pT,
Gaussian filter sigma = 1 pixel, then pT -> pT^n (``data.pt_power``), renormalised to unit sum by default
(``data.pt_power_norm``, the public code's remap).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaxebm.config import ConfigError, require_positive
from jaxebm.data.generate import GenerationConfig, generate_jets
from jaxebm.data.hidden_valley import hidden_valley_settings
from jaxebm.data.images import REMAP_NORMS, jet_images
from jaxebm.data.io import JetSample, read_jets
from jaxebm.data.preprocess import center_rotate_flip_nae, constituent_features, constituent_pt_eta_phi
from jaxebm.models.nae_autoencoder import check_images
from jaxebm.runs import DataFile
from jaxebm.runs.records import atomic_write_text

if TYPE_CHECKING:
    from jaxebm.experiments.nae import ExperimentConfig

__all__ = ["DIRECTIONS", "INTENSITY_FILE", "INTENSITY_SCALES", "SAMPLES", "SAMPLE_LABELS", "DataConfig",
           "IntensityScaleError", "data_files", "describe_data", "intensity_scale_of", "jet_images_of", "load_images",
           "read_intensity_scale"]


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
