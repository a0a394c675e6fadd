"""Commands on runs that have trained: evaluate again, draw samples, report over seeds (or a seed sweep).

Each reads the config the run recorded (``config.json``), never the command line's, so what it reports
is what was trained.

    evaluate_run(ebm.EXPERIMENT, Path("runs/demo"))
    sample_run(ebm.EXPERIMENT, Path("runs/demo"), 1000)                  # -> runs/demo/seed_0/generated_1000.h5
    report_runs(ebm.EXPERIMENT, [Path("runs/a"), Path("runs/b/seed_3")], Path("runs/ab"))
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import replace
from pathlib import Path

from jaxebm.config import ConfigError, from_dict
from jaxebm.data.io import write_jets
from jaxebm.runs.data import check_data_files, check_unchanged
from jaxebm.runs.errors import RunError, RunRefused
from jaxebm.runs.lock import RunLock
from jaxebm.runs.records import append_history, atomic_write_json, changes_between, format_changes, read_json
from jaxebm.runs.runner import Experiment, RunOptions, SeedJob
from jaxebm.runs.state import RunState

__all__ = ["evaluate_run", "recorded_config", "report_runs", "sample_run", "seed_dirs_with_results"]

_SEED_DIR = re.compile(r"seed_\d+")


def recorded_config(experiment: Experiment, state: RunState):
    """The config ``state``'s run recorded, as ``experiment.config_class``; `RunError` if there is none."""
    stored = state.stored_config
    if stored is None:
        raise RunError(f"{state.directory} holds no run (no config.json): train one with `jaxebm train`")
    try:
        return from_dict(experiment.config_class, stored)
    except ConfigError as error:
        raise ConfigError(f"{state.directory}: the recorded config no longer fits the '{experiment.name}' "
                          f"experiment: {error}") from None


def _existing_run(path: Path) -> RunState:
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    return RunState.read(path)


def evaluate_run(experiment: Experiment, run_dir: Path, options: RunOptions = RunOptions()) -> dict:
    """Evaluate every trained seed of ``run_dir`` again at its selected checkpoint (rewriting its
    ``results.json``, report and plots), then the summary. The data files must be the recorded ones."""
    state = _existing_run(run_dir)
    with RunLock(run_dir):
        config = recorded_config(experiment, state)
        files = {name: replace(f, make=None) for name, f in experiment.data_files(config).items()}
        check_data_files(files, missing_hint=f"`jaxebm train {experiment.name} --out {run_dir} --resume` "
                                             "makes it again")
        if state.record is not None:
            check_unchanged(state.record.get("data", {}), files)
        paths = {name: f.path for name, f in files.items()}
        jobs = [SeedJob(s.seed, s.directory, paths, options.progress) for s in state.seeds.values()
                if s.trained_steps is not None and s.seed in config.seeds]
        if not jobs:
            raise RunError(f"{run_dir}: no seed has a checkpoint yet; train it first")
        per_seed = []
        for job in jobs:
            options.say(f"seed {job.seed}: evaluating the selected checkpoint of {job.directory}")
            results = experiment.evaluate_seed(config, job, experiment.load_seed(config, job))
            atomic_write_json(job.directory / "results.json", results, sort_keys=False)
            per_seed.append(results)
        append_history(run_dir, "evaluate", seeds=[job.seed for job in jobs])
        return experiment.write_summary(run_dir, config, per_seed, record=state.record,
                                        seed_dirs=[job.directory for job in jobs])


def sample_run(experiment: Experiment, path: Path, num_jets: int, *, seed: int | None = None, rng: int = 0,
               out: Path | None = None, progress: bool = True, overwrite: bool = False) -> Path:
    """Draw ``num_jets`` jets from a trained seed (``path`` a seed directory, or a run directory and
    ``seed``, default its first trained seed) with PRNG seed ``rng``; writes a schema file (default
    ``<seed dir>/generated_<num_jets>.h5``) and returns its path. An existing file is replaced only with
    ``overwrite`` (else `FileExistsError`, before any work)."""
    if num_jets < 1:
        raise ConfigError(f"--num-jets must be >= 1, got {num_jets}")
    if _SEED_DIR.fullmatch(path.name):
        path, seed_in_path = path.parent, int(path.name.removeprefix("seed_"))
        if seed not in (None, seed_in_path):
            raise ConfigError(f"--seed {seed} disagrees with the seed directory seed_{seed_in_path}")
        seed = seed_in_path
    state = _existing_run(path)
    config = recorded_config(experiment, state)
    trained_seeds = [s.seed for s in state.seeds.values() if s.trained_steps is not None]
    if not trained_seeds:
        raise RunError(f"{state.directory}: no seed has a checkpoint yet; train it first")
    chosen = trained_seeds[0] if seed is None else seed
    if chosen not in trained_seeds:
        raise RunError(f"{state.directory}: seed {chosen} has no checkpoint (trained seeds: {trained_seeds})")
    paths = {name: data_file.path for name, data_file in experiment.data_files(config).items()}
    job = SeedJob(chosen, state.directory / f"seed_{chosen}", paths, progress)  # some experiments re-read their data
    out = out or job.directory / f"generated_{num_jets}.h5"
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it, or choose another --out")
    sample = experiment.sample(config, experiment.load_seed(config, job), num_jets, rng, progress)
    write_jets(out, sample)
    return out


def seed_dirs_with_results(paths: list[Path]) -> list[Path]:
    """Seed directories holding ``results.json``: each path is one, or a run directory holding them."""
    found = []
    for path in paths:
        if (path / "results.json").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.glob("seed_*") if (p / "results.json").is_file())
        else:
            raise RunError(f"{path}: no such run or seed directory")
    if not found:
        raise RunError(f"no finished seed (seed_*/results.json) under {', '.join(map(str, paths))}")
    return found


def report_runs(experiment: Experiment, paths: list[Path], out_dir: Path) -> dict:
    """The report over the finished seeds under ``paths`` (one run, or seeds of several runs with the same
    config: a seed sweep) into ``out_dir``. Seeds recorded with different configs, or the same seed twice,
    are refused with the differing keys."""
    seed_dirs = seed_dirs_with_results(paths)
    configs = [read_json(d / "config.json") for d in seed_dirs]
    if any(c is None for c in configs):
        raise RunError(f"{seed_dirs[configs.index(None)]}: no config.json, so its settings are unknown")
    for seed_dir, config in zip(seed_dirs[1:], configs[1:]):
        changes = [c for c in changes_between(configs[0], config) if c.key != "seeds"]
        if changes:
            raise RunRefused(f"{seed_dirs[0]} and {seed_dir} were trained with different configs, so one report "
                             f"cannot average them:\n{format_changes(changes)}")
    per_seed = [read_json(d / "results.json") for d in seed_dirs]
    seeds = [r["seed"] for r in per_seed]
    if len(set(seeds)) != len(seeds):
        raise RunRefused(f"a seed appears twice among {', '.join(map(str, seed_dirs))}: seeds {seeds}")
    config = dataclasses.replace(recorded_config(experiment, RunState(seed_dirs[0], configs[0], None, {})),
                                 seeds=tuple(seeds))
    record = read_json(seed_dirs[0].parent / "run.json")
    with RunLock(out_dir):
        return experiment.write_report(out_dir, config, per_seed, record=record, seed_dirs=seed_dirs)
