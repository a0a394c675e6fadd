"""The JetNet-style benchmark end to end on its seconds-scale `smoke` preset: Pythia JetNet-like jets, the
four models trained through the runner, the JetNet metrics against the truth floor, reports, and a rerun
that reads the finished seed back instead of training again."""
import json

import numpy as np

from experiments import jetnet_bench
from jaxebm import experiments
from jaxebm.data.io import read_jets
from jaxebm.runs.trained import sample_run

MODELS = ("truth", "convae", "convae_nf", "nf", "ebm", "ebm_flow_start")
METRICS = ("w1m", "w1p", "w1efp", "fpd", "kpd", "cov", "mmd")


def test_smoke_preset_writes_a_complete_table_and_reads_finished_seeds_back(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "smoke", "--out", str(out), "--set", f"data.data_dir={json.dumps(str(tmp_path / 'data'))}"]
    jetnet_bench.main(args)
    log = capsys.readouterr().out  # each network is named as it trains
    for network in ("convae_gen", "convae_rec", "latent_flow", "particle_flow"):
        assert f"  {network}: training " in log, network
    assert "  ebm: training to CD iteration " in log

    seed_dir = out / "seed_0"
    results = json.loads((seed_dir / "results.json").read_text())
    assert set(results["metrics"]) == set(MODELS)
    for model in MODELS:
        for metric in METRICS:
            value, error = results["metrics"][model][metric]
            assert np.isfinite(value) and np.isfinite(error), (model, metric)
    # Truth against test is the floor: two samples of the same jets are closer in jet mass and particle
    # features than any model trained for a few steps (a metric path that mixes up real and generated
    # jets, or compares a sample with itself, breaks this).
    for metric in ("w1m", "w1p"):
        floor = results["metrics"]["truth"][metric][0]
        assert all(results["metrics"][m][metric][0] > floor for m in MODELS[1:]), metric
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0] and set(summary["mean"]) == set(MODELS)
    assert (out / "report.md").read_text().count("| truth") >= 1
    assert (seed_dir / "plots" / "observables.png").stat().st_size > 10_000

    modified = (seed_dir / "results.json").stat().st_mtime_ns
    jetnet_bench.main(args)  # a finished seed is read back, not retrained
    assert (seed_dir / "results.json").stat().st_mtime_ns == modified

    written = sample_run(experiments.get("jetnet_bench"), out, 8, out=tmp_path / "sampled.h5", progress=False)
    assert read_jets(written).attrs["model"] == "ebm" and len(read_jets(written).jets) == 8
