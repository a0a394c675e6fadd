"""One runner for every experiment: run directory, provenance, lock, seeds, resume, extension, reports.

An experiment is an `Experiment`: a config class and a few functions (data files, train a seed, load a
trained seed, evaluate a seed, write the summary). Its config is a frozen dataclass with ``name``,
``seeds`` and a ``run`` section holding ``num_steps``. The runner owns everything else:

1. validate the config (`jaxebm.config.check_config`, then the experiment's ``validate``: bad values,
   non-finite ones included, refused before anything is written);
2. lock ``<out>/.lock`` (a second writer is refused, naming the holder's pid);
3. compare the command with the directory: a run made with another config is refused, naming each
   changed key, unless ``extend`` (only a larger ``run.num_steps`` or more seeds: finished seeds with
   fewer steps are continued from their checkpoints, their old ``results.json`` kept as
   ``results.step<N>.json``) or ``force`` (the old directory is renamed ``<out>.replaced-<time>``,
   never deleted); seeds trained past ``run.num_steps``, or whose recorded / checkpointed config
   differs, are refused too;
4. check the data files (reused only with matching HDF5 attributes), make the missing ones;
5. record: ``config.json`` and ``run.json`` once, a line in ``history.jsonl`` per command;
6. per seed: reuse ``results.json``, else train (resuming from checkpoints) and evaluate;
7. the experiment's summary over seeds.

    summary = run_experiment(ebm.EXPERIMENT, config, Path("runs/ebm_jets/cpu"), RunOptions(mode="extend"))
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from jaxebm.config import check_config, save_config, to_dict
from jaxebm.runs.data import DataFile, check_data_files, check_unchanged, make_missing, record_data_files
from jaxebm.runs.errors import RunRefused
from jaxebm.runs.lock import RunLock
from jaxebm.runs.records import (
    Change, append_history, atomic_write_json, changes_between, format_changes, provenance, read_json,
)
from jaxebm.runs.state import RunState, trained_steps

__all__ = ["MODES", "Experiment", "RunOptions", "SeedJob", "check_seed_records", "open_run_directory", "plan_run",
           "run_experiment", "seed_jobs"]

MODES = ("auto", "resume", "extend", "force")
EXTENDABLE = ("run.num_steps", "seeds")


@dataclass(frozen=True)
class SeedJob:
    """One seed's work: its seed, directory, the data file paths by name, and whether to show progress bars."""

    seed: int
    directory: Path
    data: dict[str, Path]
    progress: bool = True


@dataclass(frozen=True)
class Experiment:
    """What an experiment gives the runner.

    name: registry name (``jaxebm train NAME``). config_class: frozen dataclass (``name``, ``seeds``,
    ``run.num_steps``). presets: directory of its TOML presets.
    validate(config): raise `jaxebm.config.ConfigError` naming the key of a bad value.
    data_files(config) -> {name: DataFile}. describe_data(out_dir, config, paths): data summaries.
    train_seed(config, job) -> trained (resumes from the job directory's checkpoints).
    load_seed(config, job) -> trained, from a trained seed's directory without training.
    evaluate_seed(config, job, trained) -> results dict (JSON), plots and a seed report.
    write_summary(out_dir, config, per_seed, *, record, seed_dirs) -> summary dict (report over seeds).
    write_report(out_dir, config, per_seed, *, record, seed_dirs): summary plus sweep plots.
    sample(config, trained, num_jets, seed) -> `jaxebm.data.io.JetSample`.
    """

    name: str
    config_class: type
    presets: Path
    validate: Callable[[Any], None]
    data_files: Callable[[Any], dict[str, DataFile]]
    describe_data: Callable[[Path, Any, dict[str, Path]], None]
    train_seed: Callable[[Any, SeedJob], Any]
    load_seed: Callable[[Any, SeedJob], Any]
    evaluate_seed: Callable[[Any, SeedJob, Any], dict]
    write_summary: Callable[..., dict]
    write_report: Callable[..., dict]
    sample: Callable[[Any, Any, int, int], Any]


@dataclass(frozen=True)
class RunOptions:
    """mode: "auto" (new run or resume the same config), "resume" (a run must exist), "extend", "force".
    progress: progress bars. say: where status lines go (``print``)."""

    mode: str = "auto"
    progress: bool = True
    say: Callable[[str], None] = print

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class Plan:
    """kind: "new", "resume" or "extend"; changes: config changes an extension makes; continued:
    ``(seed, trained steps)`` of the finished seeds an extension continues."""

    kind: str
    changes: tuple[Change, ...] = ()
    continued: tuple[tuple[int, int], ...] = ()


def _refusal(directory: Path, changes: list[Change]) -> RunRefused:
    return RunRefused(
        f"{directory} holds a run made with another config:\n{format_changes(changes)}\n"
        f"Run it with its own config ({directory / 'config.json'}; `jaxebm train` without --preset uses it) to "
        f"resume it, add --extend to continue it "
        f"(allowed: a larger run.num_steps, more seeds), or --force to start a new run there (the old one is "
        f"moved to {directory}.replaced-<time>, not deleted)")


def _extension_problems(changes: list[Change]) -> list[str]:
    """Why ``changes`` are not an extension: other keys, fewer steps, dropped seeds."""
    problems = [str(c) for c in changes if c.key not in EXTENDABLE]
    for change in changes:
        if change.key == "run.num_steps" and not change.new > change.old:
            problems.append(f"{change} (an extension trains longer, not shorter)")
        if change.key == "seeds" and not set(change.old) <= set(change.new):
            problems.append(f"{change} (an extension keeps every seed of the run)")
    return problems


def check_seed_records(state: RunState, config: dict[str, Any]) -> None:
    """Refuse seeds of ``config`` that recorded (``seed_<s>/config.json``, newest checkpoint) another config
    than ``config`` apart from ``seeds`` / ``run.num_steps``, or were trained past ``run.num_steps``."""
    num_steps = config["run"]["num_steps"]
    for seed_state in (s for s in state.seeds.values() if s.seed in config["seeds"]):
        records = (("config.json", seed_state.config), ("newest checkpoint", seed_state.checkpoint_config))
        for where, recorded in records:
            changes = [c for c in changes_between(recorded or config, config) if c.key not in EXTENDABLE]
            if changes:
                raise RunRefused(f"{seed_state.directory} ({where}) was trained with another config than this "
                                 f"command's:\n{format_changes(changes)}\nStart a new run with --force (the old "
                                 "directory is renamed, not deleted) or use another --out")
        if seed_state.trained_steps is not None and seed_state.trained_steps > num_steps:
            raise RunRefused(f"{seed_state.directory} has been trained for {seed_state.trained_steps} steps, more than "
                             f"run.num_steps = {num_steps}: its results would be labelled with the wrong length. "
                             f"Set run.num_steps >= {seed_state.trained_steps}, or start a new run with --force")


def plan_run(state: RunState, config: dict[str, Any], mode: str) -> Plan:
    """Decide what a command does with the directory (see the module docstring); raises `RunRefused`."""
    stored = state.stored_config
    if stored is None and mode in ("resume", "extend"):
        raise RunRefused(f"{state.directory} holds no run to {mode}: start one without --{mode}")
    changes = [] if stored is None else changes_between(stored, config)
    if changes and mode != "extend":
        raise _refusal(state.directory, changes)
    problems = _extension_problems(changes)
    if problems:
        raise RunRefused(f"--extend cannot make these changes to {state.directory}:\n  " + "\n  ".join(problems)
                         + "\nStart a new run with --force instead (the old one is renamed, not deleted)")
    check_seed_records(state, config)
    if stored is None:
        return Plan("new")
    num_steps = config["run"]["num_steps"]
    continued = tuple((s.seed, s.trained_steps or 0) for s in state.seeds.values()
                      if s.has_results and s.seed in config["seeds"] and (s.trained_steps or 0) < num_steps)
    return Plan("extend" if mode == "extend" else "resume", tuple(changes), continued)


def _aside_name(out_dir: Path) -> Path:
    """``<out_dir>.replaced-<local time>`` (with ``-2``, ``-3``, ... if taken)."""
    stem = f"{out_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    candidates = (out_dir.with_name(stem + (f"-{i}" if i > 1 else "")) for i in range(1, 1000))
    return next(path for path in candidates if not path.exists())


@contextmanager
def open_run_directory(out_dir: Path, *, replace_old: bool, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold ``out_dir``'s lock; with ``replace_old`` an existing run there is first renamed (under its lock)
    to ``<out_dir>.replaced-<time>`` and a fresh directory is locked instead. A directory this call created
    that holds nothing but the lock at the end (a refused command) is removed."""
    created = not out_dir.exists()
    lock = RunLock(out_dir).acquire()
    try:
        if replace_old and RunState.read(out_dir).holds_run:
            aside = _aside_name(out_dir)
            out_dir.rename(aside)
            lock.release()
            say(f"moved the previous run to {aside}")
            lock = RunLock(out_dir).acquire()
        yield
    finally:
        lock.release()
        if created and out_dir.is_dir() and [p.name for p in out_dir.iterdir()] == [".lock"]:
            (out_dir / ".lock").unlink()
            out_dir.rmdir()


def _record(out_dir: Path, experiment: Experiment, config, plan: Plan, files: dict[str, DataFile]) -> dict | None:
    """Set the results of continued seeds aside (first, so an interruption cannot leave stale results),
    write ``config.json`` (new run, extension, legacy run without one) and ``run.json`` (new run), append
    to ``history.jsonl``; returns the ``run.json`` content (None for a legacy run without one)."""
    for seed, steps in plan.continued:
        seed_dir = out_dir / f"seed_{seed}"
        os.replace(seed_dir / "results.json", seed_dir / f"results.step{steps}.json")
    if plan.kind in ("new", "extend") or not (out_dir / "config.json").exists():
        save_config(config, out_dir / "config.json")
    if plan.kind == "new":
        atomic_write_json(out_dir / "run.json", provenance(experiment.name, to_dict(config), record_data_files(files)))
    append_history(out_dir, plan.kind, changes=[list(c) for c in plan.changes],
                   continued=[list(c) for c in plan.continued])
    return read_json(out_dir / "run.json")


def seed_jobs(out_dir: Path, seeds, paths: dict[str, Path], progress: bool) -> list[SeedJob]:
    """A `SeedJob` per seed, in ``out_dir/seed_<s>``."""
    return [SeedJob(seed, out_dir / f"seed_{seed}", paths, progress) for seed in seeds]


def _run_seed(experiment: Experiment, config, job: SeedJob, say: Callable[[str], None]) -> dict:
    """Reuse the seed's results, or train (resuming) and evaluate it. The seed's ``config.json`` is written
    when it starts, and again only when an extension changed the config."""
    results_path = job.directory / "results.json"
    if results_path.exists():
        say(f"seed {job.seed}: finished, results reused from {results_path}")
        return read_json(results_path)
    job.directory.mkdir(parents=True, exist_ok=True)
    if changes_between(read_json(job.directory / "config.json") or {}, to_dict(config)):
        save_config(config, job.directory / "config.json")
    resumed_at = trained_steps(job.directory)
    resuming = "" if resumed_at is None else f"resuming from its checkpoint of step {resumed_at}, "
    say(f"seed {job.seed}: {resuming}training to step {config.run.num_steps} in {job.directory}")
    trained = experiment.train_seed(config, job)
    say(f"seed {job.seed}: evaluating")
    results = experiment.evaluate_seed(config, job, trained)
    atomic_write_json(results_path, results, sort_keys=False)
    return results


def run_experiment(experiment: Experiment, config, out_dir: Path, options: RunOptions = RunOptions()) -> dict:
    """Train and evaluate every seed of ``config`` into ``out_dir`` (see the module docstring); returns
    the experiment's summary."""
    check_config(config)
    experiment.validate(config)
    out_dir = Path(out_dir)
    if options.mode in ("resume", "extend") and not out_dir.is_dir():
        raise RunRefused(f"{out_dir} holds no run to {options.mode}: start one without --{options.mode}")
    with open_run_directory(out_dir, replace_old=options.mode == "force", say=options.say):
        state = RunState.read(out_dir)
        plan = plan_run(state, to_dict(config), options.mode)
        files = experiment.data_files(config)
        check_data_files(files)
        if plan.kind != "new" and state.record is not None:
            check_unchanged(state.record.get("data", {}), files)
        make_missing(files, options.progress)
        record = _record(out_dir, experiment, config, plan, files)
        paths = {name: f.path for name, f in files.items()}
        experiment.describe_data(out_dir, config, paths)
        jobs = seed_jobs(out_dir, config.seeds, paths, options.progress)
        per_seed = [_run_seed(experiment, config, job, options.say) for job in jobs]
        return experiment.write_summary(out_dir, config, per_seed, record=record,
                                        seed_dirs=[job.directory for job in jobs])

