"""The driver's one in-memory batch iterator: shuffled epochs, dropped remainders, exact resume."""
import numpy as np
import pytest

from jaxebm.train.batches import ArrayBatches


def test_batches_resume_where_they_stopped():
    images = np.arange(10 * 2 * 2, dtype=np.float32).reshape(10, 2, 2)
    first = ArrayBatches((images,), 4, seed=1)
    drawn = [next(first)[0] for _ in range(5)]  # 2 batches per epoch: crosses two epoch ends
    second = ArrayBatches((images,), 4, seed=1)
    [next(second) for _ in range(3)]
    third = ArrayBatches((images,), 4, seed=1)
    third.restore(second.position)
    np.testing.assert_array_equal(next(third)[0], drawn[3])
    assert len({float(b[:, 0, 0].sum()) for b in drawn[:2]}) == 2  # no batch repeats within an epoch
    end_of_epoch = ArrayBatches((images,), 4, seed=1)
    end_of_epoch.restore((0, 2))  # past the last full batch of epoch 0: the start of epoch 1
    np.testing.assert_array_equal(next(end_of_epoch)[0], drawn[2])


def test_epoch_order_follows_the_seed_and_rows_stay_aligned():
    x, mask = np.arange(12.0), np.arange(12) % 2 == 0
    batches = ArrayBatches((x, mask), 5, seed=3)
    rows = np.random.default_rng((3, 0)).permutation(12)
    for index in range(2):
        bx, bmask = next(batches)
        np.testing.assert_array_equal(bx, x[rows[index * 5:(index + 1) * 5]])
        np.testing.assert_array_equal(bmask, bx % 2 == 0)
    assert batches.position == (0, 2) and batches.steps_per_epoch == 2
    next(batches)
    assert batches.position == (1, 1)


def test_data_per_epoch_and_explicit_order_seeds():
    batches = ArrayBatches(lambda epoch: (np.full(6, float(epoch)),), 3, order_seed=lambda epoch: 100 + epoch)
    values = [float(next(batches)[0][0]) for _ in range(6)]
    assert values == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    data = np.arange(6.0)
    ordered = ArrayBatches((data,), 3, order_seed=lambda epoch: 100 + epoch)
    np.testing.assert_array_equal(next(ordered)[0], data[np.random.default_rng(100).permutation(6)[:3]])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="batch_size 7"):
        ArrayBatches((np.zeros(6),), 7, seed=0)
    with pytest.raises(ValueError, match="exactly one of seed and order_seed"):
        ArrayBatches((np.zeros(6),), 2)
