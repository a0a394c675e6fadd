"""Splits, chunked shuffled batches with resumable positions, and device prefetching."""

import jax
import numpy as np
import pytest

from jaxebm.data import loader
from jaxebm.data.io import JetSample, write_jets
from jaxebm.data.loader import BatchIterator, LoaderPosition, epoch_order, prefetch_to_device, split_indices

NUM_JETS = 1000


@pytest.fixture(scope="module")
def numbered_file(tmp_path_factory):
    """A schema file whose ``labels`` are the row numbers, so batches say which jets they hold."""
    path = tmp_path_factory.mktemp("loader") / "numbered.h5"
    rows = np.arange(NUM_JETS)
    constituents = np.zeros((NUM_JETS, 3, 4), np.float32)
    constituents[:, 0] = np.stack([rows + 10.0, rows + 1.0, np.zeros(NUM_JETS), np.zeros(NUM_JETS)], axis=1)
    jets = np.zeros((NUM_JETS, 5), np.float32)
    jets[:, 0], jets[:, 4] = rows + 1.0, 1.0
    mask = np.zeros((NUM_JETS, 3), bool)
    mask[:, 0] = True
    write_jets(path, JetSample(constituents, mask, jets, rows.astype(np.int32)))
    return path


def _labels(batches):
    return np.concatenate([batch.labels for batch in batches])


def test_splits_are_deterministic_disjoint_and_cover_everything():
    train, val, test = split_indices(1001, (0.8, 0.1, 0.1), seed=7)
    assert (len(train), len(val), len(test)) == (801, 100, 100)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(1001))
    for part in (train, val, test):
        assert (np.diff(part) > 0).all()
    for again, first in zip(split_indices(1001, (0.8, 0.1, 0.1), seed=7), (train, val, test)):
        np.testing.assert_array_equal(again, first)
    assert not np.array_equal(split_indices(1001, seed=8)[1], val)
    with pytest.raises(ValueError, match="fractions"):
        split_indices(10, (0.5, 0.6))


def test_every_selected_jet_appears_exactly_once_per_epoch(numbered_file):
    train, _, _ = split_indices(NUM_JETS, seed=1)
    batches = BatchIterator(numbered_file, 64, indices=train, seed=3, chunk_size=100, window_chunks=3,
                            drop_remainder=False)
    assert batches.num_batches_per_epoch == -(-len(train) // 64)
    epoch0 = list(batches.epoch_batches())
    epoch1 = list(batches.epoch_batches())
    for epoch in (epoch0, epoch1):
        assert len(epoch) == batches.num_batches_per_epoch
        np.testing.assert_array_equal(np.sort(_labels(epoch)), train)
    assert not np.array_equal(_labels(epoch0), _labels(epoch1))  # reshuffled each epoch
    assert batches.position == LoaderPosition(2, 0)
    first = epoch0[0]
    np.testing.assert_array_equal(first.jets[:, 0], first.labels + 1.0)  # rows stay whole
    assert first.constituents.shape == (64, 3, 4) and first.mask.dtype == np.bool_


def test_batches_mix_chunks_and_each_chunk_is_read_once_per_epoch(numbered_file, monkeypatch):
    reads = []
    original = loader.read_jets

    def counting_read(path, start, stop):
        reads.append((start, stop))
        return original(path, start, stop)

    monkeypatch.setattr(loader, "read_jets", counting_read)
    batches = BatchIterator(numbered_file, 50, seed=0, chunk_size=100, window_chunks=4)
    epoch = list(batches.epoch_batches())
    assert len(epoch) == 20 and all(len(batch.labels) == 50 for batch in epoch)
    assert sorted(reads) == [(start, start + 100) for start in range(0, NUM_JETS, 100)]
    assert len(np.unique(epoch[0].labels // 100)) >= 3  # one batch draws on the whole window


def test_drop_remainder_drops_only_the_last_partial_batch(numbered_file):
    batches = BatchIterator(numbered_file, 300, seed=0, chunk_size=128)
    epoch = list(batches.epoch_batches())
    assert batches.num_batches_per_epoch == 3 and [len(b.labels) for b in epoch] == [300, 300, 300]
    assert len(np.unique(_labels(epoch))) == 900


def test_restored_position_reproduces_the_remaining_batches(numbered_file):
    def make():
        return BatchIterator(numbered_file, 90, seed=5, chunk_size=128, window_chunks=2,
                             transform=lambda batch: batch.labels)

    uninterrupted = make()
    reference = [next(uninterrupted) for _ in range(25)]  # 11 batches per epoch: crosses two epoch ends
    interrupted = make()
    for _ in range(9):
        next(interrupted)
    saved = tuple(interrupted.position)
    resumed = make()
    resumed.restore(saved)
    for expected in reference[9:]:
        np.testing.assert_array_equal(next(resumed), expected)
    assert resumed.position == uninterrupted.position == LoaderPosition(2, 3)
    with pytest.raises(ValueError, match="position"):
        resumed.restore((0, 11))


def test_epoch_order_depends_only_on_seed_and_epoch():
    indices = np.arange(0, 3000, 3)
    order = epoch_order(indices, chunk_size=64, window_chunks=2, seed=1, epoch=4)
    np.testing.assert_array_equal(np.sort(order), indices)
    np.testing.assert_array_equal(order, epoch_order(indices, 64, 2, seed=1, epoch=4))
    assert not np.array_equal(order, epoch_order(indices, 64, 2, seed=2, epoch=4))


def test_bad_loader_arguments_raise(numbered_file):
    with pytest.raises(ValueError, match="indices"):
        BatchIterator(numbered_file, 10, indices=np.array([5, NUM_JETS]))
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(numbered_file, 2000)


def test_prefetch_to_device_keeps_order_and_values(numbered_file):
    batches = BatchIterator(numbered_file, 100, seed=0, chunk_size=256)
    first_on_host = next(BatchIterator(numbered_file, 100, seed=0, chunk_size=256))
    device = list(prefetch_to_device(batches.epoch_batches(), size=3))
    assert len(device) == 10 and isinstance(device[0].constituents, jax.Array)
    np.testing.assert_array_equal(np.asarray(device[0].labels), first_on_host.labels)
    assert list(prefetch_to_device(iter([np.ones(2)]), size=4))[0].shape == (2,)
    with pytest.raises(ValueError, match="size"):
        next(prefetch_to_device([], size=0))
