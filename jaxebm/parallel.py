"""Data parallelism over a 1-D device mesh: one CPU, one or many GPUs, many hosts, the same code.

Layout: one mesh axis ``"data"`` over all devices. Training batches, chains and the replay buffer are
split along it (their leading axis; axis 1 of a stacked batch ``(iterations_per_call, B, ...)``);
parameters, optimiser state, EMA, key and counters are replicated. Steps are plain `jax.jit`
programs: XLA's SPMD partitioner runs each device on its slice of the chains and inserts the
all-reduce of the parameter gradient (the loss is a mean over the global batch).

The switch is ``mesh``: ``make_cd_step(..., mesh=make_mesh())``, ``generate(..., mesh=...)`` and
``anomaly_scores(..., mesh=...)``; ``mesh=None`` (default) is the single-device program, unchanged.
Any other step ``step_fn(state, *batch) -> (state, aux)`` gets the same treatment from `distribute`.
Batch, chain and buffer sizes must be multiples of the number of devices. On one device prefer
``mesh=None``: a one-device mesh works, but its step compiles again on the second call unless the
state was placed by `shard_train_state` before the first (seen with JAX 0.10; not on more devices).

Random numbers: `jax.random` values do not depend on how arrays are sharded, so a sharded run
draws the same numbers as a single-device run with the same key and agrees with it up to the order
of floating-point reductions. With ``jax_threefry_partitionable`` (JAX's default since 0.5) each
device generates only its slice; with it off the values are still the same but every device
generates all of them.

The mesh's axis is an ``Auto`` axis (the classic GSPMD mode; `jax.make_mesh` defaults to
``Explicit`` axes, which would need sharding annotations inside the samplers).

    mesh = make_mesh()                                   # all devices of all processes
    step = make_cd_step(model, config, noise_fn, mesh=mesh)
    state = shard_train_state(state, mesh)               # optional: the step places its inputs
    state, metrics = step(state, x, mask)                # x (B, N, F), B a multiple of the devices

Many hosts: call `initialize_distributed` first; each process reads its rows (`process_rows`) with a
``BatchIterator`` of batch ``B // jax.process_count()``, and `global_batch` assembles the global
array from the per-process rows.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "DATA_AXIS", "make_mesh", "data_sharding", "replicated", "check_divisible", "train_state_shardings", "place",
    "shard_train_state", "shard_batch", "constrain_batch", "distribute", "to_host", "distributed_settings",
    "initialize_distributed", "process_rows", "global_batch",
]

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """1-D mesh, axis ``"data"``, over the first ``num_devices`` devices (default: all devices of all
    processes; fewer is for one-process tests and benchmarks)."""
    available = jax.device_count()
    num_devices = available if num_devices is None else num_devices
    if not 1 <= num_devices <= available:
        raise ValueError(f"num_devices must be in [1, {available}] (the devices JAX sees), got {num_devices}")
    return jax.make_mesh((num_devices,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:num_devices])


def data_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Arrays split along ``axis`` over the devices (e.g. ``(B, N, F)`` -> ``(B / devices, N, F)`` each)."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(mesh: Mesh, **sizes: int) -> None:
    """Raise ValueError unless every ``name=size`` is a multiple of the mesh's device count."""
    num_devices = mesh.shape[DATA_AXIS]
    for name, size in sizes.items():
        if size % num_devices:
            raise ValueError(f"{name} ({size}) must be a multiple of the number of devices ({num_devices})")


def train_state_shardings(state, mesh: Mesh):
    """Shardings like ``state`` (a `TrainState`, or its `ShapeDtypeStruct` template): the leaves of
    ``state.buffer.samples`` ``(capacity, ...)`` split on their leading axis, every other leaf replicated."""
    shardings = jax.tree.map(lambda _: replicated(mesh), state)
    samples = jax.tree.map(lambda _: data_sharding(mesh), state.buffer.samples)
    return shardings.replace(buffer=shardings.buffer._replace(samples=samples))


def place(tree, shardings):
    """`jax.device_put` of ``tree`` on ``shardings`` (one, or a tree like ``tree``) for leaves that hold
    the whole value, the same on every process. Leaves already placed so are not copied.

    One process: `jax.device_put`. Several: a process-local leaf (e.g. a freshly initialised or
    restored state) becomes a global array, each process filling its own devices from its copy.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    return jax.tree.map(_place_leaf, tree, shardings)


def _place_leaf(leaf, sharding):
    """One leaf of `place` in a multi-process run; typed PRNG keys travel as their key data."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return jax.device_put(leaf, sharding)
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        key_data = _place_leaf(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(leaf))
    return jax.make_array_from_process_local_data(sharding, np.asarray(leaf), np.shape(leaf))


def shard_train_state(state, mesh: Mesh):
    """``state`` placed per `train_state_shardings` (by `place`: also from process-local copies)."""
    check_divisible(mesh, buffer_size=jax.tree.leaves(state.buffer.samples)[0].shape[0])
    return place(state, train_state_shardings(state, mesh))


def shard_batch(batch, mesh: Mesh, axis: int = 0):
    """Every leaf of ``batch`` split along ``axis`` (its batch axis) over the devices.

    In a multi-process run pass global arrays (`global_batch`); a host array is taken as the whole
    global batch and must be the same on every process.
    """
    for leaf in jax.tree.leaves(batch):
        check_divisible(mesh, batch_size=np.shape(leaf)[axis])
    return jax.device_put(batch, data_sharding(mesh, axis))


def constrain_batch(tree, mesh: Mesh | None, axis: int = 0):
    """Inside a jitted function: keep ``tree``'s leaves split along ``axis`` (identity when ``mesh`` is None).

    Use it on arrays created inside the program that carry the batch (chain starts drawn from a key),
    which XLA would otherwise be free to replicate.
    """
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, data_sharding(mesh, axis))


def _is_placed(state, mesh: Mesh) -> bool:
    """Whether ``state`` looks placed by `shard_train_state`: its first leaf replicated and its first
    buffer leaf split on the mesh (a state is placed as a whole, or restored / created unplaced)."""
    def has(leaf, sharding):
        return isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim)

    return (has(jax.tree.leaves(state)[0], replicated(mesh))
            and has(jax.tree.leaves(state.buffer.samples)[0], data_sharding(mesh)))


def distribute(step_fn: Callable, mesh: Mesh, *, batch_axis: int = 0) -> Callable:
    """Data-parallel jit of ``step_fn(state, *batch) -> (state, aux)`` (not yet jitted).

    The returned ``step(state, *batch)`` places every batch argument by `shard_batch` along
    ``batch_axis`` and ``state`` by `shard_train_state` (skipped when ``state`` came out of such a step
    or `shard_train_state`: placing every leaf costs milliseconds per call), runs one jitted program
    with ``state`` donated, and returns the new state placed the same way and ``aux`` (e.g. metrics)
    replicated. ``step.lower(state, *batch)`` lowers that program, as for a jitted function.
    """
    def pinned(state, *batch):
        new_state, aux = step_fn(state, *batch)
        new_state = jax.lax.with_sharding_constraint(new_state, train_state_shardings(new_state, mesh))
        return new_state, jax.lax.with_sharding_constraint(aux, replicated(mesh))

    jitted = jax.jit(pinned, donate_argnums=0)

    def to_devices(state, *batch):
        state = state if _is_placed(state, mesh) else shard_train_state(state, mesh)
        return (state, *(shard_batch(b, mesh, batch_axis) for b in batch))

    def step(state, *batch):
        return jitted(*to_devices(state, *batch))

    step.lower = lambda *args: jitted.lower(*to_devices(*args))
    return step


def to_host(array: jax.Array) -> np.ndarray:
    """A NumPy copy of the whole ``array``, gathered from the other processes if they hold parts of it."""
    if array.is_fully_addressable or array.is_fully_replicated:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def distributed_settings(coordinator_address: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Arguments for `jax.distributed.initialize`: each from the argument, else from the environment
    (``JAX_COORDINATOR_ADDRESS`` "host:port", ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), else None
    (JAX then detects SLURM, Open MPI, Kubernetes or TPU pods)."""
    def from_env(value, name, convert):
        return convert(environ[name]) if value is None and name in environ else value

    return {"coordinator_address": from_env(coordinator_address, "JAX_COORDINATOR_ADDRESS", str),
            "num_processes": from_env(num_processes, "JAX_NUM_PROCESSES", int),
            "process_id": from_env(process_id, "JAX_PROCESS_ID", int)}


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kwargs) -> None:
    """Join a multi-process run (one process per host, or per GPU); call before any other JAX call.

    Settings come from `distributed_settings`; ``kwargs`` go to `jax.distributed.initialize`
    (e.g. ``local_device_ids``, ``initialization_timeout``). Afterwards `jax.devices()` lists the
    devices of all processes and `make_mesh` spans them.
    """
    jax.distributed.initialize(**distributed_settings(coordinator_address, num_processes, process_id), **kwargs)


def process_rows(rows: int | np.ndarray, process_index: int | None = None,
                 process_count: int | None = None) -> np.ndarray:
    """This process's share of file rows, for ``BatchIterator(indices=...)``.

    Args:
      rows: a row count n (rows ``0 .. n-1``) or the row indices ``(n,)`` of a split.
      process_index, process_count: default `jax.process_index()`, `jax.process_count()`.
    Returns:
      ``(n // process_count,)`` int64: the ``process_index``-th contiguous block of the sorted rows.
      The ``n % process_count`` last rows are left out, so every process has as many batches per epoch
      (the processes run the same collective program and must step together).
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    rows = np.arange(rows, dtype=np.int64) if np.ndim(rows) == 0 else np.sort(np.asarray(rows, np.int64))
    share = len(rows) // process_count
    if share == 0:
        raise ValueError(f"{len(rows)} rows cannot be shared by {process_count} processes")
    return rows[process_index * share:(process_index + 1) * share]


def global_batch(local_batch, mesh: Mesh, axis: int = 0):
    """Global arrays split along ``axis`` from each process's rows: leaves ``(B_local, ...)`` ->
    ``(B_local * process_count, ...)`` (with ``axis=1``: ``(T, B_local, ...)`` -> ``(T, B, ...)``).

    One process: the same as `shard_batch`. Every process must call it with the same shapes.
    """
    sharding = data_sharding(mesh, axis)
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), local_batch)
