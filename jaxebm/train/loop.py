"""The one training driver of every system: jitted step + metrics log + health monitor + checkpoints +
rollback + resume. A system supplies a step, a state and batches (`docs/ADDING_A_SYSTEM.md`); multi-phase
training (AE then NAE, ConVAE then flow) is a sequence of `train_loop` calls, one per phase, over one
checkpoint sequence (`begin_phase` turns the end state of one phase into the start of the next).

State protocol: any pytree (a ``flax.struct.dataclass``) with ``step`` (int32 scalar), ``params``,
``opt_state``, ``key`` (typed PRNG key) and ``lr_scale`` (float32 scalar multiplying every update), plus what
the system needs besides (EMA parameters, a replay buffer, spectral-norm statistics). The step
``step_fn(state, *batch) -> (state, metrics)`` advances ``step``, keeps the old parameters when its loss or
gradient is not finite, and reports at least ``loss`` (or ``nll``), ``is_finite`` and ``lr_scale``; the
energy checks of `HealthMonitor` read ``e_pos``, ``e_neg`` and ``gap`` where a step reports them.

Batch protocol: ``batches`` is any iterable of tuples (``(x (B, N, F), mask (B, N))`` pairs, ``(x, mask,
labels (B,))`` triples for a hybrid step, ``(images,)`` for the NAE), passed on as ``step_fn(state, *batch)``.
For exact resumption it also exposes ``position`` (a JSON-friendly value, e.g. ``(epoch, batch_index)``, of the
next batch it will yield) and ``restore(position)``, as `jaxebm.train.batches.ArrayBatches` and
`jaxebm.data.loader.BatchIterator` do (do not wrap them in a prefetcher that reads ahead). Without them a
resumed run restarts the iterable from its beginning.

Rollback: when `HealthMonitor.diagnose` flags a step, the state returns to the newest readable
checkpoint, its key is folded with the rollback count and its ``lr_scale`` becomes the pre-rollback
value times ``lr_factor``. The data position is not rewound: the batches since that checkpoint are
skipped rather than replayed, so a bad batch is not met again. Each rollback writes a row with
``event = "rollback"`` and prints a line naming the step and the reason; when the budget is spent
the driver writes ``event = "abort"`` and raises `TrainingDiverged`.

Curves to watch: after each evaluation ``run_dir/plots/learning_curve.png`` is redrawn from ``metrics.jsonl``
(training and validation rows, one panel per quantity), written atomically, so a long run can be followed
with any image viewer.

Resume: unfinished saves of a killed run are removed and a best checkpoint whose write was cut short is
rebuilt from its periodic checkpoint (`Checkpointer.recover`); rows of ``metrics.jsonl`` logged after the restored checkpoint's step (and a row cut short
by a crash) are dropped before the run goes on, so each step is logged once.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.monitor import HealthConfig, HealthMonitor, MetricsLogger, read_metrics

__all__ = ["LoopConfig", "TrainingDiverged", "begin_phase", "train_loop"]


class TrainingDiverged(RuntimeError):
    """The run kept diverging after ``max_rollbacks`` rollbacks."""


@dataclass(frozen=True)
class LoopConfig:
    """Driver settings; step counts are CD iterations (`TrainState.step`).

    num_steps: train until ``state.step`` reaches it (or the batches run out).
    iterations_per_call: the step's `CDConfig.iterations_per_call`; batches are stacked that deep.
    log_every, checkpoint_every, eval_every: intervals, multiples of ``iterations_per_call``
      (``eval_every`` None: no evaluation).
    max_to_keep: periodic checkpoints kept.
    best_metric, best_mode: key of the ``eval_fn`` output ranking the best checkpoint ("min"/"max").
    log_mean: a log row holds each metric's mean over the steps since the last row (else the last step's).
    progress: show a tqdm progress bar.
    """

    num_steps: int
    iterations_per_call: int = 1
    log_every: int = 10
    checkpoint_every: int = 500
    eval_every: int | None = None
    max_to_keep: int = 3
    best_metric: str | None = None
    best_mode: str = "min"
    log_mean: bool = False
    progress: bool = True

    def __post_init__(self):
        intervals = {"log_every": self.log_every, "checkpoint_every": self.checkpoint_every,
                     "eval_every": self.eval_every or self.iterations_per_call}
        for name, interval in intervals.items():
            if interval < 1 or interval % self.iterations_per_call:
                raise ValueError(f"{name} ({interval}) must be a positive multiple of iterations_per_call "
                                 f"({self.iterations_per_call})")


def _next_batch(iterator, iterations_per_call: int):
    """The next ``(x, mask)`` (or ``(x, mask, labels)``), stacked ``(iterations_per_call, ...)`` when that is > 1; None at the end."""
    pairs = list(itertools.islice(iterator, iterations_per_call))
    if len(pairs) < iterations_per_call:
        return None
    if iterations_per_call == 1:
        return pairs[0]
    return tuple(np.stack([np.asarray(pair[i]) for pair in pairs]) for i in range(len(pairs[0])))


def _last_iteration(metrics: dict[str, Any], iterations_per_call: int) -> dict[str, Any]:
    """Host metrics of the last scanned iteration (all of them when not stacked)."""
    if iterations_per_call == 1:
        return metrics
    return {name: value[-1] for name, value in metrics.items()}


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """Each metric's mean over the host metrics of several steps (scalars or stacked)."""
    return {name: float(np.mean([metrics[name] for metrics in history])) for name in history[0]}


_PROGRESS_KEYS = ("loss", "nll", "e_pos", "e_neg")  # shown beside the progress bar where a step reports them


def _roll_back(ckpt: Checkpointer, template, metrics, monitor: HealthMonitor, logger: MetricsLogger,
               reason: str, step: int) -> Any:
    """Restore the newest readable checkpoint with a new key and a reduced learning rate."""
    if not monitor.may_roll_back():
        logger.log({"step": step, "event": "abort", "reason": reason, "num_rollbacks": monitor.num_rollbacks})
        raise TrainingDiverged(f"step {step}: {reason}; {monitor.num_rollbacks} rollbacks spent")
    state, meta = ckpt.restore(template)
    lr_scale = float(np.min(metrics["lr_scale"])) * monitor.config.lr_factor
    state = state.replace(key=jax.random.fold_in(state.key, monitor.num_rollbacks),
                          lr_scale=jnp.asarray(lr_scale, jnp.float32))
    logger.log({"step": step, "event": "rollback", "reason": reason, "to_step": meta["step"],
                "lr_scale": lr_scale, "num_rollbacks": monitor.num_rollbacks})
    tqdm.write(f"rollback at step {step}: {reason}; back to step {meta['step']} with learning-rate scale "
               f"{lr_scale:g} (rollback {monitor.num_rollbacks} of {monitor.config.max_rollbacks})")
    return state


def _refresh_curves(metrics_path: str, figure_path: str) -> None:
    """Redraw the training and validation rows of the metrics log into ``figure_path`` (atomically)."""
    from jaxebm.plots import plot_training_curves

    plot_training_curves([row for row in read_metrics(metrics_path) if row.get("event") in (None, "eval")],
                         figure_path)


def _is_kept_row(line: str, step: int) -> bool:
    """Whether a ``metrics.jsonl`` line survives a resume from ``step``: a whole row of a step <= ``step``."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:  # the half-written last row of a killed run
        return False
    return row.get("step", step) <= step


def _drop_rows_after(path: str, step: int) -> None:
    """Rewrite the metrics log at ``path`` without rows after ``step``, atomically (temp file + rename)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    kept = [line.rstrip("\n") + "\n" for line in lines if _is_kept_row(line, step)]
    if kept == lines:
        return
    temp_path = f"{path}.{os.getpid()}.tmp"
    with open(temp_path, "w", encoding="utf-8") as handle:
        handle.writelines(kept)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp_path, path)


def _resume(ckpt: Checkpointer, template, state: Any, batches, health: HealthConfig,
            logger: MetricsLogger) -> tuple[Any, HealthMonitor]:
    """The newest checkpoint's state (and data position, when ``batches`` is given) if there is one;
    the log loses the rows of the steps that will run again. Saves a kill cut short are finished or
    removed first (`Checkpointer.recover`)."""
    ckpt.recover(template)
    if ckpt.latest_step() is None:
        return state, HealthMonitor(health)
    state, meta = ckpt.restore(template)
    if batches is not None and meta["data_position"] is not None:
        batches.restore(meta["data_position"])
    _drop_rows_after(logger.path, meta["step"])
    logger.log({"step": meta["step"], "event": "resume", "data_position": meta["data_position"]})
    return state, HealthMonitor(health, num_rollbacks=(meta["extra"] or {}).get("num_rollbacks", 0))


def train_loop(step_fn: Callable, state: Any, batches: Iterable, run_dir: str | os.PathLike,
               config: LoopConfig, *, health: HealthConfig = HealthConfig(),
               eval_fn: Callable[[Any], dict[str, float]] | None = None,
               log_fn: Callable[[int], dict[str, Any]] | None = None, run_config: Any = None) -> Any:
    """Train with ``step_fn(state, *batch) -> (state, metrics)`` (module doc) from ``state``.

    Writes ``run_dir/metrics.jsonl`` (a row every ``log_every`` steps, plus eval, rollback, resume
    rows) and ``run_dir/checkpoints`` (`Checkpointer`; ``run_config`` goes into its JSON entry). If
    checkpoints exist the run resumes from the newest readable one, data position included; otherwise
    step 0 is saved first so that a rollback always has a target. ``eval_fn(state) -> {name: value}``
    runs every ``eval_every`` steps; its values are logged and offered to the best checkpoint.
    ``log_fn(step) -> {name: value}`` adds columns to each log row. Returns the final state (also
    checkpointed).
    """
    logger = MetricsLogger(os.path.join(run_dir, "metrics.jsonl"))
    template = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), state)
    has_position = hasattr(batches, "position") and hasattr(batches, "restore")
    iterator = iter(batches)
    with Checkpointer(os.path.join(run_dir, "checkpoints"), max_to_keep=config.max_to_keep,
                      best_metric=config.best_metric, best_mode=config.best_mode) as ckpt:
        state, monitor = _resume(ckpt, template, state, batches if has_position else None, health, logger)

        def save(state, metrics=None):
            ckpt.save(state, data_position=batches.position if has_position else None, config=run_config,
                      metrics=metrics, extra={"num_rollbacks": monitor.num_rollbacks})

        step = int(state.step)
        if ckpt.latest_step() is None:
            save(state)
        start_time, saved_step, since_log = time.perf_counter(), step, []
        with tqdm(total=config.num_steps, initial=step, disable=not config.progress, unit="it") as bar:
            while step < config.num_steps:
                batch = _next_batch(iterator, config.iterations_per_call)
                if batch is None:
                    break
                state, metrics = step_fn(state, *batch)
                all_metrics = jax.device_get(metrics)
                reason = monitor.diagnose(all_metrics)
                if reason is not None:
                    state = _roll_back(ckpt, template, all_metrics, monitor, logger, reason, int(state.step))
                    step = int(state.step)
                    bar.reset(total=config.num_steps)
                    bar.update(step)
                    since_log = []
                    continue
                metrics = _last_iteration(all_metrics, config.iterations_per_call)
                since_log.append(all_metrics)
                bar.update(int(state.step) - step)
                step = int(state.step)
                if step % config.log_every == 0:
                    row = _mean_metrics(since_log) if config.log_mean else metrics
                    since_log = []
                    logger.log({"step": step, "time": time.perf_counter() - start_time, **row,
                                **(log_fn(step) if log_fn is not None else {})})
                    bar.set_postfix({key: f"{row[key]:.3g}" for key in _PROGRESS_KEYS if key in row})
                eval_metrics = None
                if eval_fn is not None and config.eval_every and step % config.eval_every == 0:
                    eval_metrics = dict(eval_fn(state))
                    logger.log({"step": step, "event": "eval", **eval_metrics})
                    _refresh_curves(logger.path, os.path.join(run_dir, "plots", "learning_curve.png"))
                if eval_metrics is not None or step % config.checkpoint_every == 0:
                    save(state, eval_metrics)
                    saved_step = step
        if saved_step != step:
            save(state)
    return state


def begin_phase(run_dir: str | os.PathLike, template, step: int, start_fn: Callable[[Any], Any], batches, *,
                run_config: Any = None, extra: dict[str, Any] | None = None) -> None:
    """Turn the checkpoint at ``step`` (the end of the previous phase) into the start of the next one: its
    state through ``start_fn`` (e.g. a fresh optimiser), saved again at ``step`` with the next phase's data
    position ``batches.position`` and a fresh rollback budget. Idempotent when ``start_fn`` is, so a crash
    in between is harmless; the next `train_loop` call resumes from it."""
    with Checkpointer(os.path.join(run_dir, "checkpoints")) as ckpt:
        state, _ = ckpt.restore(template, step=step)
        ckpt.save(start_fn(state), data_position=batches.position, config=run_config,
                  extra={"num_rollbacks": 0, **(extra or {})})
