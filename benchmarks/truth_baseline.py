"""Truth-vs-truth JetNet metrics: how far apart are two independent samples of one process?

A generator is indistinguishable from truth when its metrics fall inside this baseline.
Given two jaxebm HDF5 jet files of the same process, this computes W1M, W1P, FPD and KPD
(``jaxebm.metrics`` with the JetNet defaults, on the leading ``--num-particles`` constituents
as JetNet's 30-particle data sets do) and writes ``truth_baseline.json`` and ``.md``.

Usage:
    python -m benchmarks.truth_baseline data/qcd_a.h5 data/qcd_b.h5 [--num-jets 100000]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections.abc import Sequence

from jaxebm.metrics import (
    JetNetJets,
    MetricResult,
    fpd,
    fpd_kpd_features,
    jetnet_features,
    kpd,
    w1m,
    w1p,
)

RESULTS_DIR = pathlib.Path(__file__).parent / "results"
# Reported scale of each metric, as in the JetNet papers (value / scale is printed).
SCALES = {"w1m": 1e-3, "w1p": 1e-3, "fpd": 1e-3, "kpd": 1e-6}
# JetNet truth-vs-truth baselines (30 particles), in the units of SCALES.
PUBLISHED_BASELINES = {
    "JetNet gluon": {"w1p": 0.14, "w1m": 0.46, "fpd": 0.14, "kpd": 1.8},
    "JetNet light quark": {"w1p": 0.21, "w1m": 0.5, "fpd": 0.09, "kpd": -3.0},
    "JetNet top": {"w1p": 0.20, "w1m": 0.7, "fpd": 0.07, "kpd": -16.0},
}


def load_jets(path: str, num_jets: int | None, num_particles: int) -> tuple[JetNetJets, dict]:
    """Read up to ``num_jets`` jets, keep the leading ``num_particles`` constituents."""
    from jaxebm.data.io import read_jets

    sample = read_jets(path, start=0, stop=num_jets)
    jets = jetnet_features(sample.constituents[:, :num_particles], sample.mask[:, :num_particles])
    provenance = {
        "path": str(path),
        "num_jets": len(jets.mask),
        "process": sample.attrs.get("process"),
    }
    return jets, provenance


def _timed(metric_fn, *args, **kwargs) -> tuple[MetricResult, float]:
    start = time.perf_counter()
    result = metric_fn(*args, **kwargs)
    return result, time.perf_counter() - start


def truth_baseline(first: JetNetJets, second: JetNetJets, *, seed: int = 0) -> dict:
    """W1M, W1P, FPD, KPD of two samples: ``{metric: {"value", "error", "scaled_value", ...}}``."""
    features = [fpd_kpd_features(first), fpd_kpd_features(second)]
    runs = {
        "w1m": _timed(w1m, first, second, seed=seed),
        "w1p": _timed(w1p, first, second, seed=seed),
        "fpd": _timed(fpd, *features, seed=seed),
        "kpd": _timed(kpd, *features, seed=seed),
    }
    report = {}
    for name, (result, seconds) in runs.items():
        report[name] = {
            "value": result.value,
            "error": result.error,
            "scale": SCALES[name],
            "scaled_value": result.value / SCALES[name],
            "scaled_error": result.error / SCALES[name],
            "seconds": round(seconds, 2),
            "settings": dict(result.settings),
            "components": {key: list(pair) for key, pair in result.components.items()},
        }
    return report


def to_markdown(report: dict, inputs: Sequence[dict]) -> str:
    """A results table (ours and the published JetNet baselines) in the reported units."""
    names = list(SCALES)
    header = "| sample | " + " | ".join(f"{n.upper()} (x{SCALES[n]:.0e})" for n in names) + " |"
    lines = [
        "# Truth-vs-truth baseline",
        "",
        "Inputs: "
        + "; ".join(f"`{i['path']}` ({i['num_jets']} jets, {i['process']})" for i in inputs),
        "",
        header,
        "|" + " --- |" * (len(names) + 1),
        "| this run | "
        + " | ".join(
            f"{report[n]['scaled_value']:.3g} ± {report[n]['scaled_error']:.2g}" for n in names
        )
        + " |",
    ]
    for label, values in PUBLISHED_BASELINES.items():
        lines.append(f"| {label} | " + " | ".join(f"{values[n]:g}" for n in names) + " |")
    lines += ["", "Settings actually used (batch sizes are capped by the sample sizes):", ""]
    lines += [f"- {n.upper()}: {report[n]['settings']}, {report[n]['seconds']} s" for n in names]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="HDF5 jet file (jaxebm schema)")
    parser.add_argument("second", help="an independent HDF5 jet file of the same process")
    parser.add_argument("--num-jets", type=int, default=None, help="jets read per file (all)")
    parser.add_argument("--num-particles", type=int, default=30, help="leading constituents kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=pathlib.Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    first, first_info = load_jets(args.first, args.num_jets, args.num_particles)
    second, second_info = load_jets(args.second, args.num_jets, args.num_particles)
    report = truth_baseline(first, second, seed=args.seed)
    inputs = [first_info, second_info]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"inputs": inputs, "num_particles": args.num_particles, "metrics": report}
    (args.out_dir / "truth_baseline.json").write_text(json.dumps(payload, indent=2, default=str))
    (args.out_dir / "truth_baseline.md").write_text(to_markdown(report, inputs))
    print(to_markdown(report, inputs))
    return payload


if __name__ == "__main__":
    main()
