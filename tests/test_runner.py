"""The runner's guarantees (`jaxebm.runs`), on a toy experiment that trains nothing (seconds per test):
provenance written once, refused config changes, --extend, --force, steps below the trained count, the
checkpoint's config, data files reused only when they match, one writer per directory."""
import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
import pytest

from jaxebm.config import to_dict
from jaxebm.runs import DataFile, DataFileMismatch, Experiment, RunLock, RunLocked, RunOptions, RunRefused
from jaxebm.runs import run_experiment
from jaxebm.runs.runner import check_seed_records
from jaxebm.runs.state import RunState
from jaxebm.runs.trained import evaluate_run, report_runs
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.state import TrainState
from synthetic_jets import write_jet_file


@dataclass(frozen=True)
class ToyRun:
    num_steps: int = 10


@dataclass(frozen=True)
class ToyConfig:
    name: str = "toy"
    seeds: tuple[int, ...] = (0,)
    lr: float = 1e-4
    data_dir: str = ""
    data_seed: int = 1
    run: ToyRun = field(default_factory=ToyRun)


class Toy:
    """A toy `Experiment`: one data file; training saves a checkpoint at ``run.num_steps`` (with the
    config, or none when ``store_config`` is off) and records which seeds it trained."""

    def __init__(self):
        self.trained: list[int] = []
        self.described = 0
        self.store_config = True
        self.fail_after_checkpoint = False
        self.reports = []

    def data_files(self, config):
        path = Path(config.data_dir) / "train.h5"
        attrs = {"process": "qcd", "seed": config.data_seed, "num_jets": 16}
        return {"train": DataFile(path, attrs, make=lambda progress: write_jet_file(path, 16, attrs=attrs))}

    def train_seed(self, config, job):
        self.trained.append(job.seed)
        state = TrainState(step=jnp.int32(config.run.num_steps), params={"w": jnp.ones(2)}, opt_state=(),
                           ema_params={"w": jnp.ones(2)}, buffer=(), key=jnp.zeros(2, jnp.uint32),
                           lr_scale=jnp.float32(1))
        with Checkpointer(job.directory / "checkpoints") as ckpt:
            ckpt.save(state, config=config if self.store_config else None)
        if self.fail_after_checkpoint:
            raise KeyboardInterrupt("interrupted after a checkpoint")

    def evaluate_seed(self, config, job, trained):
        return {"seed": job.seed, "num_steps": config.run.num_steps}

    def write_summary(self, out_dir, config, per_seed, *, record, seed_dirs):
        summary = {"seeds": [r["seed"] for r in per_seed], "record": record is not None}
        (out_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    def write_report(self, out_dir, config, per_seed, *, record, seed_dirs):
        self.reports.append((config.seeds, seed_dirs))

    def describe(self, out_dir, config, paths):
        self.described += 1

    def experiment(self) -> Experiment:
        return Experiment(name="toy", config_class=ToyConfig, presets=Path("."), validate=lambda config: None,
                          data_files=self.data_files, describe_data=self.describe, train_seed=self.train_seed,
                          load_seed=lambda config, job: None, evaluate_seed=self.evaluate_seed, write_summary=self.write_summary,
                          write_report=self.write_report, sample=None)


@pytest.fixture
def toy(tmp_path):
    return Toy(), ToyConfig(data_dir=str(tmp_path / "data")), tmp_path / "run"


def run(toy_triple, mode="auto", **changes):
    experiment, config, out = toy_triple
    config = dataclasses.replace(config, **changes)
    return run_experiment(experiment.experiment(), config, out, RunOptions(mode=mode, progress=False))


def test_new_run_records_provenance_once_and_reuses_results(toy):
    experiment, config, out = toy
    run(toy)
    record = json.loads((out / "run.json").read_text())
    assert record["experiment"] == "toy" and record["config"] == to_dict(config)
    assert {"jaxebm", "jax", "jaxlib", "devices", "git_commit", "created", "host", "command"} <= set(record)
    data = record["data"]["train"]
    assert data["attrs"]["seed"] == 1 and data["num_jets"] == 16 and data["size_bytes"] > 0
    config_text, config_mtime = (out / "config.json").read_text(), (out / "config.json").stat().st_mtime_ns
    run_json_mtime = (out / "run.json").stat().st_mtime_ns

    run(toy)  # finished: results reused, nothing retrained, records not rewritten
    assert experiment.trained == [0]
    assert (out / "config.json").read_text() == config_text
    assert (out / "config.json").stat().st_mtime_ns == config_mtime
    assert (out / "run.json").stat().st_mtime_ns == run_json_mtime
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["mode"] for h in history] == ["new", "resume"]


def test_a_changed_config_is_refused_naming_each_key(toy):
    run(toy)
    before = (out := toy[2] / "config.json").read_text()
    with pytest.raises(RunRefused, match=r"lr: 0\.0001 -> 0\.05\n  run\.num_steps: 10 -> 20") as error:
        run(toy, lr=0.05, run=ToyRun(20))
    assert "--extend" in str(error.value) and "--force" in str(error.value)
    assert out.read_text() == before and toy[0].trained == [0]


def test_extend_continues_finished_seeds_keeps_their_results_and_adds_seeds(toy):
    experiment, _, out = toy
    run(toy)
    run(toy, mode="extend", run=ToyRun(20), seeds=(0, 1))
    assert experiment.trained == [0, 0, 1]
    assert json.loads((out / "seed_0" / "results.step10.json").read_text())["num_steps"] == 10
    assert json.loads((out / "seed_0" / "results.json").read_text())["num_steps"] == 20
    assert json.loads((out / "config.json").read_text())["run"]["num_steps"] == 20
    assert json.loads((out / "seed_0" / "config.json").read_text())["run"]["num_steps"] == 20
    history = json.loads((out / "history.jsonl").read_text().splitlines()[-1])
    assert history["mode"] == "extend" and ["run.num_steps", 10, 20] in history["changes"]
    for changes, message in (({"run": ToyRun(15)}, r"run\.num_steps: 20 -> 15 \(an extension trains longer"),
                             ({"seeds": (1,)}, r"seeds: \(0, 1\) -> \(1,\) \(an extension keeps every seed"),
                             ({"lr": 0.05, "run": ToyRun(30)}, r"lr: 0\.0001 -> 0\.05")):
        with pytest.raises(RunRefused, match=message):
            run(toy, mode="extend", **{"seeds": (0, 1), **changes})


def test_force_moves_the_old_run_aside_and_starts_a_new_one(toy):
    experiment, _, out = toy
    run(toy)
    run(toy, mode="force", lr=0.05)
    aside = list(out.parent.glob("run.replaced-*"))
    assert len(aside) == 1 and json.loads((aside[0] / "config.json").read_text())["lr"] == 1e-4
    assert (aside[0] / "seed_0" / "results.json").exists()
    assert json.loads((out / "config.json").read_text())["lr"] == 0.05 and experiment.trained == [0, 0]


def test_fewer_steps_than_trained_are_refused(toy):
    experiment, _, out = toy
    experiment.store_config = False  # a run directory from before config.json: only checkpoints say how long
    run(toy)
    for recorded in (out / "config.json", out / "seed_0" / "config.json", out / "seed_0" / "results.json"):
        recorded.unlink()
    with pytest.raises(RunRefused, match=r"trained for 10 steps, more than run\.num_steps = 5"):
        run(toy, run=ToyRun(5))


def test_a_seed_counts_as_trained_to_its_newest_finished_checkpoint(toy):
    _, config, out = toy
    run(toy)
    latest = out / "seed_0" / "checkpoints" / "latest"
    for name in ("2", "7", "40.orbax-checkpoint-tmp-1"):  # older periodic checkpoints, an unfinished later save
        (latest / name).mkdir()
    assert RunState.read(out).seeds[0].trained_steps == 10
    with pytest.raises(RunRefused, match=r"trained for 10 steps, more than run\.num_steps = 9"):
        check_seed_records(RunState.read(out), to_dict(dataclasses.replace(config, run=ToyRun(9))))
    run(toy, mode="extend", run=ToyRun(20))
    assert json.loads((out / "seed_0" / "results.step10.json").read_text())["num_steps"] == 10


def test_a_resumed_seed_says_where_it_resumes(toy):
    experiment, config, out = toy
    experiment.fail_after_checkpoint = True
    with pytest.raises(KeyboardInterrupt):
        run(toy)
    experiment.fail_after_checkpoint = False
    lines = []
    run_experiment(experiment.experiment(), config, out, RunOptions(progress=False, say=lines.append))
    assert f"seed 0: resuming from its checkpoint of step 10, training to step 10 in {out / 'seed_0'}" in lines


def test_the_config_stored_with_a_checkpoint_is_compared_on_resume(toy):
    experiment, _, out = toy
    experiment.fail_after_checkpoint = True
    with pytest.raises(KeyboardInterrupt):
        run(toy)
    for path in (out / "config.json", out / "seed_0" / "config.json"):  # records edited by hand
        path.write_text(json.dumps({**json.loads(path.read_text()), "lr": 0.05}))
    experiment.fail_after_checkpoint = False
    with pytest.raises(RunRefused, match=r"seed_0 \(newest checkpoint\) was trained with another config.*\n"
                                         r"  lr: 0\.0001 -> 0\.05"):
        run(toy, lr=0.05)
    assert experiment.trained == [0]


def test_data_files_are_reused_only_when_their_attributes_match(toy):
    experiment, config, out = toy
    path = Path(config.data_dir) / "train.h5"
    write_jet_file(path, 16, attrs={"process": "qcd", "seed": 2, "num_jets": 16})
    with pytest.raises(DataFileMismatch, match=r"train\.h5 was made with other settings.*\n  seed: file 2, config 1"
                                               r"\nTo regenerate it: delete .*train\.h5") as error:
        run(toy)
    path.write_bytes(b"not an HDF5 file")
    with pytest.raises(DataFileMismatch, match=r"data file 'train' is unreadable: .*train\.h5.*To regenerate it"):
        run(toy)
    assert experiment.described == 0 and experiment.trained == [] and "train.h5" in str(error.value)


def test_a_data_file_replaced_after_the_run_began_is_refused(toy):
    experiment, config, out = toy
    experiment.fail_after_checkpoint = True
    with pytest.raises(KeyboardInterrupt):
        run(toy)
    path = Path(config.data_dir) / "train.h5"
    write_jet_file(path, 16, attrs={"process": "qcd", "seed": 1, "num_jets": 16}, seed=5)  # same attrs, new file
    experiment.fail_after_checkpoint = False
    with pytest.raises(DataFileMismatch, match=r"train\.h5 changed since this run began"):
        run(toy)


HOLDER = ("import sys; from jaxebm.runs.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
          "print('locked', flush=True); sys.stdin.read()")


def test_a_second_writer_is_refused_naming_the_directory_and_the_holder(toy):
    out = toy[2]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=rf"{out} is in use by process {holder.pid}"):
            run(toy)
        with pytest.raises(RunLocked):
            RunLock(out).acquire()
    finally:
        holder.communicate("")
    run(toy)  # the holder is gone: its lock went with it
    assert toy[0].trained == [0]


def test_evaluating_names_a_missing_data_file_and_how_to_make_it(toy):
    experiment, config, out = toy
    run(toy)
    (Path(config.data_dir) / "train.h5").unlink()
    with pytest.raises(DataFileMismatch, match=r"data file 'train' is missing: .*train\.h5; `jaxebm train toy --out "
                                               r".*run --resume` makes it again"):
        evaluate_run(experiment.experiment(), out)


def test_a_report_averages_only_seeds_of_one_config(toy, tmp_path):
    experiment, config, out = toy
    run(toy)
    run((experiment, config, tmp_path / "more"), seeds=(1,))
    run((experiment, config, tmp_path / "other"), seeds=(2,), lr=0.05)
    report_runs(experiment.experiment(), [out, tmp_path / "more" / "seed_1"], tmp_path / "sweep")
    assert experiment.reports == [((0, 1), [out / "seed_0", tmp_path / "more" / "seed_1"])]
    with pytest.raises(RunRefused, match=r"trained with different configs.*\n  lr: 0\.0001 -> 0\.05"):
        report_runs(experiment.experiment(), [out, tmp_path / "other"], tmp_path / "sweep")
    with pytest.raises(RunRefused, match=r"a seed appears twice"):
        report_runs(experiment.experiment(), [out, out / "seed_0"], tmp_path / "sweep")
