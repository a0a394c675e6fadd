"""Curves over training of the hybrid EBM-classifier: from the logged eval rows to the turnaround check."""
import json

import jax
import numpy as np
import pytest
from scipy.special import logsumexp

from jaxebm.experiments.ebm_clf import (
    CLASSES,
    CURVE_KEYS,
    SIGNALS,
    class_logits,
    curve_point,
    curve_summary,
    training_curve,
)
from jaxebm.experiments.ebm_clf_report import comparison_checks, mean_curve
from jaxebm.metrics import auc
from jaxebm.models import TransformerConfig, TransformerEnergy


def eval_row(step, energy_h, **others):
    return {"step": step, "event": "eval", **{k: 0.5 for k in CURVE_KEYS}, "energy_auc_h_hh_4b": energy_h, **others}


def test_training_curve_reads_eval_rows_in_step_order_and_a_rerun_step_once():
    rows = [{"step": 5, "loss": 1.0}, eval_row(10, 0.6), eval_row(20, 0.7), {"step": 20, "event": "resume"},
            eval_row(30, 0.9), eval_row(20, 0.75), {"step": 30, "loss": 0.5}]
    curve = training_curve(rows)
    assert curve["step"] == [10, 20, 30]
    assert curve["energy_auc_h_hh_4b"] == [0.6, 0.75, 0.9]
    assert set(curve) == {"step", *CURVE_KEYS}


def test_curve_summary_measures_the_drop_below_the_maximum():
    curve = training_curve([eval_row(100, 0.70), eval_row(200, 0.80), eval_row(300, 0.62)])
    summary = curve_summary(curve)
    assert summary["energy_auc_h_hh_4b_max"] == pytest.approx(0.80)
    assert summary["energy_auc_h_hh_4b_drop"] == pytest.approx(0.18)
    rising = curve_summary(training_curve([eval_row(100, 0.6), eval_row(200, 0.7)]))
    assert rising["energy_auc_h_hh_4b_drop"] == 0.0


def test_mean_curve_averages_seeds_at_shared_steps():
    a = {"step": [100, 200, 300], "top1": [0.5, 0.6, 0.7]}
    b = {"step": [100, 200], "top1": [0.7, 0.8]}
    mean = mean_curve([a, b])
    assert mean["step"] == [100, 200]
    np.testing.assert_allclose(mean["top1"], [0.6, 0.7])
    np.testing.assert_allclose(mean["top1_std"], [np.std([0.5, 0.7], ddof=1)] * 2)


def test_turnaround_and_target_checks():
    summary = {"num_seeds": 3, "mean": {"anomaly_energy.auc_top": 0.70, "anomaly_energy.auc_h_hh_4b": 0.78,
                                        "classification.top1": 0.80}}
    baseline = {"num_seeds": 3, "mean": {"classification.top1": 0.84}}
    steady = {"kappa1": {"step": [1, 2, 3], "energy_auc_top": [0.6, 0.7, 0.69],
                         "energy_auc_h_hh_4b": [0.7, 0.79, 0.78]}}
    turned = {"kappa1": {"step": [1, 2, 3], "energy_auc_top": [0.6, 0.7, 0.69],
                         "energy_auc_h_hh_4b": [0.5, 0.82, 0.60]}}  # ends above its start, below its peak
    status = lambda curves: {c: s for c, _, s in comparison_checks({"kappa1": summary, "baseline": baseline}, curves)}
    steady_status, turned_status = status(steady), status(turned)
    turnaround = next(c for c in steady_status if "turnaround" in c)
    assert steady_status[turnaround] == "met" and turned_status[turnaround] == "not met"
    assert status(None)[turnaround] == "not run"
    target = next(c for c in steady_status if ">= 0.65" in c)
    accuracy = next(c for c in steady_status if "within 0.05" in c)
    assert steady_status[target] == "met" and steady_status[accuracy] == "met"
    summary["mean"]["anomaly_energy.auc_h_hh_4b"] = 0.74
    baseline["mean"]["classification.top1"] = 0.86
    assert status(steady)[target] == "not met" and status(steady)[accuracy] == "not met"


def test_curve_point_scores_are_oriented_as_the_final_evaluation():
    """On a tiny hybrid: E(x) = -logsumexp g and -log p(QCD|x) = logsumexp g - g_QCD computed here by hand give
    the curve point's AUCs (a flipped sign would give 1 - AUC), and top-1 is the argmax accuracy."""
    model = TransformerEnergy(TransformerConfig(num_features=3, num_layers=1, d_model=8, num_heads=2, ff_dim=16,
                                                projector_sizes=(8,), dropout_rate=0.0, num_classes=3))
    rng = np.random.default_rng(0)
    inputs = {p: ((rng.standard_normal((40, 4, 3)) * (1 + i)).astype(np.float32), np.ones((40, 4), bool))
              for i, p in enumerate((*CLASSES, "h_hh_4b"))}
    params = model.init(jax.random.key(0), *inputs["qcd"])
    point = curve_point(model, params, inputs)
    logits = {p: class_logits(model, params, *xm) for p, xm in inputs.items()}
    labels = np.r_[np.zeros(40), np.ones(40)]
    for signal in SIGNALS:
        energy = {p: -logsumexp(logits[p], axis=1) for p in ("qcd", signal)}
        nll = {p: logsumexp(logits[p], axis=1) - logits[p][:, 0] for p in ("qcd", signal)}
        assert point[f"energy_auc_{signal}"] == pytest.approx(auc(labels, np.r_[energy["qcd"], energy[signal]]))
        assert point[f"class_nll_auc_{signal}"] == pytest.approx(auc(labels, np.r_[nll["qcd"], nll[signal]]))
        assert abs(point[f"class_nll_auc_{signal}"] - 0.5) > 0.02  # the orientation is tested, not a tie
    predicted = np.concatenate([np.argmax(logits[p], axis=1) for p in CLASSES])
    assert point["top1"] == pytest.approx(np.mean(predicted == np.repeat(np.arange(3), 40)))


def test_curves_script_averages_seeds_and_names_what_changed(tmp_path):
    from experiments.ebm_clf_curves import main

    def write_run(root, lr, h_values, model_extra=None):
        for seed, values in enumerate(h_values):
            run = root / f"seed_{seed}"
            run.mkdir(parents=True)
            config = {"cd": {"lr": lr, "alpha": 0.1}, "run": {"num_steps": 9},
                      "model": {"num_classes": 3, **(model_extra or {})}}
            (run / "config.json").write_text(json.dumps(config))
            rows = [eval_row(100 * (i + 1), v) for i, v in enumerate(values)] + [{"step": 50, "loss": 1.0}]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    write_run(tmp_path / "a", 1e-3, [[0.6, 0.8]])
    # b records a field that a's older record lacks, at its default: not a change
    write_run(tmp_path / "b", 3e-4, [[0.6, 0.7], [0.8, 0.9]], model_extra={"compute_dtype": "float32"})
    main(["--out", str(tmp_path / "out"), f"fast={tmp_path / 'a'}", f"slow={tmp_path / 'b'}"])
    stored = json.loads((tmp_path / "out" / "curves.json").read_text())
    assert stored["fast"]["changed"] == {} and stored["slow"]["changed"] == {"cd.lr": 3e-4}
    np.testing.assert_allclose(stored["slow"]["curve"]["energy_auc_h_hh_4b"], [0.7, 0.8])
    assert stored["fast"]["summary"]["energy_auc_h_hh_4b_drop"] == 0.0
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
    assert "cd.lr = 0.0003" in (tmp_path / "out" / "curves.md").read_text()


def test_energy_split_sums_to_the_energy_and_moves_only_the_free_part_under_a_logit_shift():
    from experiments.ebm_clf_energy_spread import by_predicted_class, energy_parts
    logits = np.random.default_rng(0).normal(size=(50, 3)) * 2.0
    parts = energy_parts(logits)
    np.testing.assert_allclose(parts["energy"], -logsumexp(logits, axis=1), rtol=1e-12)
    np.testing.assert_allclose(parts["logit_mean"] + parts["log_prob_mean"], parts["energy"], rtol=1e-12)
    log_probs = logits - logsumexp(logits, axis=1, keepdims=True)
    np.testing.assert_allclose(parts["log_prob_mean"], log_probs.mean(axis=1), rtol=1e-12)
    shift = np.linspace(-1.0, 2.0, 50)[:, None]  # the direction the cross-entropy cannot see
    shifted = energy_parts(logits + shift)
    np.testing.assert_allclose(shifted["log_prob_mean"], parts["log_prob_mean"], atol=1e-12)
    np.testing.assert_allclose(shifted["logit_mean"], parts["logit_mean"] - shift[:, 0], atol=1e-12)
    rows = by_predicted_class(np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, 5.0]]))
    assert (rows["fraction_qcd"], rows["fraction_w"], rows["fraction_top"]) == (0.25, 0.0, 0.75)
    assert np.isnan(rows["energy_w"])
    expected_top = -np.mean([logsumexp([0.0, 0.0, v]) for v in (3.0, 1.0, 5.0)])
    np.testing.assert_allclose(rows["energy_top"], expected_top, rtol=1e-12)


def test_over_training_rows_read_each_part_and_the_chains_balance_with_its_sign(tmp_path):
    from experiments.ebm_clf_energy_spread import over_training_rows, write_over_training

    def result(step, shift):
        processes = {s: {f"{part}_auc_vs_qcd": base + shift for part, base in
                         (("energy", 0.6), ("logit_mean", 0.4), ("log_prob_mean", 0.7))} for s in SIGNALS}
        data = {f"energy_{c}": 0.1 * k for k, c in enumerate(CLASSES)}
        chains = {f"energy_{c}": 0.1 * k + shift for k, c in enumerate(CLASSES)}
        return {"step": step, "processes": processes, "training_negatives": {"data": data, "chains": chains}}

    rows = over_training_rows([result(300, 0.0), result(600, 0.05)])
    assert [r["step"] for r in rows] == [300, 600]
    np.testing.assert_allclose([rows[1][f"logit_mean_auc_{s}"] for s in SIGNALS], 0.45)
    np.testing.assert_allclose([rows[1][f"log_prob_mean_auc_{s}"] for s in SIGNALS], 0.75)
    np.testing.assert_allclose([rows[1][f"gap_{c}"] for c in CLASSES], -0.05)  # data below the chains: negative
    np.testing.assert_allclose([rows[0][f"gap_{c}"] for c in CLASSES], 0.0, atol=1e-12)
    write_over_training(tmp_path, tmp_path / "seed_0", rows)
    assert (tmp_path / "over_training.png").stat().st_size > 0
    assert "| 600 |" in (tmp_path / "over_training.md").read_text()
