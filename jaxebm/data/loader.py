"""Splits, shuffled batches from jet files larger than memory, and device prefetching.

``BatchIterator`` never holds the whole file: it reads contiguous chunks of ``chunk_size`` jets,
visits the chunks in a random order and shuffles the jets within windows of ``window_chunks``
chunks. The visiting order of epoch ``e`` depends only on ``(seed, e)``, so the position
``(epoch, batch_index)`` is all a checkpoint needs to resume the exact batch sequence.

Example:
    >>> train, val, test = split_indices(count_jets("qcd.h5"), seed=0)  # doctest: +SKIP
    >>> loader = BatchIterator("qcd.h5", 128, indices=train, seed=0)  # doctest: +SKIP
    >>> for batch in prefetch_to_device(loader.epoch_batches()):  # doctest: +SKIP
    ...     state = train_step(state, batch)
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxebm.data.io import JetSample, count_jets, read_jets

__all__ = ["BatchIterator", "LoaderPosition", "epoch_order", "prefetch_to_device", "split_indices"]


class LoaderPosition(NamedTuple):
    """Where a ``BatchIterator`` stands: the next batch it yields is ``batch_index`` of ``epoch``."""

    epoch: int
    batch_index: int


def split_indices(
    num_jets: int, fractions: tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Random disjoint splits of ``range(num_jets)`` (e.g. train/val/test), each sorted.

    Sizes are ``round(cumsum(fractions) * num_jets)`` differences; the splits cover every index.
    Returns one int64 index array per fraction; the same ``seed`` gives the same splits.
    """
    fractions_array = np.asarray(fractions, dtype=np.float64)
    if fractions_array.ndim != 1 or (fractions_array < 0).any() or not np.isclose(fractions_array.sum(), 1.0):
        raise ValueError(f"fractions: need non-negative values summing to 1, got {fractions}")
    if num_jets < 1:
        raise ValueError(f"num_jets: must be >= 1, got {num_jets}")
    permutation = np.random.default_rng(seed).permutation(num_jets)
    bounds = np.rint(np.cumsum(fractions_array)[:-1] * num_jets).astype(np.int64)
    return tuple(np.sort(part) for part in np.split(permutation, bounds))


def epoch_order(indices: np.ndarray, chunk_size: int, window_chunks: int, seed: int, epoch: int) -> np.ndarray:
    """File rows in the order epoch ``epoch`` visits them.

    ``indices`` (sorted) is cut into consecutive chunks of ``chunk_size``; the chunks are permuted,
    grouped into windows of ``window_chunks`` and the rows of each window permuted, all with
    ``np.random.default_rng((seed, epoch))``. Returns a permutation of ``indices``.
    """
    rng = np.random.default_rng((seed, epoch))
    chunks = [indices[start : start + chunk_size] for start in range(0, len(indices), chunk_size)]
    chunk_order = rng.permutation(len(chunks))
    windows = [
        rng.permutation(np.concatenate([chunks[c] for c in chunk_order[start : start + window_chunks]]))
        for start in range(0, len(chunks), window_chunks)
    ]
    return np.concatenate(windows)


class BatchIterator:
    """Endless iterator of shuffled ``JetSample`` batches (``attrs`` empty) over epochs.

    Args:
        path: schema file (``jaxebm.data.io``).
        batch_size: jets per batch.
        indices: file rows to use (e.g. one split); default all rows.
        seed: shuffling seed; epoch ``e`` uses ``(seed, e)``.
        chunk_size: jets per contiguous read.
        window_chunks: chunks shuffled together; about ``2 * window_chunks`` chunks stay in memory.
        drop_remainder: drop the last, smaller batch of an epoch (each jet still appears at most once).
        transform: applied to each batch before it is returned (e.g. preprocessing).

    ``position`` is the next batch's ``LoaderPosition``; ``restore(position)`` jumps there, and the
    batches that follow are the ones an uninterrupted run would have produced.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        batch_size: int,
        *,
        indices: np.ndarray | None = None,
        seed: int = 0,
        chunk_size: int = 2048,
        window_chunks: int = 4,
        drop_remainder: bool = True,
        transform: Callable[[JetSample], Any] | None = None,
    ) -> None:
        num_rows = count_jets(path)
        rows = np.arange(num_rows) if indices is None else np.unique(np.asarray(indices, dtype=np.int64))
        if len(rows) == 0 or rows[0] < 0 or rows[-1] >= num_rows:
            raise ValueError(f"indices: need a non-empty subset of range({num_rows}) for {path}")
        if min(batch_size, chunk_size, window_chunks) < 1:
            sizes = (batch_size, chunk_size, window_chunks)
            raise ValueError(f"batch_size, chunk_size, window_chunks: must be >= 1, got {sizes}")
        num_batches = len(rows) // batch_size if drop_remainder else -(-len(rows) // batch_size)
        if num_batches == 0:
            raise ValueError(f"batch_size: {batch_size} exceeds the {len(rows)} jets with drop_remainder=True")
        self.path = path
        self.batch_size = batch_size
        self.num_batches_per_epoch = num_batches
        self._rows = rows
        self._seed = seed
        self._chunk_size = chunk_size
        self._window_chunks = window_chunks
        self._transform = transform
        self._position = LoaderPosition(0, 0)
        self._order: tuple[int, np.ndarray] | None = None
        self._chunks: collections.OrderedDict[int, JetSample] = collections.OrderedDict()

    @property
    def position(self) -> LoaderPosition:
        return self._position

    def restore(self, position: LoaderPosition | tuple[int, int]) -> None:
        """Continue from ``position`` (as read from ``self.position`` earlier)."""
        epoch, batch_index = position
        if epoch < 0 or not 0 <= batch_index < self.num_batches_per_epoch:
            raise ValueError(f"position: {position} outside epochs >= 0, batches < {self.num_batches_per_epoch}")
        self._position = LoaderPosition(int(epoch), int(batch_index))

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Any:
        epoch, batch_index = self._position
        rows = self._epoch_rows(epoch)[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
        batch = self._gather(rows)
        next_index = batch_index + 1
        self._position = (
            LoaderPosition(epoch, next_index)
            if next_index < self.num_batches_per_epoch
            else LoaderPosition(epoch + 1, 0)
        )
        return batch if self._transform is None else self._transform(batch)

    def epoch_batches(self) -> Iterator[Any]:
        """The remaining batches of the current epoch."""
        epoch = self._position.epoch
        while self._position.epoch == epoch:
            yield next(self)

    def _epoch_rows(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self._rows, self._chunk_size, self._window_chunks, self._seed, epoch))
        return self._order[1]

    def _gather(self, rows: np.ndarray) -> JetSample:
        """Batch of the given file rows (each in ``self._rows``), in that order."""
        positions = np.searchsorted(self._rows, rows)
        chunk_ids, offsets = np.divmod(positions, self._chunk_size)
        needed = [int(chunk_id) for chunk_id in np.unique(chunk_ids)]
        for chunk_id in needed:
            self._load_chunk(chunk_id)

        def gather_field(name: str) -> np.ndarray | None:
            first = getattr(self._chunks[needed[0]], name)
            if first is None:
                return None
            out = np.empty((len(rows), *first.shape[1:]), first.dtype)
            for chunk_id in needed:
                selected = chunk_ids == chunk_id
                out[selected] = getattr(self._chunks[chunk_id], name)[offsets[selected]]
            return out

        batch = JetSample(**{name: gather_field(name) for name in ("constituents", "mask", "jets", "labels")}, attrs={})
        while len(self._chunks) > 2 * self._window_chunks:
            self._chunks.popitem(last=False)  # least recently used first
        return batch

    def _load_chunk(self, chunk_id: int) -> None:
        """Make chunk ``chunk_id`` the most recently used, reading it (one contiguous read) if absent."""
        if chunk_id in self._chunks:
            self._chunks.move_to_end(chunk_id)
            return
        rows = self._rows[chunk_id * self._chunk_size : (chunk_id + 1) * self._chunk_size]
        block = read_jets(self.path, int(rows[0]), int(rows[-1]) + 1)
        local = rows - rows[0]
        labels = None if block.labels is None else block.labels[local]
        self._chunks[chunk_id] = JetSample(block.constituents[local], block.mask[local], block.jets[local], labels)


def prefetch_to_device(
    iterator: Iterable[Any], size: int = 2, sharding: jax.sharding.Sharding | None = None
) -> Iterator[Any]:
    """Yield the items of ``iterator`` after ``jax.device_put``, keeping ``size`` transfers in flight.

    The source runs ``size`` items ahead of the consumer, and so does a ``BatchIterator``'s
    ``position``. For exact resumption wrap ``epoch_batches()`` and checkpoint between epochs, or
    store the position of the first batch plus the number of batches consumed.
    """
    if size < 1:
        raise ValueError(f"size: must be >= 1, got {size}")
    source = iter(iterator)
    in_flight = collections.deque(jax.device_put(item, sharding) for item in itertools.islice(source, size))
    while in_flight:
        yield in_flight.popleft()
        in_flight.extend(jax.device_put(item, sharding) for item in itertools.islice(source, 1))
