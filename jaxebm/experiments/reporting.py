"""Report pieces shared by the experiments (no system's own): the data summary of jet files, flat result
keys, links to the seeds' reports and the provenance table of a run."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jaxebm.data.io import read_jets
from jaxebm.data.observables import nsubjettiness, tau_ratios
from jaxebm.data.preprocess import constituent_pt_eta_phi
from jaxebm.evaluation import jet_observables
from jaxebm.plots import plot_score_distributions
from jaxebm.runs.records import atomic_write_text

__all__ = ["DATA_PLOTS", "flatten", "provenance_lines", "sample_observables", "seed_report_links",
           "write_data_summary"]


def flatten(results: dict) -> dict[str, float]:
    """``{"generated": {"jsd_pt": x}}`` -> ``{"generated.jsd_pt": x}`` (numbers only)."""
    flat = {}
    for section, values in results.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": float(v) for k, v in values.items()})
        elif isinstance(values, int | float):
            flat[section] = float(values)
    return flat


DATA_PLOTS = {"mass": "jet mass [GeV]", "pt": "jet pT [GeV]", "multiplicity": "constituents",
              "tau21": "tau_21", "tau32": "tau_32"}


def sample_observables(path: Path, num_jets: int, jet_radius: float) -> dict[str, np.ndarray]:
    """Jet pT, mass, multiplicity, tau_21, tau_32 of the first ``num_jets`` jets of a schema file."""
    sample = read_jets(path, 0, num_jets)
    observables = jet_observables(sample.constituents, sample.mask)
    pt, eta, phi = constituent_pt_eta_phi(sample.constituents, sample.mask)
    observables["tau21"], observables["tau32"] = tau_ratios(nsubjettiness(pt, eta, phi, sample.mask, R=jet_radius))
    return observables


def write_data_summary(out_dir: Path, paths: dict[str, Path], *, num_jets: int, jet_radius: float) -> dict:
    """Per-sample observable plots (``plots/data_<obs>.png``) and ``data_summary.json`` (counts, quantiles)."""
    observables = {name: sample_observables(path, num_jets, jet_radius) for name, path in paths.items()}
    for key, label in DATA_PLOTS.items():
        plot_score_distributions({name: obs[key] for name, obs in observables.items()},
                                 out_dir / "plots" / f"data_{key}.png", xlabel=label)
    summary = {name: {"num_jets": int(len(obs["mass"])),
                      **{f"{key}_q16_50_84": np.percentile(obs[key], [16, 50, 84]).round(4).tolist()
                         for key in DATA_PLOTS}}
               for name, obs in observables.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "data_summary.json", json.dumps(summary, indent=2))
    return summary


def seed_report_links(seeds, seed_dirs: list[Path], out_dir: Path) -> str:
    """A markdown line linking each seed's ``report.md``, relative to ``out_dir``."""
    return "Per-seed reports: " + ", ".join(f"[seed {s}]({os.path.relpath(d / 'report.md', out_dir)})"
                                            for s, d in zip(seeds, seed_dirs))


def provenance_lines(record: dict | None) -> list[str]:
    """Markdown lines: what ran (versions, commit, devices, creation time) and on which data files."""
    if record is None:
        return ["No provenance record (`run.json`): the run predates it."]
    devices = f"{', '.join(record['devices'])} ({', '.join(record.get('device_kinds', []))})"
    lines = [f"Created {record['created']} by jaxebm {record['jaxebm']} (git {record['git_commit'] or 'unknown'}), "
             f"jax {record['jax']} / jaxlib {record['jaxlib']}, Python {record['python']} on {record['host']}; "
             f"devices: {devices}. Later commands on the run: `history.jsonl`.", "",
             "| data file | jets | process | R | seed | pT window [GeV] | size [MB] |",
             "| --- | ---: | --- | ---: | ---: | --- | ---: |"]
    for name, data in record["data"].items():
        attrs = data["attrs"]
        lines.append(f"| {name}: `{data['path']}` | {data['num_jets']} | {attrs.get('process', '?')} | "
                     f"{attrs.get('jet_radius', '?')} | {attrs.get('seed', '?')} | {attrs.get('jet_pt_min', '?')}-"
                     f"{attrs.get('jet_pt_max', '?')} | {data['size_bytes'] / 1e6:.1f} |")
    return lines
