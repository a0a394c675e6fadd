"""The JetNet-like sample of the JetNet-style benchmark (`jaxebm.experiments.jetnet_bench`): one file of
``data.jet_type`` jets in the jaxebm schema (made by Pythia 8 when missing, `jaxebm.data.jetnet_like`), its
JetNet-layout twin (``<data_dir>/jetnet_<type>.h5``), and the fixed 70/15/15 train / validation / test split."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaxebm.data.generate import generate_jets
from jaxebm.data.io import read_jets
from jaxebm.data.jetnet_like import generation_config, to_jetnet_arrays, write_jetnet
from jaxebm.runs import DataFile

if TYPE_CHECKING:
    from jaxebm.experiments.jetnet_bench import ExperimentConfig

__all__ = ["DataConfig", "data_files", "jetnet_file", "split_rows"]


@dataclass(frozen=True)
class DataConfig:
    """The JetNet-like sample: class, size, stored particles, split and generator seeding."""

    data_dir: str = "runs/data/jetnet_like"
    jet_type: str = "g"
    num_jets: int = 177_000
    num_particles: int = 30
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    generator_seed: int = 404
    num_workers: int = 2

    def __post_init__(self):
        if self.jet_type not in ("g", "q", "t", "w"):
            raise ValueError(f"data.jet_type must be one of g, q, t, w, got {self.jet_type!r}")
        if len(self.split) != 3 or min(self.split) <= 0 or not np.isclose(sum(self.split), 1.0):
            raise ValueError(f"data.split must be three positive fractions summing to 1, got {self.split}")
        if min(self.num_jets, self.num_particles, self.num_workers) < 1:
            raise ValueError("data.num_jets, data.num_particles and data.num_workers must be >= 1")


def split_rows(config: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed train / validation / test rows of the sample (a permutation seeded by the generator seed)."""
    order = np.random.default_rng(config.generator_seed).permutation(config.num_jets)
    num_train = int(round(config.split[0] * config.num_jets))
    num_val = int(round(config.split[1] * config.num_jets))
    return tuple(np.sort(rows) for rows in np.split(order, [num_train, num_train + num_val]))


def _paths(config: DataConfig) -> tuple[Path, Path]:
    root = Path(config.data_dir)
    return root / f"pythia_{config.jet_type}.h5", root / f"jetnet_{config.jet_type}.h5"


def data_files(config: ExperimentConfig) -> dict[str, DataFile]:
    """The Pythia sample in the jaxebm schema (made when missing, with its JetNet-layout twin)."""
    generation = generation_config(config.data.jet_type, num_jets=config.data.num_jets,
                                   seed=config.data.generator_seed,
                                   num_workers=min(config.data.num_workers, config.data.num_jets))
    schema_path, jetnet_path = _paths(config.data)

    def make(progress: bool) -> None:
        print(f"generating {generation.num_jets} JetNet-like {config.data.jet_type} jets -> {schema_path}")
        started = time.perf_counter()
        generate_jets(generation, out_path=schema_path, progress=progress, overwrite=True)
        seconds = time.perf_counter() - started
        (schema_path.parent / f"pythia_{config.data.jet_type}.timing.json").write_text(
            json.dumps({"seconds": seconds, "jets_per_second": generation.num_jets / seconds}))

    attrs = {key: getattr(generation, key) for key in ("process", "jet_radius", "seed", "num_jets", "pt_hat_min",
                                                       "pt_hat_max", "jet_pt_min", "jet_pt_max")}
    return {"sample": DataFile(schema_path, attrs, make=make)}


def jetnet_file(config: DataConfig, schema_path: Path) -> Path:
    """The JetNet-layout file of the sample, written from the schema file when missing or older."""
    _, path = _paths(config)
    if not path.exists() or path.stat().st_mtime < Path(schema_path).stat().st_mtime:
        sample = read_jets(schema_path)
        particles, jets = to_jetnet_arrays(sample, config.jet_type, config.num_particles)
        write_jetnet(path, particles, jets, attrs={"jet_type": config.jet_type, "source": str(schema_path),
                                                   "generator": str(sample.attrs.get("generator", ""))})
    return path
