"""Endless shuffled mini-batches of in-memory arrays with the driver's exact-resume protocol.

`ArrayBatches` serves every system whose training set fits in memory (NAE images, the ConVAE and flow
inputs, the JetNet-benchmark EBM). Files larger than memory go through `jaxebm.data.loader.BatchIterator`,
which speaks the same protocol: ``position`` (JSON-friendly, the next batch) and ``restore(position)``.

    batches = ArrayBatches((x, mask), batch_size=128, seed=0)        # epoch e: permutation of rng((0, e))
    batches = ArrayBatches(lambda epoch: (latents(epoch),), 100, order_seed=lambda epoch: 7 + epoch)
    x_batch, mask_batch = next(batches)                              # (128, ...) each
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ArrayBatches"]


class ArrayBatches:
    """Shuffled batches ``tuple of (batch_size, ...)`` arrays, forever; the last incomplete batch of an epoch
    is dropped, so every batch has one shape (one compilation).

    Args:
      data: a tuple of arrays with a common leading axis ``n``, or ``epoch -> such a tuple`` (data that changes
        per epoch, e.g. fresh posterior draws; the same ``n`` every epoch; the current epoch's tuple is cached).
      batch_size: rows per batch (<= n).
      seed: epoch ``e`` visits the rows in the permutation of ``np.random.default_rng((seed, e))``.
      order_seed: instead of ``seed``, ``epoch -> numpy seed`` of that epoch's permutation.

    ``position = (epoch, batch_index)`` names the next batch; ``restore(position)`` returns to it. A position
    past an epoch's last full batch is read as the start of the next epoch.
    """

    def __init__(self, data: tuple[np.ndarray, ...] | Callable[[int], tuple[np.ndarray, ...]], batch_size: int,
                 *, seed: int | None = None, order_seed: Callable[[int], Any] | None = None):
        if (seed is None) == (order_seed is None):
            raise ValueError("give exactly one of seed and order_seed")
        self._data_fn = data if callable(data) else (lambda epoch: data)
        self._order_seed = order_seed or (lambda epoch: (seed, epoch))
        self.num_rows = len(self._data_fn(0)[0])
        if not 1 <= batch_size <= self.num_rows:
            raise ValueError(f"batch_size {batch_size} must be in [1, {self.num_rows}] (the rows of the data)")
        self.batch_size = batch_size
        self.epoch, self.index = 0, 0
        self._cache: tuple[int, tuple[np.ndarray, ...], np.ndarray] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch."""
        return self.num_rows // self.batch_size

    @property
    def position(self) -> tuple[int, int]:
        return (self.epoch, self.index)

    def restore(self, position) -> None:
        self.epoch, self.index = int(position[0]), int(position[1])

    def epoch_data(self, epoch: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """The arrays of ``epoch`` and its row order (cached for the current epoch)."""
        if self._cache is None or self._cache[0] != epoch:
            order = np.random.default_rng(self._order_seed(epoch)).permutation(self.num_rows)
            self._cache = (epoch, tuple(self._data_fn(epoch)), order)
        return self._cache[1], self._cache[2]

    def __iter__(self):
        return self

    def __next__(self) -> tuple[np.ndarray, ...]:
        if self.index >= self.steps_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        arrays, order = self.epoch_data(self.epoch)
        rows = order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
        self.index += 1
        return tuple(array[rows] for array in arrays)
