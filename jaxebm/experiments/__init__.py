"""The experiments the runner (`jaxebm.runs`) knows, by name, and their TOML presets.

Each experiment is a module defining ``EXPERIMENT`` (a `jaxebm.runs.Experiment`), with its presets in
``configs/<name>/*.toml``:

  ebm   the EBM for jets (Cheng & Courville 2023): `jaxebm.experiments.ebm`; presets cpu, paper, smoke.
  ebm_clf  the hybrid EBM-classifier on QCD / W / top (same paper, section 3.2): `jaxebm.experiments.ebm_clf`;
        presets cpu, paper, smoke (kappa = 1; variants by override, `ebm_clf.VARIANTS`).
  nae   the normalized autoencoder on jet images (seed 002): `jaxebm.experiments.nae`; presets cpu, paper,
        smoke; ``data.direction`` tag_top / tag_qcd / tag_dark.
  jetnet_bench  ConVAE, ConVAE + NF, NF (seed 004) and the EBM on JetNet-like jets with the JetNet metrics:
        `jaxebm.experiments.jetnet_bench`; presets cpu, paper, smoke.

    experiment = get("ebm")
    config = load("ebm", "cpu", ["run.num_steps=200"])      # preset name or a .toml path, then overrides
    config = load_recorded("ebm", Path("runs/demo"), ["run.num_steps=2400"])   # a run's own config
"""
from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Sequence

from jaxebm.config import ConfigError, apply_overrides, from_dict, load_config

__all__ = ["DESCRIPTIONS", "EXPERIMENTS", "for_run", "get", "load", "load_recorded", "preset_path", "presets"]

EXPERIMENTS = {"ebm": "jaxebm.experiments.ebm", "nae": "jaxebm.experiments.nae",
               "jetnet_bench": "jaxebm.experiments.jetnet_bench", "ebm_clf": "jaxebm.experiments.ebm_clf"}
DESCRIPTIONS = {  # one line each, for `jaxebm train --help` (read without importing the experiments)
    "ebm": "energy-based model of QCD jets: generation and anomaly detection (Cheng & Courville 2023)",
    "nae": "normalized autoencoder on jet images, top / QCD / dark-jet tagging",
    "jetnet_bench": "ConVAE, ConVAE + NF, NF and the EBM on JetNet-like jets, with the JetNet metrics",
    "ebm_clf": "hybrid EBM-classifier on QCD / W / top jets (Cheng & Courville 2023, section 3.2)",
}
_CONFIG_DIRS = {name: Path(__file__).parent / "configs" / name for name in EXPERIMENTS}


def _closest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def get(name: str):
    """The `jaxebm.runs.Experiment` called ``name``; `ConfigError` listing the known ones otherwise."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}{_closest(name, list(EXPERIMENTS))}; "
                          f"experiments: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name]).EXPERIMENT


def presets(name: str) -> list[str]:
    """Preset names of experiment ``name`` (its ``configs`` directory, read without importing the experiment)."""
    if name not in EXPERIMENTS:
        get(name)  # raises naming the known experiments
    return sorted(path.stem for path in _CONFIG_DIRS[name].glob("*.toml"))


def preset_path(name: str, preset: str) -> Path:
    """The TOML file of ``preset``: a preset name of experiment ``name``, or a path ending in ``.toml``."""
    if preset.endswith(".toml"):
        if not Path(preset).is_file():
            raise ConfigError(f"preset file {preset!r} does not exist")
        return Path(preset)
    known = presets(name)
    if preset not in known:
        raise ConfigError(f"unknown preset {preset!r} for experiment {name!r}{_closest(preset, known)}; "
                          f"presets: {', '.join(known)} (or a path to a .toml file)")
    return get(name).presets / f"{preset}.toml"


def load(name: str, preset: str, overrides: Sequence[str] = ()):
    """Experiment ``name``'s config from ``preset`` with ``section.key=value`` overrides applied."""
    return load_config(get(name).config_class, preset_path(name, preset), overrides)


def load_recorded(name: str, run_dir: Path, overrides: Sequence[str] = ()):
    """The config recorded in ``run_dir/config.json`` with overrides applied (to resume or extend a run
    without repeating its settings)."""
    from jaxebm.runs.records import read_json

    recorded = read_json(run_dir / "config.json")
    return from_dict(get(name).config_class, apply_overrides(recorded, overrides))


def for_run(path: Path):
    """The experiment of a run (or seed) directory: named in its ``run.json``, else the one whose config
    class reads the recorded ``config.json``."""
    from jaxebm.runs.records import read_json

    run_dir = path.parent if (path / "results.json").exists() or (path / "checkpoints").is_dir() else path
    if (run_dir / "run.json").is_file():
        return get(read_json(run_dir / "run.json")["experiment"])
    config_path = next((p for p in (run_dir / "config.json", path / "config.json") if p.is_file()), None)
    if config_path is None:
        raise ConfigError(f"{path} is not a run directory (no run.json or config.json)")
    recorded = read_json(config_path)
    for name in EXPERIMENTS:
        try:
            from_dict(get(name).config_class, recorded)
        except ConfigError:
            continue
        return get(name)
    raise ConfigError(f"{config_path} fits no experiment's config ({', '.join(EXPERIMENTS)})")
