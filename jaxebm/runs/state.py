"""What a run directory already holds, read before any command changes it.

Layout (any experiment)::

    <out>/config.json  run.json  history.jsonl  .lock
    <out>/seed_<s>/config.json  results.json  checkpoints/latest/<step>/{state,meta}  ...

A directory written before ``config.json`` existed at the top (a legacy run) is described by its
first seed's ``config.json``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxebm.runs.records import read_json

__all__ = ["RunState", "SeedState", "checkpoint_config", "trained_steps"]

_SEED_DIR = re.compile(r"seed_(\d+)")


def trained_steps(seed_dir: Path) -> int | None:
    """Step of the newest finished periodic checkpoint (``checkpoints/latest/<step>``), or None."""
    latest = seed_dir / "checkpoints" / "latest"
    steps = [int(p.name) for p in latest.iterdir() if p.name.isdigit()] if latest.is_dir() else []
    return max(steps, default=None)


def checkpoint_config(seed_dir: Path) -> dict[str, Any] | None:
    """The config stored in the JSON entry of the newest readable periodic checkpoint, or None."""
    latest = seed_dir / "checkpoints" / "latest"
    if trained_steps(seed_dir) is None:
        return None
    import orbax.checkpoint as ocp

    logging.getLogger("absl").setLevel(logging.ERROR)
    manager = ocp.CheckpointManager(latest.resolve(), item_handlers={"meta": ocp.JsonCheckpointHandler()},
                                    options=ocp.CheckpointManagerOptions(create=False))
    try:
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            except Exception:  # noqa: BLE001 - a damaged entry: the loop falls back to an older one too
                continue
            return meta.get("config") if isinstance(meta, dict) else None
        return None
    finally:
        manager.close()


@dataclass(frozen=True)
class SeedState:
    """One ``seed_<s>`` directory: trained steps, whether it has results, the configs it recorded."""

    seed: int
    directory: Path
    trained_steps: int | None
    has_results: bool
    config: dict[str, Any] | None
    checkpoint_config: dict[str, Any] | None

    @classmethod
    def read(cls, seed: int, directory: Path) -> SeedState:
        """The seed's state; a finished seed whose experiment keeps no ``checkpoints/latest`` of its own (e.g.
        one checkpoint directory per model) counts as trained to its recorded ``run.num_steps``."""
        config, has_results = read_json(directory / "config.json"), (directory / "results.json").exists()
        steps = trained_steps(directory)
        if steps is None and has_results and config is not None:
            steps = config.get("run", {}).get("num_steps")
        return cls(seed, directory, steps, has_results, config, checkpoint_config(directory))


@dataclass(frozen=True)
class RunState:
    """A run directory as found: ``config`` (``config.json``), ``record`` (``run.json``), its seeds."""

    directory: Path
    config: dict[str, Any] | None
    record: dict[str, Any] | None
    seeds: dict[int, SeedState]

    @classmethod
    def read(cls, directory: Path) -> RunState:
        seed_dirs = sorted((int(m.group(1)), p) for p in directory.glob("seed_*")
                           if p.is_dir() and (m := _SEED_DIR.fullmatch(p.name)))
        return cls(directory, read_json(directory / "config.json"), read_json(directory / "run.json"),
                   {seed: SeedState.read(seed, path) for seed, path in seed_dirs})

    @property
    def stored_config(self) -> dict[str, Any] | None:
        """The config the run was made with: ``config.json``, else (legacy) the first seed's recorded one."""
        if self.config is not None:
            return self.config
        return next((s.config or s.checkpoint_config for s in self.seeds.values()
                     if s.config or s.checkpoint_config), None)

    @property
    def holds_run(self) -> bool:
        """Whether anything of a run is here (a config or a seed directory)."""
        return self.config is not None or bool(self.seeds)
