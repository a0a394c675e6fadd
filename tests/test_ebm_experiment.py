"""The EBM experiment end to end on the seconds-scale `smoke` preset: data, training, generation,
evaluation, report, resumption of a finished run, extension of a run, learning curves."""
import json

import numpy as np
import pytest

from experiments import ebm_jets, ebm_learning_curve
from jaxebm.data.io import read_jets
from jaxebm.experiments import ebm, learning_curve
from jaxebm.experiments.ebm_report import target_checks


def test_smoke_preset_writes_a_complete_run_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["--preset", "smoke", "--out", str(out), "--set", f"data.data_dir={json.dumps(str(tmp_path / 'data'))}"]
    ebm_jets.main(args)
    seed_dir = out / "seed_0"
    results = json.loads((seed_dir / "results.json").read_text())
    for section in ("generated", "noise_init", "truth_vs_truth", "anomaly_energy", "anomaly_score_norm"):
        assert all(np.isfinite(v) for v in results[section].values()), section
    # 20 CD iterations already pull the chains towards QCD jets: a broken model (flipped loss, chains
    # that ignore the energy) ends no closer to the test jets than its noise start.
    generated, noise = results["generated"], results["noise_init"]
    assert generated["distance"] < noise["distance"] - 3 * np.hypot(generated["distance_err"], noise["distance_err"])
    assert results["truth_vs_truth"]["distance"] < generated["distance"]
    assert results["feature_space"] == "raw"
    samples = read_jets(seed_dir / "samples.h5")  # the generated jets pass the reader's checks
    np.testing.assert_array_equal(samples.jets[:, 4], samples.mask.sum(axis=1))
    assert {"observables.png", "roc.png", "energies.png", "mass_sculpting.png", "average_images.png",
            "training.png"} <= {p.name for p in (seed_dir / "plots").glob("*.png")}
    assert "| AUC top, E(x) |" in (out / "report.md").read_text()
    assert "## Against the paper, in the paper's conventions" in (out / "report.md").read_text()
    assert "## Targets of the CPU preset" in (out / "report.md").read_text()
    assert "same for random 10% subsets" in (seed_dir / "report.md").read_text()
    data = json.loads((out / "data_summary.json").read_text())
    assert data["top"]["mass_q16_50_84"][1] > data["qcd"]["mass_q16_50_84"][1] + 40  # the top mass peak
    assert (out / "plots" / "data_mass.png").exists()
    rows = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "eval" for r in rows) and rows[-1]["step"] == 20

    summary_before = (out / "summary.json").read_text()
    ebm_jets.main(args)  # a finished seed is read back, not retrained
    assert (out / "summary.json").read_text() == summary_before
    assert len((seed_dir / "metrics.jsonl").read_text().splitlines()) == len(rows)

    # --extend continues a finished run from its last checkpoint (its old results kept aside); the
    # learning curve then has the new evaluations, one row per evaluated step.
    ebm_jets.main(args + ["--extend", "--set", "run.num_steps=30"])
    assert (seed_dir / "results.step20.json").exists()
    rows = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" and r["step"] == 20 for r in rows) and rows[-1]["step"] == 30
    eval_steps = sorted({r["step"] for r in rows if r.get("event") == "eval"})
    ebm_learning_curve.main([f"smoke={out}/seed_*", "--out", str(tmp_path / "curves")])
    curves = json.loads((tmp_path / "curves" / "learning_curve.json").read_text())
    assert curves["curves"]["smoke"][str(seed_dir)]["step"] == eval_steps and 30 in eval_steps
    assert set(curves["levels"]) == {"noise_init", "truth_vs_truth"}
    table = (tmp_path / "curves" / "learning_curve.md").read_text()
    assert all(f"| smoke | {step} | 1 |" in table for step in eval_steps)
    final = curves["final"]["smoke"]
    assert final["best_step"][0] in eval_steps
    assert final["anomaly_energy.auc_top"] == [json.loads((seed_dir / "results.json").read_text())
                                               ["anomaly_energy"]["auc_top"]]
    assert "## Test sets at the selected checkpoint" in table and "| smoke | 1 |" in table
    assert (tmp_path / "curves" / "learning_curve.png").stat().st_size > 0


def test_learning_curve_rejects_bad_variant_specs(tmp_path):
    with pytest.raises(ValueError, match="LABEL=DIRECTORY_GLOB"):
        learning_curve.parse_variants(["no-equals-sign"])
    with pytest.raises(FileNotFoundError, match="no directory matches"):
        learning_curve.parse_variants([f"x={tmp_path}/missing_*"])
    (tmp_path / "seed_0").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        learning_curve.read_curve(tmp_path / "seed_0")


def test_target_checks_compare_the_mean_with_each_target():
    mean = {"generated.jsd_pt": 0.02, "noise_init.jsd_pt": 0.25, "generated.jsd_mass": 0.03, "noise_init.jsd_mass": 0.16,
            "anomaly_energy.auc_top": 0.65, "anomaly_energy.auc_h_hh_4b": 0.69,
            "anomaly_energy.sculpt_jsd_keep0.5": 0.002, "anomaly_energy.sculpt_random_jsd_q95_keep0.5": 0.003,
            "anomaly_energy.sculpt_jsd_keep0.1": 0.05, "anomaly_energy.sculpt_random_jsd_q95_keep0.1": 0.02}
    assert [met for _, _, met in target_checks(mean)] == [True, False, True, False, True, False]


def test_train_fraction_keeps_a_random_subset_and_the_same_validation_jets():
    full_train, full_val = ebm.train_val_rows(1000, ebm.DataConfig(), seed=3)
    train, val = ebm.train_val_rows(1000, ebm.DataConfig(train_fraction=0.25), seed=3)
    np.testing.assert_array_equal(val, full_val)
    assert len(train) == round(0.25 * len(full_train)) and set(train) <= set(full_train)
    assert train.max() > 800  # drawn from the whole file, not its first rows
    for bad in ({"train_fraction": 0.0}, {"train_fraction": 1.5}, {"val_fraction": 1.0}):
        with pytest.raises(ValueError, match="must be in"):
            ebm.DataConfig(**bad)
