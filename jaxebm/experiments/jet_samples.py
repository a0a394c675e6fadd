"""The R = 1.0 Pythia jet samples that the EBM and the EBM-classifier experiments share (the neutral
home of a data specification two systems read): QCD training jets and QCD / top / H -> hh -> 4b test jets,
pT 550-650 GeV, |eta| < 2, each file made by Pythia 8 when missing and reused only when its attributes match.

    files = sample_files("runs/data/ebm_r10", num_train_jets=30_000, num_test_jets=5_000, generator_seed=101,
                         jet_radius=1.0, num_workers=2)      # {"train": DataFile, "qcd": ..., "top": ..., ...}
"""
from __future__ import annotations

from pathlib import Path

from jaxebm.data.generate import GenerationConfig as JetGenerationConfig, generate_jets
from jaxebm.runs import DataFile

__all__ = ["JET_PT_WINDOW", "TEST_PROCESSES", "data_paths", "jet_data_file", "sample_files"]


TEST_PROCESSES = ("qcd", "top", "h_hh_4b")


JET_PT_WINDOW = (550.0, 650.0)  # GeV, the generator's default selection (|eta| < 2)


def data_paths(data_dir: str | Path) -> dict[str, Path]:
    """``{"train": <data_dir>/qcd_train.h5, process: <data_dir>/<process>_test.h5, ...}``."""
    root = Path(data_dir)
    return {"train": root / "qcd_train.h5", **{p: root / f"{p}_test.h5" for p in TEST_PROCESSES}}


def jet_data_file(path: Path, process: str, num_jets: int, seed: int, *, jet_radius: float,
                  num_workers: int) -> DataFile:
    """A Pythia 8 jet file (pT in `JET_PT_WINDOW`, |eta| < 2, 100 hardest constituents) as a `DataFile`:
    made when missing, reused only when its process, R, seed, size and pT window match."""
    generation = JetGenerationConfig(
        process=process, num_jets=num_jets, seed=seed, num_workers=min(num_workers, num_jets), jet_radius=jet_radius,
        jet_pt_min=JET_PT_WINDOW[0], jet_pt_max=JET_PT_WINDOW[1], max_constituents=100)
    attrs = {key: getattr(generation, key) for key in ("process", "jet_radius", "seed", "num_jets", "jet_pt_min",
                                                       "jet_pt_max")}
    return DataFile(path, attrs, make=_generator(generation, path))


def _generator(generation: JetGenerationConfig, path: Path):
    def make(progress: bool) -> None:
        print(f"generating {generation.num_jets} {generation.process} jets -> {path}")
        generate_jets(generation, out_path=path, progress=progress)

    return make


def sample_files(data_dir: str | Path, *, num_train_jets: int, num_test_jets: int, generator_seed: int,
                 jet_radius: float, num_workers: int) -> dict[str, DataFile]:
    """The QCD training file and a test file per process of `TEST_PROCESSES` (seeds ``generator_seed`` + 0,
    1, 2, 3), as `data_paths` names them."""
    jobs = {"train": ("qcd", num_train_jets, 0), **{p: (p, num_test_jets, i + 1) for i, p in enumerate(TEST_PROCESSES)}}
    paths = data_paths(data_dir)
    return {name: jet_data_file(paths[name], process, num_jets, generator_seed + offset, jet_radius=jet_radius,
                                num_workers=num_workers)
            for name, (process, num_jets, offset) in jobs.items()}
