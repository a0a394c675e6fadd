"""The `jaxebm` command: every subcommand on tiny inputs through `main(argv)`, the installed console script,
and every usage error's message and exit code (2 for usage, 1 for a failure while running, no traceback)."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxebm import cli, experiments
from jaxebm.config import ConfigError, save_config
from jaxebm.data.io import read_jets
from jaxebm.runs import run_experiment
from synthetic_jets import synthetic_sample, write_experiment_data, write_jetnet_file, write_landscape_file

SCRIPT = Path(sys.executable).parent / "jaxebm"
TINY = {"data.num_train_jets": 200, "data.num_test_jets": 128, "run.num_steps": 2, "run.log_every": 1,
        "run.eval_every": 2, "run.checkpoint_every": 2, "run.val_chain_steps": 2, "generation.num_steps": 2,
        "generation.batch_size": 32, "cd.batch_size": 16, "cd.buffer_size": 64, "cd.num_langevin_steps": 2}


def tiny_args(data_dir: Path, **changes) -> list[str]:
    """``--preset smoke --set ...``: the smoke preset cut to 2 CD iterations on synthetic files in ``data_dir``."""
    values = {"data.data_dir": json.dumps(str(data_dir)), **TINY, **changes}
    return ["--preset", "smoke"] + [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def tiny_data(data_dir: Path) -> None:
    """Synthetic train and test files carrying the attributes the tiny config asks for."""
    config = experiments.load("ebm", "smoke", [arg for arg in tiny_args(data_dir)[2:] if arg != "--set"])
    write_experiment_data(experiments.get("ebm").data_files(config))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [[], ["data"], ["data", "info"], ["data", "convert"], ["data", "generate"],
                                     ["train"], ["sample"], ["evaluate"], ["report"], ["demo"]])
def test_help_of_every_subcommand_ends_with_an_example(capsys, command):
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0 and "example:" in out and "jaxebm" in out.split("example:")[1]


@pytest.mark.parametrize(("overrides", "message"), [
    (["--preset", "cpuu"], "unknown preset 'cpuu' for experiment 'ebm' (did you mean 'cpu'?); presets: cpu, paper"),
    (["--set", "cd.lrr=0.1"], "unknown key(s) ['lrr'] in config section 'cd' ('lrr' -> did you mean 'lr'?); known: "),
    (["--set", "run.num_steps=20.5"], "'run.num_steps' expects int, got 20.5 (float)"),
    (["--set", "run.num_steps=-5"], "run.num_steps must be > 0, got -5"),
    (["--set", "cd.step_size=-0.1"], "'cd.step_size' must be >= 0, got -0.1"),
    (["--set", "cd.lr=-1e-4"], "'cd.lr' must be > 0, got -0.0001"),
    (["--set", "cd.step_size=inf"], "'cd.step_size' must be a finite number, got inf"),
    (["--set", "cd.lr=inf"], "'cd.lr' must be a finite number, got inf"),
    (["--set", "generation.step_size=nan"], "'generation.step_size' must be a finite number, got nan"),
    (["--set", "seeds=[]"], "seeds must list at least one seed"),
    (["--set", "cd.batch_size=1000"], "cd.batch_size (1000) is larger than the 540 training jets"),
    (["--set", "data.feature_space=\"log\""], "data.feature_space must be one of"),
])
def test_bad_values_exit_2_naming_the_key_before_any_work(capsys, tmp_path, overrides, message):
    code, _, err = run_cli(capsys, "train", "ebm", "--preset", "smoke", "--out", tmp_path / "run", *overrides)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("experiment", "override", "message"), [
    ("nae", "nae.lr=nan", "'nae.lr' must be a finite number, got nan"),
    ("nae", "nae.lr=inf", "'nae.lr' must be a finite number, got inf"),
    ("nae", "nae.ae_lr=0", "'nae.ae_lr' must be > 0, got 0"),
    ("jetnet_bench", "convae_gen.stage.num_epochs=-1", "'convae_gen.stage.num_epochs' must be > 0, got -1"),
    ("jetnet_bench", "latent_flow.stage.learning_rate=nan",
     "'latent_flow.stage.learning_rate' must be a finite number, got nan"),
    ("jetnet_bench", "cd.lr=inf", "'cd.lr' must be a finite number, got inf"),
    ("ebm_clf", "cd.classifier_weight=inf", "'cd.classifier_weight' must be a finite number, got inf"),
])
def test_non_finite_and_out_of_range_values_of_every_experiment_exit_2_creating_nothing(
        capsys, tmp_path, experiment, override, message):
    code, _, err = run_cli(capsys, "train", experiment, "--preset", "smoke", "--set", override,
                           "--set", f"data.data_dir={json.dumps(str(tmp_path / 'data'))}", "--out", tmp_path / "run")
    assert code == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_configs_built_in_code_are_range_checked_by_the_runner(tmp_path):
    config = experiments.load("ebm", "smoke")
    bad = dataclasses.replace(config, cd=dataclasses.replace(config.cd, step_size=float("inf")))
    with pytest.raises(ConfigError, match="'cd.step_size' must be a finite number, got inf"):
        run_experiment(experiments.get("ebm"), bad, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["train"], ["train", "ebmm"], ["nope"], ["train", "ebm", "--resume", "--force"],
                                  ["sample", "x"]])
def test_usage_errors_exit_2_without_a_traceback(capsys, argv):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err and ("did you mean 'ebm'" in err if argv == ["train", "ebmm"] else True)


def test_an_interrupt_exits_130_saying_how_to_resume(capsys, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "load", interrupted)
    code, _, err = run_cli(capsys, "train", "ebm")
    assert code == 130 and "run the same command again to resume" in err and "Traceback" not in err


def test_an_unexpected_error_exits_1_and_shows_its_traceback_only_with_debug(capsys, monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(experiments, "load", broken)
    code, _, err = run_cli(capsys, "train", "ebm")
    assert code == 1 and "unexpected error (RuntimeError): boom" in err and "jaxebm --debug train" in err
    assert "Traceback" not in err
    with pytest.raises(RuntimeError, match="boom"):
        run_cli(capsys, "--debug", "train", "ebm")


def test_data_file_problems_exit_1_naming_the_file_and_how_to_regenerate(capsys, tmp_path):
    tiny_data(tmp_path / "data")
    top = tmp_path / "data" / "top_test.h5"
    top.write_bytes(top.read_bytes()[:200])  # truncated
    code, _, err = run_cli(capsys, "train", "ebm", *tiny_args(tmp_path / "data"), "--out", tmp_path / "run")
    assert code == 1 and f"{top}" in err and "To regenerate it: delete" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # not even the lock file of the refused command
    code, _, err = run_cli(capsys, "train", "ebm", *tiny_args(tmp_path / "data", **{"data.generator_seed": 7}),
                           "--out", tmp_path / "run")
    assert code == 1 and "qcd_train.h5 was made with other settings" in err and "seed: file 101, config 7" in err
    code, _, err = run_cli(capsys, "data", "info", top)
    assert code == 1 and f"{top}" in err


def test_data_convert_and_info_read_the_public_layouts(capsys, tmp_path):
    sample = synthetic_sample(12, seed=3)
    write_landscape_file(tmp_path / "landscape.h5", sample, labels=np.arange(12) % 2)
    write_jetnet_file(tmp_path / "jetnet.hdf5", 10)
    code, out, _ = run_cli(capsys, "data", "convert", tmp_path / "landscape.h5", tmp_path / "top.h5")
    assert code == 0 and "wrote 12 jets (top-tagging layout)" in out
    converted = read_jets(tmp_path / "top.h5")
    np.testing.assert_allclose(converted.constituents[:, :20], sample.constituents, rtol=1e-6)
    assert converted.labels.tolist() == (np.arange(12) % 2).tolist()
    code, out, _ = run_cli(capsys, "data", "convert", tmp_path / "jetnet.hdf5", tmp_path / "jn.h5", "--stop", 4)
    assert code == 0 and len(read_jets(tmp_path / "jn.h5").jets) == 4
    code, _, err = run_cli(capsys, "data", "convert", tmp_path / "jetnet.hdf5", tmp_path / "jn.h5")
    assert code == 2 and "--overwrite" in err
    code, out, _ = run_cli(capsys, "data", "info", tmp_path / "top.h5", tmp_path / "landscape.h5")
    assert code == 0 and "top.h5: jaxebm layout, 12 jets" in out and "landscape.h5: top-tagging layout" in out
    code, out, _ = run_cli(capsys, "data", "info", "--json", tmp_path / "jn.h5")
    assert json.loads(out)["num_jets"] == 4


def test_data_convert_copies_a_jaxebm_file_and_never_rewrites_its_source(capsys, tmp_path):
    write_jetnet_file(tmp_path / "jetnet.hdf5", 10)
    assert run_cli(capsys, "data", "convert", tmp_path / "jetnet.hdf5", tmp_path / "all.h5")[0] == 0
    source_bytes = (tmp_path / "all.h5").read_bytes()
    code, out, err = run_cli(capsys, "data", "convert", tmp_path / "all.h5", tmp_path / "part.h5", "--start", 2)
    assert code == 0 and "wrote 8 jets (jaxebm layout)" in out and "Traceback" not in err
    np.testing.assert_array_equal(read_jets(tmp_path / "part.h5").jets, read_jets(tmp_path / "all.h5").jets[2:])
    code, _, err = run_cli(capsys, "data", "convert", tmp_path / "all.h5", tmp_path / "all.h5", "--overwrite")
    assert code == 2 and "is the source file itself" in err
    assert (tmp_path / "all.h5").read_bytes() == source_bytes


@pytest.mark.parametrize("rows", [["--start", "50", "--stop", "10"], ["--start", "-5"], ["--stop", "0"]])
def test_data_convert_refuses_bad_rows_as_a_usage_error(capsys, tmp_path, rows):
    write_jetnet_file(tmp_path / "jetnet.hdf5", 10)
    code, _, err = run_cli(capsys, "data", "convert", tmp_path / "jetnet.hdf5", tmp_path / "out.h5", *rows)
    assert code == 2 and "--start must be >= 0 and --stop above it" in err and "Traceback" not in err
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("damaged", ["config.json", "run.json"])
@pytest.mark.parametrize("argv", [["train", "ebm", "--out", "RUN"], ["evaluate", "RUN"],
                                  ["sample", "RUN", "--num-jets", "2"]])
def test_a_damaged_run_record_is_named_without_a_traceback(capsys, tmp_path, damaged, argv):
    run = tmp_path / "run"
    save_config(experiments.load("ebm", "smoke"), run / "config.json")
    (run / "run.json").write_text(json.dumps({"experiment": "ebm"}))
    (run / damaged).write_text('{"name": "smo')
    code, _, err = run_cli(capsys, *[run if arg == "RUN" else arg for arg in argv])
    assert code == 1 and f"{run / damaged} is damaged (not valid JSON" in err and "Traceback" not in err


def test_train_help_lists_every_experiment_with_a_description_and_its_presets(capsys):
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for name in experiments.EXPERIMENTS:
        line, presets = out.split(f"\n  {name} ")[1].splitlines()[:2]
        assert line.strip() == experiments.DESCRIPTIONS[name]
        assert presets.strip() == f"presets: {', '.join(experiments.presets(name))}"
        assert experiments.presets(name) == sorted(p.stem for p in experiments.get(name).presets.glob("*.toml"))


def test_sample_refuses_an_existing_out_file_before_any_work(capsys, tmp_path):
    run = tmp_path / "run"
    save_config(experiments.load("ebm", "smoke"), run / "config.json")
    (run / "seed_0" / "checkpoints" / "latest" / "20").mkdir(parents=True)  # no pipeline.json: loading would fail
    existing = tmp_path / "earlier.h5"
    existing.write_bytes(b"earlier jets")
    code, _, err = run_cli(capsys, "sample", run, "--num-jets", 4, "--out", existing)
    assert code == 2 and f"{existing} exists: pass --overwrite" in err and "Traceback" not in err
    assert existing.read_bytes() == b"earlier jets"


def test_data_info_of_a_directory_says_so(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "info", tmp_path)
    assert code == 1 and f"{tmp_path} is a directory: give the jet files in it" in err
    assert "errno" not in err.lower() and "Traceback" not in err


def test_the_notebook_output_is_ignored_by_git():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "notebooks/quickstart_output/x.png"])
    assert result.returncode == 0


def test_data_generate_help_names_itself_and_every_option_with_its_default(capsys):
    code, out, _ = run_cli(capsys, "data", "generate", "--help")
    assert code == 0 and out.startswith("usage: jaxebm data generate") and "python -m" not in out
    options = [line for line in out.split("options:")[1].split("example:")[0].splitlines()
               if line.lstrip().startswith("--")]
    assert len(options) == 18 and "--jet-radius JET_RADIUS" in out and "anti-kT radius R (default: 0.8)" in out
    assert " ".join(out.split()).count("(default: ") == 15  # every GenerationConfig field


def test_data_generate_refuses_a_non_finite_radius_creating_nothing(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "generate", "--jet-radius", "nan", "--out", tmp_path / "q.h5")
    assert code == 2 and "jet_radius: must be a finite number, got nan" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_data_generate_delegates_to_the_generator(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data", "generate", "--process", "qcd", "--num-jets", 3, "--quiet",
                           "--out", tmp_path / "q.h5")
    assert code == 0 and "wrote 3 qcd jets" in out and len(read_jets(tmp_path / "q.h5").jets) == 3


def test_bench_delegates_to_the_checkout_or_explains(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda argv, cwd: calls.append((argv, cwd)) or 3)
    assert run_cli(capsys, "bench", "--quick")[0] == 3
    assert calls[0][0][1:] == ["-m", "benchmarks.bench_ebm", "--quick"] and (calls[0][1] / "benchmarks").is_dir()
    monkeypatch.setattr(cli, "find_checkout", lambda: None)
    code, _, err = run_cli(capsys, "bench")
    assert code == 1 and "part of a source checkout" in err


@pytest.mark.parametrize(("argv", "preset", "out"), [(["demo"], "cpu", "runs/demo"),
                                                     (["demo", "--quick"], "smoke", "runs/demo-quick")])
def test_demo_is_the_presets_first_seed(capsys, monkeypatch, argv, preset, out):
    import jaxebm.runs

    runs = []
    monkeypatch.setattr(jaxebm.runs, "run_experiment", lambda experiment, config, out, options: runs.append(
        (config, out, options)))
    assert run_cli(capsys, *argv)[0] == 0
    config, out_dir, options = runs[0]
    assert (config.name, config.seeds, out_dir, options.mode) == (preset, (0,), Path(out), "auto")


def test_the_console_script_is_installed(tmp_path):
    help_run = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert help_run.returncode == 0 and "example:" in help_run.stdout
    synthetic = tmp_path / "jets.h5"
    from synthetic_jets import write_jet_file
    write_jet_file(synthetic, 7, attrs={"process": "qcd"})
    info = subprocess.run([SCRIPT, "data", "info", synthetic], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "7 jets" in info.stdout and "process       qcd" in info.stdout
    bad = subprocess.run([SCRIPT, "train", "ebm", "--preset", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown preset 'nope'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-iteration EBM run on synthetic files, trained once through `jaxebm train` (the slow part)."""
    root = tmp_path_factory.mktemp("cli")
    tiny_data(root / "data")
    code = cli.main(["train", "ebm", *tiny_args(root / "data"), "--out", str(root / "run"), "--quiet"])
    assert code == 0
    return root


@pytest.mark.slow
def test_train_writes_a_run_and_refuses_a_changed_config(tiny_run, capsys):
    run = tiny_run / "run"
    assert json.loads((run / "run.json").read_text())["experiment"] == "ebm"
    results = json.loads((run / "seed_0" / "results.json").read_text())
    assert results["best_step"] == 2 and "| AUC top, E(x) |" in (run / "report.md").read_text()
    code, _, err = run_cli(capsys, "train", "ebm", *tiny_args(tiny_run / "data", **{"cd.lr": 0.05}), "--out", run)
    assert code == 2 and "cd.lr: 0.001 -> 0.05" in err and "--extend" in err
    code, out, _ = run_cli(capsys, "train", "ebm", "--out", run, "--resume")  # the run's own config, no preset
    assert code == 0 and "seed 0: finished, results reused" in out


@pytest.mark.slow
def test_sample_evaluate_and_report_a_trained_run(tiny_run, capsys):
    run = tiny_run / "run"
    code, out, err = run_cli(capsys, "sample", run, "--num-jets", 20, "--out", tiny_run / "gen.h5", "--quiet")
    assert code == 0 and "wrote 20 generated jets" in out and "\r" not in err
    generated = read_jets(tiny_run / "gen.h5")
    assert generated.constituents.shape[0] == 20 and generated.attrs["model"] == "ebm"
    before = json.loads((run / "seed_0" / "results.json").read_text())
    code, out, _ = run_cli(capsys, "evaluate", run)
    assert code == 0 and "seed 0: evaluating the selected checkpoint" in out
    assert json.loads((run / "seed_0" / "results.json").read_text())["best_step"] == before["best_step"]
    assert json.loads((run / "history.jsonl").read_text().splitlines()[-1])["mode"] == "evaluate"
    code, out, _ = run_cli(capsys, "report", run / "seed_0", "--out", tiny_run / "sweep")
    report = (tiny_run / "sweep" / "report.md").read_text()
    assert code == 0 and "## Against the paper" in report and "## Provenance" in report
    assert "(../run/seed_0/report.md)" in report and (tiny_run / "sweep" / "learning_curve.png").exists()
    assert run_cli(capsys, "report", run / "seed_0")[0] == 2  # a seed directory needs --out
