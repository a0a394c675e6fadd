"""The NAE energy-shift analysis (experiments/nae_energy_shift.py): image spread and the per-seed numbers."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from experiments.nae_energy_shift import brightest_pixel, image_spread, shift_row, write_outputs


def test_image_spread_counts_the_equally_lit_pixels_whatever_the_intensity():
    images = np.zeros((3, 4, 4))
    images[0, 1, 2] = 0.3                      # one lit pixel
    images[1, :2, :2] = 5.0                    # four equal pixels
    images[2, 0, :2] = [3.0, 1.0]              # 1 / (0.75^2 + 0.25^2) = 1.6
    np.testing.assert_allclose(image_spread(images), [1.0, 4.0, 1.6], rtol=1e-12)
    np.testing.assert_allclose(image_spread(7.0 * images), image_spread(images), rtol=1e-12)
    np.testing.assert_allclose(brightest_pixel(images), [0.3, 5.0, 3.0])
    with pytest.raises(ValueError, match="positive sum"):
        image_spread(np.zeros((1, 4, 4)))


def test_shift_row_reads_each_stage_on_the_background_and_the_ratio_nae_over_ae():
    rng = np.random.default_rng(0)
    spread = {"background": rng.uniform(5, 50, 400), "signal": rng.uniform(2, 30, 300)}
    brightest = {role: 1.0 / s for role, s in spread.items()}
    ae = {role: 1.0 / s for role, s in spread.items()}               # narrow images reconstruct worse
    nae = {"background": 1e-3 * spread["background"], "signal": 2.0 * ae["signal"]}  # the wide raised most
    row = shift_row({"ae": ae, "nae": nae}, {"spread": spread, "brightest": brightest})
    assert row["spearman_ae_spread_background"] == pytest.approx(-1.0)
    assert row["spearman_nae_spread_background"] == pytest.approx(1.0)
    assert row["median_ratio_signal"] == pytest.approx(2.0)
    assert row["median_ratio_background"] == pytest.approx(np.median(1e-3 * spread["background"] ** 2))
    narrower = np.mean(spread["signal"][:, None] < spread["background"][None, :])  # P(signal narrower), ~0.76
    assert row["auc_ae"] == pytest.approx(narrower) and row["auc_spread"] == pytest.approx(1.0 - narrower)
    assert row["auc_ae"] == pytest.approx(row["auc_brightest"])  # the same ranking
    assert spearmanr(nae["signal"], spread["signal"]).statistic == pytest.approx(-1.0)  # not the background's


def test_write_outputs_one_line_per_seed(tmp_path):
    keys = ["auc_ae", "auc_nae", "auc_spread", "auc_brightest", "spearman_ae_spread_background",
            "spearman_nae_spread_background", "median_ratio_background", "median_ratio_signal"]
    rows = [{"label": "tag_dark_n0.3", "seed_dir": f"s{s}", **dict.fromkeys(keys, 0.5), "auc_nae": 0.65}
            for s in range(2)]
    write_outputs(tmp_path, rows)
    text = (tmp_path / "energy_shift.md").read_text()
    assert text.count("| tag_dark_n0.3 |") == 2 and "0.650" in text
    assert (tmp_path / "energy_shift.png").stat().st_size > 0
