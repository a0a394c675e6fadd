"""The driver: rollback with a reduced learning rate, giving up, and resuming a run exactly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import data_batch

from jaxebm.train import HealthConfig, LoopConfig, TrainingDiverged, loop, read_metrics, train_loop


class Interrupted(Exception):
    """Stands in for a run killed between two steps."""


class Batches:
    """Endless deterministic batches with the position / restore protocol; ``poisoned`` batches are NaN;
    asking for batch ``interrupt_at`` raises `Interrupted`."""

    def __init__(self, poisoned=(), interrupt_at=None):
        self.index = 0
        self.poisoned = set(poisoned)
        self.interrupt_at = interrupt_at

    @property
    def position(self):
        return (0, self.index)

    def restore(self, position):
        self.index = position[1]

    def __iter__(self):
        return self

    def __next__(self):
        if self.index == self.interrupt_at:
            raise Interrupted
        x, mask = data_batch(self.index)
        if self.index in self.poisoned:
            x = jnp.full_like(x, jnp.nan)
        self.index += 1
        return x, mask


def host_state(state):
    return jax.tree.map(np.array, state.replace(key=jax.random.key_data(state.key)))


def test_nan_batch_rolls_back_with_half_the_learning_rate(tiny, tmp_path):
    config = LoopConfig(num_steps=10, log_every=1, checkpoint_every=4, eval_every=2, best_metric="val_score",
                        progress=False)
    state = train_loop(tiny.step, tiny.new_state(), Batches(poisoned={5}), tmp_path, config,
                       eval_fn=lambda state: {"val_score": float(state.step % 3)})
    rows = read_metrics(tmp_path / "metrics.jsonl")
    rollbacks = [row for row in rows if row.get("event") == "rollback"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["to_step"] == 4 and rollbacks[0]["lr_scale"] == 0.5 and "non-finite" in rollbacks[0]["reason"]
    after = [row for row in rows if "loss" in row and rows.index(row) > rows.index(rollbacks[0])]
    assert [row["step"] for row in after] == [5, 6, 7, 8, 9, 10]
    assert all(row["lr_scale"] == 0.5 and row["is_finite"] for row in after)
    assert int(state.step) == 10 and float(state.lr_scale) == 0.5
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))
    assert (tmp_path / "checkpoints" / "best").is_dir()


def test_rollback_is_announced_on_the_console(tiny, tmp_path, capsys):
    config = LoopConfig(num_steps=4, checkpoint_every=2, progress=False)
    train_loop(tiny.step, tiny.new_state(), Batches(poisoned={2}), tmp_path, config)
    assert "rollback at step 3: non-finite loss or parameter gradient; back to step 2" in capsys.readouterr().out


def test_persistent_divergence_aborts_after_the_rollback_budget(tiny, tmp_path):
    config = LoopConfig(num_steps=10, checkpoint_every=2, progress=False)
    with pytest.raises(TrainingDiverged, match="2 rollbacks"):
        train_loop(tiny.step, tiny.new_state(), Batches(poisoned=range(3, 100)), tmp_path, config,
                   health=HealthConfig(max_rollbacks=2))
    events = [row["event"] for row in read_metrics(tmp_path / "metrics.jsonl") if "event" in row]
    assert events == ["rollback", "rollback", "abort"]


def test_resumed_run_matches_an_uninterrupted_one(tiny, tmp_path):
    straight = train_loop(tiny.step, tiny.new_state(), Batches(), tmp_path / "straight",
                          LoopConfig(num_steps=8, checkpoint_every=3, progress=False))
    train_loop(tiny.step, tiny.new_state(), Batches(), tmp_path / "split",
               LoopConfig(num_steps=5, checkpoint_every=3, progress=False))
    batches = Batches()
    resumed = train_loop(tiny.step, tiny.new_state(seed=7), batches, tmp_path / "split",
                         LoopConfig(num_steps=8, checkpoint_every=3, progress=False))
    jax.tree.map(np.testing.assert_array_equal, host_state(resumed), host_state(straight))
    assert batches.index == 8
    resume_rows = [row for row in read_metrics(tmp_path / "split" / "metrics.jsonl") if row.get("event") == "resume"]
    assert resume_rows == [{"step": 5, "event": "resume", "data_position": [0, 5]}]


def test_resume_after_an_interruption_logs_each_step_once(tiny, tmp_path):
    config = LoopConfig(num_steps=9, log_every=1, checkpoint_every=3, progress=False)
    with pytest.raises(Interrupted):  # after step 7; the newest checkpoint is step 6
        train_loop(tiny.step, tiny.new_state(), Batches(interrupt_at=7), tmp_path, config)
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 8, "lo')  # a kill in the middle of writing a row
    train_loop(tiny.step, tiny.new_state(), Batches(), tmp_path, config)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows if "loss" in row] == list(range(1, 10))
    assert [row for row in rows if "event" in row] == [{"step": 6, "event": "resume", "data_position": [0, 6]}]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoints", "metrics.jsonl"]


def test_the_learning_curve_is_redrawn_at_each_evaluation(tiny, tmp_path, monkeypatch):
    drawn, draw = [], loop._refresh_curves
    monkeypatch.setattr(loop, "_refresh_curves", lambda rows, figure: drawn.append(len(read_metrics(rows)))
                        or draw(rows, figure))
    config = LoopConfig(num_steps=4, log_every=1, checkpoint_every=4, eval_every=2, progress=False)
    train_loop(tiny.step, tiny.new_state(), Batches(), tmp_path, config, eval_fn=lambda state: {"val_score": 1.0})
    assert len(drawn) == 2 and drawn[0] < drawn[1]  # after each evaluation, with the rows logged so far
    assert (tmp_path / "plots" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["learning_curve.png"]  # no temporary file left
