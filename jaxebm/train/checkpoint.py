"""Orbax checkpoints of a whole `TrainState` plus a JSON side entry with the data position and config.

Layout under ``directory``::

    latest/<step>/state   periodic saves, the last ``max_to_keep`` kept
    latest/<step>/meta    JSON: step, data_position, config, metrics, key_impl, extra
    best/<step>/...       the two best saves by ``best_metric`` (only saves that report it)

Every leaf of the state is saved (parameters, optimiser, EMA, replay buffer, step, learning-rate
scale); the typed PRNG key is stored as its key data and re-wrapped on restore. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a crash never leaves a
half-written checkpoint that looks finished. Saves are asynchronous: `wait_until_finished` blocks
until they are on disk (`restore` and `close` call it).

A process killed while saving leaves Orbax temporary directories (``<step>.orbax-checkpoint-tmp...``)
and, when it died during the write of a best checkpoint, a best history without that step. `recover`
(the training driver calls it on resume) removes the temporary directories and offers every periodic
checkpoint that records ``best_metric`` but is missing from ``best/`` to the best checkpoints again, so
the same step is selected as in an uninterrupted run.

A checkpoint damaged later (a truncated or deleted array file, lost metadata) is skipped on restore
with a warning: the newest readable periodic checkpoint is used, and for ``best=True`` the runner-up
best one. When no best checkpoint is readable the error says which directory to delete.

Example::

    with Checkpointer(run_dir / "checkpoints", max_to_keep=3, best_metric="val_energy_gap") as ckpt:
        ckpt.save(state, data_position=loader.position, config=config)
        ...
        state, meta = ckpt.restore(state)          # newest readable checkpoint
        loader.restore(meta["data_position"])
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxebm.jsonable import to_jsonable
from jaxebm.train.state import TrainState

__all__ = ["CheckpointError", "Checkpointer"]

log = logging.getLogger(__name__)

_READ_ERRORS = (ValueError, OSError, KeyError)  # what Orbax / TensorStore raise on unreadable data
_BEST_KEPT = 2  # best checkpoints kept: the runner-up stands in when the best one is damaged
_TMP_MARK = ".orbax-checkpoint-tmp"  # in the name of a save Orbax has not finished


class CheckpointError(ValueError):
    """A checkpoint that does not fit the template, or no readable checkpoint at all."""


def _storable(state: TrainState) -> TrainState:
    """The state with its typed key replaced by the key data (uint32)."""
    return state.replace(key=jax.random.key_data(state.key))


def _abstract_storable(template: TrainState) -> TrainState:
    """Shapes and dtypes of `_storable(template)`; ``template`` may be concrete or abstract."""
    return jax.eval_shape(_storable, template)


def _check_shapes(stored_tree, expected: TrainState, where: str) -> None:
    """Raise `CheckpointError` naming the first leaf whose shape or dtype differs from ``expected``."""
    stored = ocp.tree.to_flat_dict(stored_tree)
    wanted = ocp.tree.to_flat_dict(expected)
    if set(stored) != set(wanted):
        missing, extra = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
        raise CheckpointError(f"{where}: state leaves differ; missing {missing[:5]}, unexpected {extra[:5]}")
    for path, leaf in wanted.items():
        found = stored[path]
        if tuple(found.shape) != tuple(leaf.shape) or np.dtype(found.dtype) != np.dtype(leaf.dtype):
            raise CheckpointError(
                f"{where}: leaf {'/'.join(path)} is {tuple(found.shape)} {np.dtype(found.dtype)} in the checkpoint, "
                f"the template wants {tuple(leaf.shape)} {np.dtype(leaf.dtype)}")


def _read_error(error: BaseException) -> BaseException | None:
    """The first of ``error`` and the errors it was raised from that is one of `_READ_ERRORS`, or None.

    Orbax wraps TensorStore's error on a truncated or missing array file (a ValueError such as
    DATA_LOSS, OUT_OF_RANGE or NOT_FOUND) in a bare `Exception`, so the chain of causes is searched.
    """
    while error is not None and not isinstance(error, _READ_ERRORS):
        error = error.__cause__
    return error


def _stored_state_tree(manager: ocp.CheckpointManager, step: int):
    """Shapes and dtypes of the state saved at ``step``; FileNotFoundError when its metadata is gone."""
    metadata = manager.item_metadata(step)["state"]
    if metadata is None:
        raise FileNotFoundError(f"{manager.directory}/{step}/state: no array metadata")
    return metadata.tree


def _remove_unfinished_saves(directory: str | os.PathLike) -> list[str]:
    """Delete the Orbax temporary directories (saves cut short by a kill) directly under ``directory``;
    returns their names. Only call it while no save into ``directory`` can be running."""
    directory = Path(directory)
    found = sorted(p for p in directory.iterdir() if _TMP_MARK in p.name) if directory.is_dir() else []
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return [path.name for path in found]


def _save(manager: ocp.CheckpointManager, step: int, args: ocp.args.Composite, metrics: dict | None = None) -> None:
    """Save ``step`` through ``manager``, creating its directory first."""
    os.makedirs(os.fspath(manager.directory), exist_ok=True)
    manager.save(step, args=args, metrics=metrics, force=True)


def _item_handlers() -> dict:
    """Handlers of the two items, registered up front so a fresh manager can read metadata."""
    return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


class Checkpointer:
    """Periodic (last ``max_to_keep``) and best-by-metric checkpoints of a `TrainState`.

    Args:
      directory: holds ``latest/`` and ``best/``, each created at its first save (reading a seed without
        checkpoints leaves nothing behind).
      max_to_keep: periodic checkpoints kept.
      best_metric: name in the ``metrics`` given to `save` that ranks the ``best/`` checkpoints
        (None: no best checkpoint). best_mode: "min" or "max".
      is_async: write in a background thread (`wait_until_finished` to block).
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, best_metric: str | None = None,
                 best_mode: str = "min", is_async: bool = True):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        self.directory = os.path.abspath(os.fspath(directory))  # Orbax rejects relative paths
        self.best_metric = best_metric
        self.best_mode = best_mode
        self._latest = ocp.CheckpointManager(
            os.path.join(self.directory, "latest"), item_handlers=_item_handlers(),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False,
                                                 enable_async_checkpointing=is_async))
        self._best = None
        if best_metric is not None:
            try:
                self._best = ocp.CheckpointManager(
                    os.path.join(self.directory, "best"), item_handlers=_item_handlers(),
                    options=ocp.CheckpointManagerOptions(
                        max_to_keep=_BEST_KEPT, create=False, best_fn=lambda metrics: float(metrics[best_metric]),
                        best_mode=best_mode, keep_checkpoints_without_metrics=False,
                        enable_async_checkpointing=is_async))
            except _READ_ERRORS as error:  # e.g. a damaged metrics file, read when the manager starts
                self._latest.close()
                raise CheckpointError(f"best checkpoints unreadable ({type(error).__name__}: {str(error)[:200]}). "
                                      f"{self._best_recovery_hint()}") from error

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def steps(self, *, best: bool = False) -> list[int]:
        """Saved steps, oldest first."""
        manager = self._manager(best)
        return sorted(manager.all_steps())

    def latest_step(self) -> int | None:
        """Newest periodic checkpoint's step, or None."""
        return self._latest.latest_step()

    def save(self, state: TrainState, *, data_position: Any = None, config: Any = None,
             metrics: dict | None = None, extra: dict | None = None) -> int:
        """Save ``state`` as step ``int(state.step)``; returns that step.

        ``data_position`` (e.g. a loader's ``(epoch, batch_index)``), ``config`` (dataclasses or dicts)
        and ``extra`` go to the JSON entry. Saved steps at or after this one (left over from before
        a rollback) are deleted first. If ``metrics`` holds ``best_metric`` the state is also offered
        to the best checkpoint.
        """
        step = int(state.step)
        meta = to_jsonable({"step": step, "data_position": data_position, "config": config,
                            "metrics": metrics, "key_impl": str(jax.random.key_impl(state.key)),
                            "extra": extra})
        args = self._save_args(state, meta)
        self._delete_from(self._latest, step)
        _save(self._latest, step, args)
        if self._best is not None and metrics is not None and self.best_metric in metrics:
            self._delete_from(self._best, step, only_equal=True)
            _save(self._best, step, args, metrics=to_jsonable(metrics))
        return step

    def recover(self, template: TrainState) -> list[int]:
        """Finish what a killed save left (call before training resumes, while nothing else writes here):
        remove unfinished saves (logged), then offer to ``best/`` each periodic checkpoint whose recorded
        metrics rank it among the kept best but that ``best/`` lacks. Returns the steps added to ``best/``."""
        self.wait_until_finished()
        for manager in (self._latest, self._best):
            if manager is not None and (removed := _remove_unfinished_saves(manager.directory)):
                log.warning("removed unfinished checkpoint saves %s in %s", removed, manager.directory)
        if self._best is None:
            return []
        missing = {step: meta for step, meta in self._periodic_metas().items()
                   if step not in self._best.all_steps() and self.best_metric in (meta.get("metrics") or {})}
        added = [step for step in self._best_of(missing) if step in missing]
        for step in added:
            state, meta = self.restore(template, step)
            _save(self._best, step, self._save_args(state, meta), metrics=meta["metrics"])
            log.warning("best checkpoint of step %d was not saved (killed?): rebuilt from %s/%d",
                        step, self._latest.directory, step)
        self.wait_until_finished()
        return added

    def restore(self, template: TrainState, step: int | None = None, *, best: bool = False) -> tuple[TrainState, dict]:
        """Restore into the shapes of ``template`` (a concrete or abstract `TrainState`).

        ``step`` None tries the newest checkpoint first (``best``: the best one) and falls back to
        older (runner-up) ones while they are unreadable (logged). A checkpoint whose leaves do not
        match the template raises `CheckpointError` at once, as does finding none readable. Returns
        ``(state, meta)`` with ``meta`` the JSON entry.
        """
        self.wait_until_finished()
        manager = self._manager(best)
        if step is not None:
            candidates = [step]
        else:
            candidates = self._best_first(manager.all_steps()) if best else sorted(manager.all_steps(), reverse=True)
        expected = _abstract_storable(template)
        for candidate in candidates:
            where = f"{manager.directory}/{candidate}"
            try:
                _check_shapes(_stored_state_tree(manager, candidate), expected, where)
                restored = manager.restore(candidate, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(expected), meta=ocp.args.JsonRestore()))
            except CheckpointError:
                raise
            except Exception as error:  # noqa: BLE001 - Orbax raises a bare Exception on damaged arrays
                cause = _read_error(error)
                if cause is None:
                    raise
                log.warning("checkpoint %s unreadable (%s: %.300s); trying the next one", where,
                            type(cause).__name__, cause)
                continue
            meta = restored.meta
            key = jax.random.wrap_key_data(restored.state.key, impl=meta["key_impl"])
            return restored.state.replace(key=key), meta
        message = f"no readable checkpoint among steps {candidates} in {manager.directory}"
        hint = self._best_recovery_hint() if best else self._latest_recovery_hint(step)
        raise CheckpointError(f"{message}. {hint}")

    def wait_until_finished(self) -> None:
        """Block until every pending save is on disk."""
        for manager in (self._latest, self._best):
            if manager is not None:
                manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the managers."""
        self.wait_until_finished()
        for manager in (self._latest, self._best):
            if manager is not None:
                manager.close()

    @staticmethod
    def _save_args(state: TrainState, meta: dict) -> ocp.args.Composite:
        return ocp.args.Composite(state=ocp.args.StandardSave(_storable(state)), meta=ocp.args.JsonSave(meta))

    def _periodic_metas(self) -> dict[int, dict]:
        """``{step: JSON entry}`` of the readable periodic checkpoints."""
        metas = {}
        for step in self._latest.all_steps():
            try:
                metas[step] = self._latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            except Exception as error:  # noqa: BLE001 - a damaged entry: restore skips it too
                if _read_error(error) is None:
                    raise
        return metas

    def _best_of(self, candidates: dict[int, dict]) -> list[int]:
        """The ``_BEST_KEPT`` best steps among the kept best checkpoints and ``candidates`` (their JSON entries)."""
        sign = 1.0 if self.best_mode == "min" else -1.0
        values = {step: float(meta["metrics"][self.best_metric]) for step, meta in candidates.items()}
        for step in self._best.all_steps():
            try:
                values[step] = float((self._best.metrics(step) or {})[self.best_metric])
            except (*_READ_ERRORS, TypeError):
                continue
        return sorted(values, key=lambda step: (sign * values[step], -step))[:_BEST_KEPT]

    def _manager(self, best: bool) -> ocp.CheckpointManager:
        if best and self._best is None:
            raise ValueError("no best checkpoints: construct the Checkpointer with best_metric")
        return self._best if best else self._latest

    def _best_first(self, steps) -> list[int]:
        """``steps`` of the best checkpoints ordered best metric first; unranked steps last, newest first."""
        sign = 1.0 if self.best_mode == "min" else -1.0

        def rank(step: int) -> tuple[float, int]:
            try:
                metrics = self._best.metrics(step)
            except _READ_ERRORS:
                metrics = None
            if not metrics or self.best_metric not in metrics:
                return math.inf, -step
            return sign * float(metrics[self.best_metric]), -step

        return sorted(steps, key=rank)

    def _best_recovery_hint(self) -> str:
        """What to do when the best checkpoints cannot be read."""
        best_dir, latest_dir = os.path.join(self.directory, "best"), os.path.join(self.directory, "latest")
        return (f"To recover, delete the directory {best_dir} and rerun: training resumes from the periodic "
                f"checkpoints in {latest_dir} and later evaluations select a new best")

    def _latest_recovery_hint(self, step: int | None) -> str:
        """What to do when the periodic checkpoints cannot be read."""
        if step is not None:
            return "Restore without a step to fall back to the newest readable checkpoint"
        return (f"Every periodic checkpoint is damaged (the warnings above say how). Restore {self._latest.directory} "
                f"from a copy, or delete the directory {self.directory} and rerun to train this seed from the start")

    def _delete_from(self, manager: ocp.CheckpointManager, step: int, *, only_equal: bool = False) -> None:
        """Delete saved steps ``== step`` (``only_equal``) or ``>= step``."""
        manager.wait_until_finished()
        for saved in manager.all_steps():
            if saved == step or (saved > step and not only_equal):
                manager.delete(saved)
