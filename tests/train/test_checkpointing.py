"""Checkpoints: exact resume, fallback past a corrupt or damaged checkpoint (latest and best), shape
validation, best-by-metric."""
import logging
import re
import shutil

import jax
import numpy as np
import pytest
from conftest import data_batch

from jaxebm.models import MLPConfig, MLPEnergy
from jaxebm.train import CheckpointError, Checkpointer, create_train_state


def host_state(state):
    """Every leaf of a TrainState as numpy, the key as its key data."""
    return jax.tree.map(np.array, state.replace(key=jax.random.key_data(state.key)))


def run(step, state, first, count):
    for index in range(first, first + count):
        state, _ = step(state, *data_batch(index))
    return state


def test_resume_reproduces_an_uninterrupted_run_exactly(tiny, tmp_path, monkeypatch):
    straight = host_state(run(tiny.step, tiny.new_state(), 0, 6))

    monkeypatch.chdir(tmp_path)  # a relative directory, as run scripts pass it (Orbax itself needs absolute)
    with Checkpointer("checkpoints", max_to_keep=2) as ckpt:
        ckpt.save(run(tiny.step, tiny.new_state(), 0, 3), data_position=(0, 3), config=tiny.config)
    with Checkpointer("checkpoints", max_to_keep=2) as fresh:
        restored, meta = fresh.restore(tiny.new_state(seed=1))
    assert meta["step"] == 3 and meta["data_position"] == [0, 3] and meta["config"]["batch_size"] == 16
    resumed = host_state(run(tiny.step, restored, meta["data_position"][1], 3))
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)


# Orbax reads a checkpoint's arrays concurrently; after the first read error the others fail on a closed
# event loop and surface as unraisable exceptions: noise from Orbax, not a problem of the fallback.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_restore_falls_back_past_a_corrupt_latest_checkpoint(tiny, tmp_path, caplog):
    state = tiny.new_state()
    with Checkpointer(tmp_path) as ckpt:
        state = run(tiny.step, state, 0, 1)
        ckpt.save(state)
        good = host_state(state)
        ckpt.save(run(tiny.step, state, 1, 1))
        assert ckpt.steps() == [1, 2]
    (tmp_path / "latest" / "2" / "state" / "manifest.ocdbt").write_bytes(b"corrupt")
    with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING):
        restored, meta = ckpt.restore(tiny.new_state())
        assert meta["step"] == 1 and "unreadable" in caplog.text
        jax.tree.map(np.testing.assert_array_equal, host_state(restored), good)
        with pytest.raises(CheckpointError, match="no readable checkpoint"):
            ckpt.restore(tiny.new_state(), step=2)
        ckpt.save(restored.replace(step=restored.step + 1))  # overwrites the corrupt step 2
        assert ckpt.restore(tiny.new_state())[1]["step"] == 2


def truncate_array_files(step_dir):
    """Cut each array data file Orbax wrote for the state (OCDBT over zarr) to a quarter of its size,
    as an interrupted copy would (the tail of a data file may hold nothing a restore reads)."""
    data_files = list((step_dir / "state").glob("ocdbt.process_*/d/*"))
    assert data_files
    for path in data_files:
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 4)


def delete_array_directory(step_dir):
    """Remove the directory holding every array of the state."""
    (array_dir,) = (step_dir / "state").glob("ocdbt.process_*")
    shutil.rmtree(array_dir)


# A damaged array fails several concurrent reads; the ones after the first surface as unraisable exceptions.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", [truncate_array_files, delete_array_directory])
def test_restore_falls_back_past_damaged_array_files(tiny, tmp_path, caplog, damage):
    state = run(tiny.step, tiny.new_state(), 0, 1)
    good = host_state(state)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(state)
        ckpt.save(run(tiny.step, state, 1, 1))
    damage(tmp_path / "latest" / "2")
    with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING):
        restored, meta = ckpt.restore(tiny.new_state())
    assert meta["step"] == 1 and "latest/2 unreadable" in caplog.text
    jax.tree.map(np.testing.assert_array_equal, host_state(restored), good)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_best_checkpoint_falls_back_to_the_runner_up_then_says_what_to_delete(tiny, tmp_path, caplog):
    state, best_dir = tiny.new_state(), tmp_path / "best"
    hint = f"delete the directory {re.escape(str(best_dir))} and rerun"
    with Checkpointer(tmp_path, best_metric="val_loss") as ckpt:
        for step, value in [(1, 3.0), (2, 1.0), (3, 2.0)]:
            ckpt.save(state.replace(step=np.int32(step)), metrics={"val_loss": value})
        assert ckpt.steps(best=True) == [2, 3]
    truncate_array_files(best_dir / "2")
    with Checkpointer(tmp_path, best_metric="val_loss") as ckpt, caplog.at_level(logging.WARNING):
        assert ckpt.restore(tiny.new_state(), best=True)[1]["step"] == 3
        assert "best/2 unreadable" in caplog.text
        delete_array_directory(best_dir / "3")
        with pytest.raises(CheckpointError, match=f"no readable checkpoint among steps \\[2, 3\\].*{hint}"):
            ckpt.restore(tiny.new_state(), best=True)
    (best_dir / "3" / "metrics" / "metrics").write_text('{"val_lo')  # read as the manager starts
    with pytest.raises(CheckpointError, match=f"best checkpoints unreadable.*{hint}"):
        Checkpointer(tmp_path, best_metric="val_loss")
    shutil.rmtree(best_dir)  # what the message says to do
    with Checkpointer(tmp_path, best_metric="val_loss") as ckpt:
        assert ckpt.steps(best=True) == [] and ckpt.restore(tiny.new_state())[1]["step"] == 3


def test_restore_into_a_different_model_raises(tiny, tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(tiny.new_state())
        wider = MLPEnergy(MLPConfig(hidden_sizes=(16, 17)))
        template = create_train_state(jax.random.key(0), wider, tiny.config, *data_batch(0), tiny.noise_fn)
        with pytest.raises(CheckpointError, match="hidden_1|energy/kernel"):
            ckpt.restore(template)


def test_best_checkpoint_keeps_the_lowest_metric(tiny, tmp_path):
    state = tiny.new_state()
    with Checkpointer(tmp_path, max_to_keep=1, best_metric="val_loss") as ckpt:
        for step, value in [(1, 3.0), (2, 1.0), (3, 2.0)]:
            ckpt.save(state.replace(step=np.int32(step)), metrics={"val_loss": value})
        best, meta = ckpt.restore(tiny.new_state(), best=True)
        assert meta["step"] == 2 and meta["metrics"]["val_loss"] == 1.0 and int(best.step) == 2
        assert ckpt.steps() == [3] and ckpt.steps(best=True) == [2, 3]


def test_recover_rebuilds_a_best_checkpoint_whose_write_was_killed(tiny, tmp_path):
    """A kill during the write of best/2 leaves only Orbax's temporary directory; the periodic checkpoint
    of step 2 and its recorded metric bring it back, so the same step is selected as without the kill."""
    state = tiny.new_state()
    with Checkpointer(tmp_path, best_metric="val_loss", is_async=False) as ckpt:
        ckpt.save(state.replace(step=np.int32(1)), metrics={"val_loss": 3.0})
        ckpt.save(state.replace(step=np.int32(2)), metrics={"val_loss": 1.0})
    shutil.rmtree(tmp_path / "best" / "2")
    unfinished = tmp_path / "best" / "2.orbax-checkpoint-tmp-1234"
    (unfinished / "state").mkdir(parents=True)
    (tmp_path / "latest" / "3.orbax-checkpoint-tmp-99").mkdir()
    with Checkpointer(tmp_path, best_metric="val_loss") as ckpt:
        assert ckpt.recover(tiny.new_state()) == [2]
        ckpt.save(state.replace(step=np.int32(3)), metrics={"val_loss": 2.0})
        assert ckpt.steps(best=True) == [2, 3]
        best, meta = ckpt.restore(tiny.new_state(), best=True)
        assert meta["step"] == 2 and int(best.step) == 2
        assert ckpt.recover(tiny.new_state()) == []  # nothing left to finish
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["2", "3"]
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["1", "2", "3"]


def test_reading_a_directory_without_checkpoints_creates_nothing(tiny, tmp_path):
    with Checkpointer(tmp_path / "checkpoints", best_metric="val_loss") as ckpt:
        assert ckpt.steps() == [] and ckpt.steps(best=True) == [] and ckpt.latest_step() is None
        with pytest.raises(CheckpointError, match="no readable checkpoint"):
            ckpt.restore(tiny.new_state(), best=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_every_periodic_checkpoint_damaged_says_what_to_do(tiny, tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(tiny.new_state())
    delete_array_directory(tmp_path / "latest" / "0")
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError) as error:
        ckpt.restore(tiny.new_state())
    assert "Every periodic checkpoint is damaged" in str(error.value)
    assert f"delete the directory {tmp_path} and rerun to train this seed from the start" in str(error.value)
