"""The toy system (`tests/toy_system/toy.py`): a fifth system built only from the contract, trained by CD
through the one driver and run by the runner. It must learn its data and resume exactly."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from jaxebm.config import load_config
from jaxebm.runs import RunOptions, run_experiment
from toy_system import toy


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "smoke"
    config = load_config(toy.ToyConfig, toy.EXPERIMENT.presets / "smoke.toml")
    summary = run_experiment(toy.EXPERIMENT, config, out, RunOptions(progress=False, say=lambda line: None))
    return out, config, summary


def test_the_toy_system_learns_its_data(toy_run):
    """Long chains of the trained energy reproduce the data's mean and spread, and the score API ranks far
    points as anomalous; an untrained energy (chains from uniform noise on [-4, 4]^2) does neither."""
    _, _, summary = toy_run
    np.testing.assert_allclose(summary["sample_mean"], toy.DATA_MEAN, atol=0.2)
    np.testing.assert_allclose(summary["sample_std"], toy.DATA_STD, rtol=0.2)
    assert summary["far_more_anomalous"] > 0.95


def test_the_toy_system_runs_through_the_runner_and_driver(toy_run):
    out, config, _ = toy_run
    seed_dir = out / "seed_0"
    assert json.loads((seed_dir / "results.json").read_text())["seed"] == 0
    rows = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(50, config.run.num_steps + 1, 50))
    again = run_experiment(toy.EXPERIMENT, config, out, RunOptions(progress=False, say=lambda line: None))
    assert again == toy_run[2]  # the finished run is reused, not retrained


def test_the_toy_system_resumes_exactly(tmp_path):
    """Killed after its checkpoint at step 20 and started again, it ends where an uninterrupted run ends."""
    config = dataclasses.replace(toy.ToyConfig(), run=toy.RunSection(num_steps=40, log_every=10,
                                                                       checkpoint_every=20))
    job = toy.SeedJob(seed=3, directory=tmp_path / "straight", data={}, progress=False)
    straight = toy.train_seed(config, job)[1]
    step = toy.make_step(toy.ToyEnergy(config.model), config.cd)
    calls = []

    def crashing(state, x):
        calls.append(1)
        if len(calls) > 25:
            raise KeyboardInterrupt("killed")
        return step(state, x)

    killed = toy.SeedJob(seed=3, directory=tmp_path / "killed", data={}, progress=False)
    original = toy.make_step
    toy.make_step = lambda model, cd: crashing
    try:
        with pytest.raises(KeyboardInterrupt):
            toy.train_seed(config, killed)
    finally:
        toy.make_step = original
    resumed = toy.train_seed(config, killed)[1]
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)
