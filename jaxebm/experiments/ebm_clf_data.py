"""Jet samples of the hybrid EBM-classifier experiment (`jaxebm.experiments.ebm_clf`): QCD / W / top.

Classes and labels: ``CLASSES = ("qcd", "w", "top")``, label = index; QCD (0) is the anomaly background.
Files (R = 1.0, 550-650 GeV, |eta| < 2, Pythia 8, `jaxebm.experiments.jet_samples`):

- the `ebm` experiment's files in ``ebm_data_dir`` (shared, read only, made with its settings when
  missing): QCD training jets, and the QCD / top / H -> hh -> 4b test jets;
- in ``data_dir``: ``w.h5`` (the first ``num_train_jets`` train, the next ``num_test_jets`` test),
  ``top_train.h5``, and ``train_qcd_w_top_<num_train_jets>.h5``, the labelled, shuffled mix of
  ``num_train_jets`` of each class that the training reads (label = index in `CLASSES`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxebm.config import require_positive
from jaxebm.data.io import JetSample, read_jets, write_jets
from jaxebm.data.pipeline import FEATURE_SPACES
from jaxebm.experiments.jet_samples import TEST_PROCESSES, jet_data_file, sample_files
from jaxebm.runs import DataFile

__all__ = ["CLASSES", "SIGNALS", "DataConfig", "data_files", "read_test_sets"]

CLASSES = ("qcd", "w", "top")
SIGNALS = ("top", "h_hh_4b")


@dataclass(frozen=True)
class DataConfig:
    """Jet samples.

    data_dir: where W / top jets and the labelled training mix are made. ebm_data_dir,
    ebm_num_train_jets, ebm_num_test_jets, ebm_generator_seed: the `ebm` experiment's files reused here
    (QCD training, QCD / top / H test). num_train_jets: training jets per class. num_test_jets: test
    jets per class (classification, anomaly scores). generator_seed: Pythia seed of the files made here
    (W: seed, top: seed + 1). num_constituents: N slots. feature_space: "raw" or "standardized".
    """

    data_dir: str = "runs/data/ebm_clf"
    ebm_data_dir: str = "runs/data/ebm_r10"
    ebm_num_train_jets: int = 30_000
    ebm_num_test_jets: int = 5_000
    ebm_generator_seed: int = 101
    num_train_jets: int = 2_000
    num_test_jets: int = 1_000
    jet_radius: float = 1.0
    num_constituents: int = 40
    generator_seed: int = 201
    num_workers: int = 1
    feature_space: str = "raw"

    def __post_init__(self):
        require_positive("data", self, ("ebm_num_train_jets", "ebm_num_test_jets", "num_train_jets", "num_test_jets",
                                        "jet_radius", "num_constituents", "num_workers"))
        if self.num_train_jets > self.ebm_num_train_jets:
            raise ValueError(f"data.num_train_jets ({self.num_train_jets}) exceeds the {self.ebm_num_train_jets} "
                             f"QCD training jets (data.ebm_num_train_jets)")
        if self.num_test_jets > self.ebm_num_test_jets:
            raise ValueError(f"data.num_test_jets ({self.num_test_jets}) exceeds the {self.ebm_num_test_jets} "
                             f"test jets per class of the ebm files (data.ebm_num_test_jets)")
        if self.feature_space not in FEATURE_SPACES:
            raise ValueError(f"data.feature_space must be one of {FEATURE_SPACES}, got {self.feature_space!r}")


def _ebm_files(config: DataConfig) -> dict[str, DataFile]:
    files = sample_files(config.ebm_data_dir, num_train_jets=config.ebm_num_train_jets,
                         num_test_jets=config.ebm_num_test_jets, generator_seed=config.ebm_generator_seed,
                         jet_radius=config.jet_radius, num_workers=config.num_workers)
    return {"qcd_train": files["train"], **{f"{p}_test": files[p] for p in TEST_PROCESSES}}


def data_files(config: DataConfig) -> dict[str, DataFile]:
    """Every file the experiment reads, in the order they are made (the training mix last)."""
    root = Path(config.data_dir)
    files = _ebm_files(config)
    files["w"] = jet_data_file(root / "w.h5", "w", config.num_train_jets + config.num_test_jets,
                               config.generator_seed, jet_radius=config.jet_radius,
                               num_workers=config.num_workers)
    files["top_train"] = jet_data_file(root / "top_train.h5", "top", config.num_train_jets,
                                       config.generator_seed + 1, jet_radius=config.jet_radius,
                                       num_workers=config.num_workers)
    sources = {"qcd": files["qcd_train"].path, "w": files["w"].path, "top": files["top_train"].path}
    attrs = {"process": ",".join(CLASSES), "num_jets": len(CLASSES) * config.num_train_jets,
             "seed": config.generator_seed, "jet_radius": config.jet_radius}
    mixed = root / f"train_qcd_w_top_{config.num_train_jets}.h5"
    files["train"] = DataFile(mixed, attrs, make=_mixer(sources, config, attrs, mixed))
    return files


def _mixer(sources: dict[str, Path], config: DataConfig, attrs: dict, path: Path):
    def make(progress: bool) -> None:
        print(f"mixing {config.num_train_jets} jets of each of {', '.join(CLASSES)} -> {path}")
        parts = [read_jets(sources[name], 0, config.num_train_jets) for name in CLASSES]
        order = np.random.default_rng(config.generator_seed).permutation(len(CLASSES) * config.num_train_jets)
        labels = np.repeat(np.arange(len(CLASSES), dtype=np.int32), config.num_train_jets)
        width = min(p.constituents.shape[1] for p in parts)
        write_jets(path, JetSample(
            np.concatenate([p.constituents[:, :width] for p in parts])[order],
            np.concatenate([p.mask[:, :width] for p in parts])[order],
            np.concatenate([p.jets for p in parts])[order], labels[order],
            attrs | {"classes": list(CLASSES), "sources": [str(sources[name]) for name in CLASSES]}))

    return make


def read_test_sets(config: DataConfig, paths: dict[str, Path]) -> dict[str, JetSample]:
    """``num_test_jets`` test jets of each of qcd, w, top and h_hh_4b (W: the rows after its training jets)."""
    n = config.num_test_jets
    tests = {p: read_jets(paths[f"{p}_test"], 0, n) for p in ("qcd", "top", "h_hh_4b")}
    tests["w"] = read_jets(paths["w"], config.num_train_jets, config.num_train_jets + n)
    return {p: tests[p] for p in (*CLASSES, "h_hh_4b")}
