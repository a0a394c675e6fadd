"""The NAE experiment end to end on its seconds-scale `smoke` preset (Pythia jet images, AE phase, NAE
phase, selection, evaluation, plots) through the shared runner, and the selected checkpoint read back."""
import json

import numpy as np
import pytest

from jaxebm import experiments
from jaxebm.experiments import nae as nae_experiment
from jaxebm.experiments import nae_data
from jaxebm.runs import RunOptions, SeedJob, run_experiment

PLOTS = ("energy_ae.png", "energy_nae.png", "images.png", "latent_landscape.png", "roc.png", "training.png")


def test_smoke_run_and_its_selected_checkpoint_reproduce_the_stored_scores(tmp_path):
    small_images = ["data.num_pixels=16", "model.image_size=16", "model.channels=4", "model.hidden_dim=16"]
    # The run ends at step 18, two steps after its last evaluation (16): the selected checkpoint is never the
    # newest, so selecting "the newest" instead would not reproduce the stored scores.
    ends_past_the_last_evaluation = ["run.num_steps=18"]
    config = experiments.load("nae", "smoke", [f"data.data_dir={json.dumps(str(tmp_path / 'data'))}", *small_images,
                                               *ends_past_the_last_evaluation])
    out = tmp_path / "run"
    run_experiment(experiments.get("nae"), config, out, RunOptions(progress=False, say=lambda line: None))

    seed_dir = out / "seed_0"
    results = json.loads((seed_dir / "results.json").read_text())
    assert results["ae_steps"] == config.run.ae_steps and results["num_steps"] == config.run.num_steps
    assert config.run.ae_steps < results["selected_step"] < config.run.num_steps  # chosen in the NAE phase
    assert all((seed_dir / "plots" / name).stat().st_size > 5_000 for name in PLOTS)

    scores = np.load(seed_dir / "scores.npz")
    assert len(scores["nae_background"]) == len(scores["nae_signal"]) == config.data.num_test
    # The AE column is the end of phase 1, the NAE column the selected phase-2 checkpoint: not the same model.
    assert not np.allclose(scores["ae_background"], scores["nae_background"])
    np.testing.assert_allclose(results["mean_energy"]["nae"]["signal"], scores["nae_signal"].mean(), rtol=1e-6)

    # The intensity scale: 1 / (largest training pixel), recorded, applied when a reloaded model scores raw images.
    paths = {role: data_file.path for role, data_file in nae_data.data_files(config).items()}
    train = nae_data.load_images(paths["background"], config.data, "train")
    intensity = json.loads((seed_dir / "intensity.json").read_text())
    assert intensity["scale"] == results["intensity_scale"] == np.float32(1.0) / train.max() > 2.0
    trained = nae_experiment.load_seed(config, SeedJob(0, seed_dir, paths, progress=False))
    assert trained.best_step == results["selected_step"]
    for role in ("background", "signal"):
        images = nae_data.load_images(paths[role], config.data, "test")
        np.testing.assert_allclose(trained.energy(images), scores[f"nae_{role}"], rtol=1e-5)
    assert 0.0 <= results["ae"]["latent_resultant_length"] <= 1.0 + 1e-9
    (seed_dir / "intensity.json").unlink()
    with pytest.raises(nae_data.IntensityScaleError, match="intensity.json is missing"):
        nae_experiment.load_seed(config, SeedJob(0, seed_dir, paths, progress=False))
