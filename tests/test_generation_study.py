"""The generation study (`experiments.ebm_generation_study`, library `jaxebm.experiments.generation_study`) on a
smoke-preset run built once per module:
its outputs, its zero-step chain starts against the run's own `results.json`, its segmented and
continued chains against one library chain, and the order it runs chains in under a time budget."""
import json

import jax
import numpy as np
import pytest

from experiments import ebm_generation_study as study
from experiments import ebm_jets
from jaxebm.experiments.generation_study.chains import ChainPrograms, run_family
from jaxebm.experiments.generation_study.figures import PLOT_NAMES
from jaxebm.experiments.generation_study.loading import load_run, noise_starts
from jaxebm.experiments.generation_study.runner import work_plan
from jaxebm.experiments.generation_study.settings import Family, study_grid
from jaxebm.models.common import energy_fn
from jaxebm.sampling import langevin
from jaxebm.sampling.schedules import StepDecay


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A finished smoke run (~1-2 min): data, 20 CD iterations, checkpoints, results.json."""
    root = tmp_path_factory.mktemp("smoke")
    ebm_jets.main(["--preset", "smoke", "--out", str(root / "run"),
                   "--set", f"data.data_dir={json.dumps(str(root / 'data'))}"])
    return root / "run" / "seed_0"


@pytest.fixture(scope="module")
def quick_study(smoke_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    result = study.main([str(smoke_run), "--out", str(out), "--quick", "--no-progress"])
    return out, result


def test_quick_study_writes_every_output(quick_study):
    out, result = quick_study
    saved = json.loads((out / "generation_study.json").read_text())
    rows = {r["setting"]: r for r in saved["rows"]}
    for family in study_grid(quick=True):
        for length in family.lengths:
            row = rows[f"{family.name}@{length}"]
            assert row["evals_per_jet"] == length + (family.sampler == "mala")
            assert row["us_per_jet"] > 0 and row["est_us_per_jet"] > 0
            assert 0 <= row["frac_pt_over"] <= 1 and np.isfinite(row["distance"]) and np.isfinite(row["w1_const_log_pt"])
    assert 0 < rows["mala_tied_train_T@8"]["acceptance"] <= 1
    assert {"noise_start", "buffer_start"} <= set(rows)
    assert saved["recommendation"]["setting"] in rows and saved["recommendation"]["generation_config"]["num_steps"] > 0
    markdown = (out / "generation_study.md").read_text()
    for heading in ("## All settings", "## Best setting per CPU-time budget", "## Recommended generation default",
                    "## Generated jet pT tails"):
        assert heading in markdown
    required = {"quality_vs_evals.png", "quality_vs_time.png", "observables_paper.png",
                "observables_paper_vs_recommended.png", "tails.png"}
    assert required <= set(saved["plots"]) <= set(PLOT_NAMES)
    assert all((out / name).stat().st_size > 10_000 for name in saved["plots"])
    assert (out / "per_jet.npz").exists() and not list(out.glob("*.tmp*"))
    assert saved["real"]["tail_pt"] > 0 and 0 <= rows["noise_start"]["frac_pt_tail"] <= 1


def test_noise_start_is_the_runs_noise_init(smoke_run, quick_study):
    """Zero steps from noise are the jets `evaluate_seed` scored as `noise_init` (same key, same count),
    scored against the same test jets through the same four-vector path: every number must agree."""
    _, result = quick_study
    noise_init = json.loads((smoke_run / "results.json").read_text())["noise_init"]
    row = next(r for r in result["rows"] if r["setting"] == "noise_start")
    assert result["num_jets"] == 128
    for key, value in noise_init.items():
        assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_segmented_chain_is_one_chain_of_that_length(smoke_run):
    """Snapshots of a family (chains in segments, batches with padding, settings as arguments of one
    compiled program, continued later) equal library chains of each length with the family's
    `LangevinConfig`: the step count, which the schedule reads, must carry across segments and
    continuations, and E/T must act as the temperature. Noise 0 makes ULA deterministic; the step
    falls 10x every 3 steps, so a count restarted per segment changes the result."""
    run = load_run(smoke_run)
    family = Family("test", "deterministic ULA", step=StepDecay(1.0, 0.1, 3), noise=0.0, temperature=0.5,
                          lengths=(2, 4), extra=(6,))
    x0, mask = noise_starts(run, 7)
    programs = ChainPrograms(run, 2)
    snapshots, progress = run_family(run, family, x0, mask, 4, programs, progress=False)
    assert progress.steps == 4 and len(progress.states) == 2
    more, progress = run_family(run, family, x0, mask, 4, programs, lengths=(6,), resume=progress, progress=False)
    snapshots |= more
    assert progress.steps == 6 and set(snapshots) == {0, 2, 4, 6}
    energy = energy_fn(run.model, run.params, mask)
    for length in (2, 4, 6):
        expected, _ = langevin.run_chain(jax.random.key(0), x0, energy, family.langevin_config, length)
        got = snapshots[length]["x"]
        assert got.shape == x0.shape
        np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(snapshots[6]["x"] - snapshots[2]["x"])) > 1e-2  # the later steps do move the jets
    assert snapshots[6]["seconds"] > snapshots[4]["seconds"] > snapshots[2]["seconds"] > 0


def test_work_plan_covers_every_family_before_lengthening_any():
    families = [Family("a", "", lengths=(25, 50, 100, 200), floor=200, extra=(400,)),
                Family("b", "", lengths=(25, 50, 100)), Family("c", "", lengths=(25, 50))]
    assert work_plan(families) == [("a", 200), ("b", 25), ("c", 25), ("b", 50), ("c", 50), ("b", 100),
                                         ("a", 400)]
