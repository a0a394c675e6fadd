"""Every plot function renders a non-trivial PNG; a failed write keeps the previous one."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxebm import plots
from jaxebm.metrics import roc_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def test_observable_histograms(tmp_path, rng):
    real = {
        "pt": rng.normal(600, 20, 2_000),
        "mass": rng.gamma(4, 20, 2_000),
        "tau21": rng.random(2_000),
    }
    gen = {
        "pt": rng.normal(605, 22, 1_500),
        "mass": rng.gamma(4, 21, 1_500),
        "tau21": rng.random(1_500),
    }
    path = plots.plot_observable_histograms(real, gen, tmp_path / "obs.png")
    assert path == tmp_path / "obs.png"
    assert_png(path)


def test_constituent_features(tmp_path, rng):
    particles = rng.normal(size=(100, 10, 3))
    mask = rng.random((100, 10)) < 0.7
    path = plots.plot_constituent_features(
        particles, mask, particles * 1.1, mask, tmp_path / "c.png"
    )
    assert_png(path)


def test_roc_curves(tmp_path, rng):
    labels = np.r_[np.ones(500), np.zeros(500)]
    scores = rng.normal(size=1_000) + labels
    curves = {"EBM": roc_curve(labels, scores), "perfect": roc_curve(labels, labels)}
    assert_png(plots.plot_roc_curves(curves, tmp_path / "roc.png"))


def test_score_distributions(tmp_path, rng):
    scores = {"QCD": rng.normal(size=500), "top": rng.normal(1, 1, 500)}
    assert_png(plots.plot_score_distributions(scores, tmp_path / "s.png", xlabel="E(x)"))


def test_mass_sculpting(tmp_path, rng):
    mass = rng.gamma(4, 20, 5_000)
    score = rng.normal(size=5_000) + mass / 100
    assert_png(plots.plot_mass_sculpting(mass, score, tmp_path / "sculpt.png"))


def test_average_images(tmp_path, rng):
    images = {"QCD": rng.random((20, 40, 40)) ** 4, "top": np.zeros((20, 40, 40))}
    images["top"][:, 18:22, 18:22] = 1.0
    assert_png(plots.plot_average_images(images, tmp_path / "nested" / "img.png"))


def test_training_curves(tmp_path):
    rows = [{"step": s, "loss": 1 / (s + 1), "e_pos": -s, "note": "x"} for s in range(50)]
    rows.append({"step": 50, "auc": 0.7})
    assert_png(plots.plot_training_curves(rows, tmp_path / "curves.png"))


def _savefig_writes_half_then_fails(monkeypatch, previous: bytes) -> None:
    """Make every figure save write half of ``previous`` to its target, then fail as a full disk would."""
    def write_half_then_fail(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(previous[: len(previous) // 2])
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(Figure, "savefig", write_half_then_fail)


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    rows = [{"step": s, "loss": 1 / (s + 1)} for s in range(20)]
    path = plots.plot_training_curves(rows, tmp_path / "curves.png")
    previous = path.read_bytes()
    _savefig_writes_half_then_fails(monkeypatch, previous)
    with pytest.raises(OSError, match="No space left"):
        plots.plot_training_curves(rows[:5], path)
    assert path.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_a_failed_learning_curve_write_keeps_the_previous_figure(tmp_path, monkeypatch):
    from jaxebm.experiments.learning_curve import plot_learning_curves

    curve = {"step": [10, 20], "val_jsd_mass": [0.3, 0.2], "val_jsd_pt": [0.3, 0.2],
             "val_jsd_m_over_pt": [0.3, 0.2], "val_distance": [2.0, 1.0], "val_distance_err": [0.1, 0.1]}
    path = tmp_path / "learning_curve.png"
    plot_learning_curves({"smoke": {"run": curve}}, {}, path)
    previous = path.read_bytes()
    _savefig_writes_half_then_fails(monkeypatch, previous)
    with pytest.raises(OSError, match="No space left"):
        plot_learning_curves({"smoke": {"run": curve}}, {}, path)
    assert path.read_bytes() == previous and [p.name for p in tmp_path.iterdir()] == ["learning_curve.png"]
