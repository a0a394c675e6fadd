"""The EBM experiment end to end on the seconds-scale `smoke` preset: data, training, generation,
evaluation, report, and resumption of a finished run."""
import json

import numpy as np

from experiments import ebm_jets


def test_smoke_preset_writes_a_complete_run_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["--preset", "smoke", "--out", str(out), "--set", f"data.data_dir={json.dumps(str(tmp_path / 'data'))}"]
    ebm_jets.main(args)
    seed_dir = out / "seed_0"
    results = json.loads((seed_dir / "results.json").read_text())
    for section in ("generated", "noise_init", "truth_vs_truth", "anomaly_energy", "anomaly_score_norm"):
        assert all(np.isfinite(v) for v in results[section].values()), section
    assert 0.0 <= results["anomaly_energy"]["auc_top"] <= 1.0
    assert {"observables.png", "roc.png", "energies.png", "mass_sculpting.png", "average_images.png",
            "training.png"} <= {p.name for p in (seed_dir / "plots").glob("*.png")}
    assert "| AUC top, E(x) |" in (out / "report.md").read_text()
    data = json.loads((out / "data_summary.json").read_text())
    assert data["top"]["mass_q16_50_84"][1] > data["qcd"]["mass_q16_50_84"][1] + 40  # the top mass peak
    assert (out / "plots" / "data_mass.png").exists()
    rows = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "eval" for r in rows) and rows[-1]["step"] == 20

    summary_before = (out / "summary.json").read_text()
    ebm_jets.main(args)  # a finished seed is read back, not retrained
    assert (out / "summary.json").read_text() == summary_before
    assert len((seed_dir / "metrics.jsonl").read_text().splitlines()) == len(rows)
