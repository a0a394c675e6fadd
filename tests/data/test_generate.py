"""Pythia 8 + anti-kT jet generation: schema, cuts, determinism, physics, FastJet agreement,
input checks before any work, workers that die with their parent."""

import os
import re
import signal
import subprocess
import sys
import time

import fastjet
import numpy as np
import pytest

from jaxebm.data import generate
from jaxebm.data.generate import (
    GenerationConfig,
    generate_jets,
    generate_shard,
    make_pythia,
    pythia_settings,
    worker_quotas,
    worker_seed,
)
from jaxebm.data.io import SCHEMA_VERSION, jet_summary, read_jets
from jaxebm.data.jet_selection import make_jet_finder
from jaxebm.data.processes import PROCESSES

SAMPLES = ["small_qcd_sample", "small_top_sample", "small_w_sample"]


def _constituent_pt(sample):
    return np.hypot(sample.constituents[..., 1], sample.constituents[..., 2])


def test_schema_and_provenance(small_qcd_sample):
    sample = small_qcd_sample
    assert sample.constituents.shape == (200, 200, 4) and sample.constituents.dtype == np.float32
    assert sample.mask.shape == (200, 200) and sample.mask.dtype == np.bool_
    assert sample.jets.shape == (200, 5) and sample.jets.dtype == np.float32
    assert sample.labels is None
    attrs = sample.attrs
    assert attrs["schema_version"] == SCHEMA_VERSION
    assert attrs["process"] == "qcd" and attrs["seed"] == 1 and attrs["num_workers"] == 1
    assert attrs["generator"].startswith("Pythia 8.317") and attrs["generator_version"] == "8.317.2"
    assert (attrs["jet_pt_min"], attrs["jet_pt_max"], attrs["jet_abs_eta_max"]) == (550.0, 650.0, 2.0)
    assert attrs["jet_radius"] == 0.8 and "anti-kt" in attrs["jet_definition"]
    assert "HardQCD:all = on" in attrs["pythia_settings"]
    assert attrs["worker_seeds"] == (worker_seed(1, 0),)
    assert attrs["num_events"] >= 100  # QCD dijets give at most two jets per event
    assert attrs["creation_time"].endswith("+00:00")


@pytest.mark.parametrize("fixture", SAMPLES)
def test_jets_pass_the_selection_cuts(fixture, request):
    jets = request.getfixturevalue(fixture).jets
    assert ((jets[:, 0] >= 550.0) & (jets[:, 0] < 650.0)).all()
    assert (np.abs(jets[:, 1]) < 2.0).all()
    assert ((jets[:, 2] > -np.pi) & (jets[:, 2] <= np.pi)).all()


@pytest.mark.parametrize("fixture", SAMPLES)
def test_constituents_are_pt_ordered_and_mask_matches_multiplicity(fixture, request):
    sample = request.getfixturevalue(fixture)
    num_stored = sample.mask.sum(axis=1)
    assert (num_stored == np.minimum(sample.jets[:, 4], sample.mask.shape[1])).all()
    assert (sample.mask == (np.arange(sample.mask.shape[1]) < num_stored[:, None])).all()  # real slots first
    assert (sample.constituents[~sample.mask] == 0).all()
    pt = np.where(sample.mask, _constituent_pt(sample), 0.0)
    assert (np.diff(pt, axis=1) <= 0).all()
    assert (sample.jets[:, 4] >= 10).all()  # hundreds of GeV of hadrons: never a handful of particles


@pytest.mark.parametrize("fixture", SAMPLES)
def test_jet_summary_is_the_sum_of_its_constituents(fixture, request):
    sample = request.getfixturevalue(fixture)
    untruncated = sample.jets[:, 4] <= sample.mask.shape[1]
    assert untruncated.mean() > 0.95
    summed = jet_summary(sample.constituents, sample.mask, sample.mask.sum(axis=1))[untruncated]
    np.testing.assert_allclose(summed[:, [0, 1, 2]], sample.jets[untruncated][:, [0, 1, 2]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(summed[:, 3], sample.jets[untruncated, 3], atol=0.02)  # mass, GeV


def test_reclustering_the_stored_constituents_with_fastjet_gives_the_jet(small_top_sample):
    sample = small_top_sample
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, 0.8)
    for constituents, mask, jet in zip(sample.constituents[:40], sample.mask[:40], sample.jets[:40]):
        particles = [fastjet.PseudoJet(*map(float, (px, py, pz, e))) for e, px, py, pz in constituents[mask]]
        sequence = fastjet.ClusterSequence(particles, definition)  # must outlive its jets
        hardest = fastjet.sorted_by_pt(sequence.inclusive_jets())[0]
        np.testing.assert_allclose([hardest.pt(), hardest.m()], jet[[0, 3]], rtol=1e-4, atol=0.02)
        assert len(hardest.constituents()) == jet[4]


def test_jet_finder_agrees_with_scikit_hep_fastjet_on_whole_events():
    config = GenerationConfig(process="qcd", num_jets=1)
    pythia = make_pythia(pythia_settings(config, seed=11))
    jet_finder = make_jet_finder(0.8, jet_pt_min=20.0)
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, 0.8)
    num_compared = num_invisible = 0
    for _ in range(10):
        assert pythia.next()
        jet_finder.analyze(pythia.event)
        final = [p for p in pythia.event.particles() if p.isFinal()]
        visible = [p for p in final if p.isVisible()]
        num_invisible += len(final) - len(visible)
        inputs = [fastjet.PseudoJet(p.px(), p.py(), p.pz(), p.e()) for p in visible]
        sequence = fastjet.ClusterSequence(inputs, definition)  # must outlive its jets
        expected = fastjet.sorted_by_pt(sequence.inclusive_jets(20.0))
        assert jet_finder.sizeJet() == len(expected)
        for index, jet in enumerate(expected):
            assert jet_finder.multiplicity(index) == len(jet.constituents())
            np.testing.assert_allclose([jet_finder.pT(index), jet_finder.m(index)], [jet.pt(), jet.m()], rtol=1e-9)
            num_compared += 1
    assert num_compared >= 20 and num_invisible > 0  # neutrinos were there to be left out


def test_top_and_w_jets_have_their_masses(small_qcd_sample, small_top_sample, small_w_sample):
    qcd_mass, top_mass, w_mass = (s.jets[:, 3] for s in (small_qcd_sample, small_top_sample, small_w_sample))
    assert 150.0 < np.median(top_mass) < 195.0
    assert np.median(top_mass) > np.median(qcd_mass) + 60.0
    # W jets: a narrow peak near m_W (the underlying event shifts the median to ~91 GeV at R = 0.8);
    # QCD jets spread over the same range, so the fraction in the window tells them apart.
    assert 75.0 < np.median(w_mass) < 98.0
    assert np.mean((w_mass > 65.0) & (w_mass < 110.0)) > 0.7
    assert np.mean((qcd_mass > 65.0) & (qcd_mass < 110.0)) < 0.55


def test_heavy_higgs_jets_peak_near_the_h_mass():
    sample = generate_jets(GenerationConfig(process="h_hh_4b", num_jets=40, seed=2), progress=False)
    assert 150.0 < np.median(sample.jets[:, 3]) < 195.0  # m_H = 174 GeV, all four b quarks inside


def test_same_seed_reproduces_and_another_seed_differs(small_qcd_sample):
    again = generate_jets(GenerationConfig(process="qcd", num_jets=30, seed=1), progress=False)
    # One worker draws one event stream, so the first 30 jets of the 200-jet fixture are these.
    np.testing.assert_array_equal(again.constituents, small_qcd_sample.constituents[:30])
    np.testing.assert_array_equal(again.jets, small_qcd_sample.jets[:30])
    other = generate_jets(GenerationConfig(process="qcd", num_jets=30, seed=2), progress=False)
    assert not np.array_equal(other.jets, again.jets)


def test_workers_concatenate_their_shards_in_worker_order():
    config = GenerationConfig(process="qcd", num_jets=11, num_workers=2, seed=3, multiparton_interactions=False)
    sample = generate_jets(config, progress=False)
    shards = [generate_shard(config, worker, quota) for worker, quota in enumerate(worker_quotas(11, 2))]
    np.testing.assert_array_equal(sample.constituents, np.concatenate([s.constituents for s in shards]))
    np.testing.assert_array_equal(sample.jets, np.concatenate([s.jets for s in shards]))
    assert sample.attrs["num_events"] == sum(s.num_events for s in shards)
    assert not np.array_equal(shards[0].jets[:5], shards[1].jets[:5])  # distinct seeds, distinct streams


def test_worker_seeds_are_valid_distinct_and_quotas_add_up():
    seeds = [worker_seed(seed, worker) for seed in range(20) for worker in range(16)]
    assert min(seeds) >= 1 and max(seeds) <= 900_000_000
    assert len(set(seeds)) == len(seeds)
    assert worker_quotas(10, 3) == (4, 3, 3)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"process": "zprime"}, "process"),
        ({"num_jets": 2, "num_workers": 3}, "num_workers"),
        ({"jet_pt_min": 700.0}, "jet_pt_min"),
        ({"jet_radius": 0.0}, "jet_radius"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        GenerationConfig(**overrides)


def test_rejected_pythia_setting_is_named():
    with pytest.raises(ValueError, match="NoSuch:setting"):
        make_pythia(("NoSuch:setting = on",))


def test_cuts_nothing_can_pass_stop_with_an_error():
    config = GenerationConfig(
        jet_pt_min=5000.0, jet_pt_max=6000.0, num_jets=1, multiparton_interactions=False, max_events_without_jet=5
    )
    with pytest.raises(RuntimeError, match="no jet passed the cuts in 5 events"):
        generate_jets(config, progress=False)


def test_every_registered_process_has_a_well_formed_card():
    for name, card in PROCESSES.items():
        assert card.name == name and card.pythia_settings
        assert all(" = " in setting for setting in card.pythia_settings)


def test_command_line_writes_the_file_and_replaces_it_only_with_overwrite(tmp_path):
    out = tmp_path / "cli.h5"
    argv = ["--process", "w", "--num-jets", "3", "--out", str(out), "--seed", "4", "--quiet",
            "--no-multiparton-interactions", "--jet-radius", "1.0"]
    generate.main(argv)
    sample = read_jets(out)
    assert sample.jets.shape == (3, 5)
    assert (sample.attrs["process"], sample.attrs["seed"], sample.attrs["jet_radius"]) == ("w", 4, 1.0)
    assert sample.attrs["multiparton_interactions"] is False
    assert "PartonLevel:MPI = off" in sample.attrs["pythia_settings"]
    generate.main([*argv, "--seed", "5", "--overwrite"])
    assert read_jets(out).attrs["seed"] == 5


@pytest.fixture
def no_generation(monkeypatch):
    """Make any start of event generation fail the test: the checks must come first."""
    def started(*args, **kwargs):
        raise AssertionError("generation started before the input was checked")

    monkeypatch.setattr(generate, "generate_shard", started)
    monkeypatch.setattr(generate, "_run_workers", started)


def _exit_status_and_message(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate.main(argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-jets", "-5"], "num_jets: must be >= 1, got -5"),
        (["--num-jets", "4", "--workers", "0"], "num_workers: .* got 0"),
        (["--seed", "-1"], "seed: must be >= 0"),
        (["--jet-radius", "-0.4"], "jet_radius: must be > 0"),
        (["--max-constituents", "0"], "max_constituents: must be > 0"),
        (["--jet-pt-min", "700"], "jet_pt_min, jet_pt_max"),
        (["--jet-radius", "nan"], "jet_radius: must be a finite number, got nan"),
        (["--jet-pt-max", "inf"], "jet_pt_max: must be a finite number, got inf"),
        (["--center-of-mass-energy", "inf"], "center_of_mass_energy: must be a finite number, got inf"),
    ],
)
def test_command_line_names_each_bad_value_before_any_work(tmp_path, capsys, no_generation, flags, message):
    status, error = _exit_status_and_message(["--out", str(tmp_path / "jets.h5"), *flags], capsys)
    assert status == 2 and re.search(message, error)
    assert len(error.strip().splitlines()) == 1 and "usage:" not in error  # one line, the usage only in --help
    assert os.listdir(tmp_path) == []


def test_command_line_refuses_an_existing_out_file_without_overwrite(tmp_path, capsys, no_generation):
    out = tmp_path / "jets.h5"
    out.write_bytes(b"an earlier sample")
    status, error = _exit_status_and_message(["--out", str(out), "--num-jets", "3"], capsys)
    assert status == 2 and f"{out}: exists; pass --overwrite" in error
    assert out.read_bytes() == b"an earlier sample"


def test_command_line_refuses_an_unwritable_out_directory_before_any_work(tmp_path, capsys, no_generation):
    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "jets.h5"  # root ignores permission bits, so the directory cannot exist instead
    status, error = _exit_status_and_message(["--out", str(out), "--num-jets", "3"], capsys)
    assert status == 2 and f"the output directory {out.parent} is not writable" in error


# Runs a generation far longer than the test, in two worker processes.
_LONG_GENERATION = """
from jaxebm.data.generate import GenerationConfig, generate_jets
generate_jets(GenerationConfig(num_jets=40_000, num_workers=2, multiparton_interactions=False), progress=False)
"""


def _parent_pid(pid):
    """The parent of process ``pid`` from /proc, None once it is gone or a zombie (dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state, parent = handle.read().rsplit(")", 1)[1].split()[:2]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else int(parent)


def _children(pid):
    """Live processes whose parent is ``pid``."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _parent_pid(int(entry)) == pid]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker processes in /proc")
def test_workers_exit_when_the_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", _LONG_GENERATION], stderr=subprocess.DEVNULL)
    children = []
    try:
        deadline = time.monotonic() + 20
        while len(children) < 3 and time.monotonic() < deadline:  # two workers and multiprocessing's resource tracker
            time.sleep(0.1)
            children = _children(parent.pid)
        assert len(children) == 3, f"expected two workers and a resource tracker, found {children}"
        time.sleep(3)  # the workers are generating
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_parent_pid(child) is not None for child in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [child for child in children if _parent_pid(child) is not None] == []
    finally:
        parent.kill()
        parent.wait(timeout=10)
        for child in children:
            if _parent_pid(child) is not None:
                os.kill(child, signal.SIGKILL)


def test_generator_banners_stay_out_of_the_output(tmp_path):
    """Pythia and FastJet print banners from C++ at their first use in a process: none reaches stdout."""
    code = ("import sys; from jaxebm.cli import main; sys.exit(main(['data', 'generate', '--num-jets', '2', "
            f"'--no-multiparton-interactions', '--out', {str(tmp_path / 'q.h5')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"wrote 2 qcd jets from {read_jets(tmp_path / 'q.h5').attrs['num_events']} "
                                          f"events to {tmp_path / 'q.h5'}"]
    assert "FastJet" not in result.stderr and "PYTHIA" not in result.stderr
