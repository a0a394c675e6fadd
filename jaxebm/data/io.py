"""Jet files: the jaxebm HDF5 schema and readers for public jet data sets.

Schema (one HDF5 file per sample, ``SCHEMA_VERSION`` in the root attributes):

- ``constituents``: float32 ``(n_jets, n_max, 4)`` four-momenta ``(E, px, py, pz)`` in GeV,
  pT-ordered, zero-padded.
- ``mask``: bool ``(n_jets, n_max)``, True for a real constituent.
- ``jets``: float32 ``(n_jets, 5)`` ``(pt [GeV], eta, phi, mass [GeV], n_constituents)`` of the
  whole jet. ``n_constituents`` counts every constituent of the jet, so it may exceed ``n_max``
  when the stored list was truncated; ``mask.sum(1) == min(n_constituents, n_max)``.
- ``labels``: int32 ``(n_jets,)``, optional (files that mix classes).
- root attributes: provenance (process, generator, seed, cuts, jet definition, creation time).

Datasets are chunked along the jet axis and gzip-compressed, so ``read_jets(path, start, stop)``
reads a slice without touching the rest of the file. Writes are atomic: a temporary file in the
target directory is renamed over the destination only once it is complete; temporary files left by
a killed write of the same target are removed by the next write.

Readers check what the arrays promise: every jet has a real constituent, ``mask`` agrees with
``jets[:, 4]``; a corrupt, truncated or empty file raises `JetFileError` naming it.

Example:
    >>> sample = read_jets("data/qcd.h5", start=0, stop=1000)  # doctest: +SKIP
    >>> sample.constituents.shape  # doctest: +SKIP
    (1000, 200, 4)
"""

from __future__ import annotations

import contextlib
import os
import re
import types
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import h5py
import numpy as np

__all__ = [
    "SCHEMA_VERSION",
    "JetFileError",
    "JetSample",
    "count_jets",
    "jet_summary",
    "massless_four_vectors",
    "read_jetnet",
    "read_jets",
    "read_top_tagging_landscape",
    "validate_sample",
    "write_jets",
]

SCHEMA_VERSION = 1
_CHUNK_JETS = 256
_NUM_JET_FEATURES = 5
_HDF5_READ_ERRORS = (OSError, RuntimeError)  # what h5py raises on damaged files
_REGENERATE = "delete it and generate it again (jaxebm data generate) or download it again"
_SHAPE_PATTERNS = {
    "constituents": "(n_jets, n_max, 4)",
    "mask": "(n_jets, n_max)",
    "jets": "(n_jets, 5)",
    "labels": "(n_jets,)",
}


class JetFileError(ValueError):
    """A jet file, or a sample about to be written, does not follow the schema."""


class JetSample(NamedTuple):
    """Jets of one sample, in the schema's layout (see the module docstring).

    Attributes:
        constituents: float32 ``(n_jets, n_max, 4)`` ``(E, px, py, pz)`` in GeV.
        mask: bool ``(n_jets, n_max)``.
        jets: float32 ``(n_jets, 5)`` ``(pt, eta, phi, mass, n_constituents)``.
        labels: int32 ``(n_jets,)`` or None.
        attrs: provenance; values are str, bool, int, float or tuples of those.
    """

    constituents: np.ndarray
    mask: np.ndarray
    jets: np.ndarray
    labels: np.ndarray | None = None
    attrs: Mapping[str, Any] = types.MappingProxyType({})


def validate_sample(sample: JetSample, source: str = "sample") -> None:
    """Raise JetFileError naming ``source`` and the dataset if ``sample`` breaks the schema."""
    arrays = {"constituents": sample.constituents, "mask": sample.mask, "jets": sample.jets}
    if sample.labels is not None:
        arrays["labels"] = sample.labels
    dtypes = {"constituents": np.float32, "mask": np.bool_, "jets": np.float32, "labels": np.int32}
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray) or array.dtype != dtypes[name]:
            found = getattr(array, "dtype", type(array).__name__)
            raise JetFileError(f"{source}: dataset '{name}' must be {np.dtype(dtypes[name])}, got {found}")
    num_jets, num_slots = (sample.constituents.shape + (-1, -1))[:2]  # -1: too few axes, caught below
    expected_shapes = {
        "constituents": (num_jets, num_slots, 4),
        "mask": (num_jets, num_slots),
        "jets": (num_jets, _NUM_JET_FEATURES),
        "labels": (num_jets,),
    }
    for name, array in arrays.items():
        if array.shape != expected_shapes[name]:
            raise JetFileError(
                f"{source}: dataset '{name}' has shape {array.shape}, expected {_SHAPE_PATTERNS[name]}"
                f" with (n_jets, n_max) = {(num_jets, num_slots)} taken from 'constituents'"
            )
    if num_jets == 0:
        raise JetFileError(f"{source}: holds no jets")
    for name in ("constituents", "jets"):
        if not np.isfinite(arrays[name]).all():
            raise JetFileError(f"{source}: dataset '{name}' contains NaN or inf values")


def write_jets(path: str | os.PathLike, sample: JetSample) -> None:
    """Write ``sample`` to ``path`` atomically; an existing file is replaced only on success.

    The data go to a new temporary file in the same directory (created if missing), which is
    synced and then renamed over ``path`` (``os.replace``). On any failure the temporary file is
    removed and the old file, if any, is left untouched; temporary files of ``path`` whose writer
    process is gone (killed mid-write) are removed first. ``SCHEMA_VERSION`` joins the attributes.
    """
    validate_sample(sample)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _remove_stale_temp_files(path)
    temp_path = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(temp_path, "w-") as file:
            _write_datasets(file, sample)
            file.attrs.update({key: _to_hdf5_attr(key, value) for key, value in sample.attrs.items()})
            file.attrs["schema_version"] = SCHEMA_VERSION
        with open(temp_path, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def read_jets(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> JetSample:
    """Read jets ``[start, stop)`` of a schema file (``stop=None``: to the end).

    Raises:
        JetFileError: missing, corrupt or truncated file, missing dataset, unknown schema version,
            wrong shapes or dtypes, NaN/inf values, a jet without real constituents or whose
            ``mask`` disagrees with ``jets[:, 4]`` (naming its row), an empty file, or a slice
            outside the file.
    """
    with _open_hdf5(path) as file:
        version = _from_hdf5_attr(file.attrs.get("schema_version"))
        if version != SCHEMA_VERSION:
            raise JetFileError(f"{path}: unknown schema_version {version!r}, expected {SCHEMA_VERSION}")
        datasets = {name: _dataset(file, path, name) for name in ("constituents", "mask", "jets")}
        num_jets = datasets["constituents"].shape[0]
        rows = _checked_slice(path, num_jets, start, stop)
        sample = JetSample(
            constituents=datasets["constituents"][rows],
            mask=datasets["mask"][rows],
            jets=datasets["jets"][rows],
            labels=file["labels"][rows] if "labels" in file else None,
            attrs={key: _from_hdf5_attr(value) for key, value in file.attrs.items()},
        )
    validate_sample(sample, source=os.fspath(path))
    _check_masks(sample, os.fspath(path), rows.start)
    return sample


def count_jets(path: str | os.PathLike) -> int:
    """Number of jets in a schema file, without reading the data."""
    with _open_hdf5(path) as file:
        return int(_dataset(file, path, "constituents").shape[0])


def massless_four_vectors(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """``(..., 4)`` four-momenta ``(E, px, py, pz)`` of massless particles from ``pt`` (GeV), ``eta``, ``phi``
    of any common shape; ``E = |p| = pt cosh(eta)``."""
    return np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1)


def jet_summary(constituents: np.ndarray, mask: np.ndarray, num_constituents: np.ndarray) -> np.ndarray:
    """Jet ``(pt, eta, phi, mass, n_constituents)`` float32 ``(n, 5)`` from summed constituents.

    Args:
        constituents: ``(n, n_max, 4)`` ``(E, px, py, pz)`` in GeV.
        mask: bool ``(n, n_max)``; padded slots are left out of the sum.
        num_constituents: ``(n,)`` multiplicity stored in the last column.
    """
    total = np.where(mask[..., None], constituents, 0.0).astype(np.float64).sum(axis=1)
    energy, px, py, pz = total.T
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pz), where=pt > 0))
    phi = np.arctan2(py, px)
    mass = np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))
    return np.stack([pt, eta, phi, mass, num_constituents], axis=1).astype(np.float32)


def read_top_tagging_landscape(
    path: str | os.PathLike, start: int = 0, stop: int | None = None, *, max_constituents: int = 200
) -> JetSample:
    """Read the public top-tagging landscape data set (pandas "fixed" frame under key ``table``).

    h5py sees ``table/block{k}_items`` (column names, bytes) and ``table/block{k}_values``
    (``(n_jets, n_columns_k)``), one block per column dtype. Constituent columns are
    ``E_i, PX_i, PY_i, PZ_i`` for ``i = 0..199``, zero-padded; ``is_signal_new`` (1 = top) becomes
    ``labels``; other columns (``truthE`` ..., ``ttv``) are ignored. The format has no mask, so a
    constituent is real where ``E_i > 0``. ``jets`` is computed from the summed constituents.
    """
    with _open_hdf5(path) as file:
        columns = _pandas_fixed_columns(file, path)
        num_jets = next(iter(columns.values()))[0].shape[0]
        rows = _checked_slice(path, num_jets, start, stop)
        blocks = {id(dataset): dataset[rows] for dataset, _ in columns.values()}

        def column(name: str) -> np.ndarray:
            if name not in columns:
                raise JetFileError(f"{path}: table has no column '{name}'")
            dataset, position = columns[name]
            return blocks[id(dataset)][:, position]

        num_slots = sum(1 for i in range(max_constituents) if f"E_{i}" in columns)
        if num_slots == 0:
            raise JetFileError(f"{path}: table has no constituent columns E_0, PX_0, ...")
        constituents = np.stack(
            [np.stack([column(f"{c}_{i}") for c in ("E", "PX", "PY", "PZ")], axis=-1) for i in range(num_slots)],
            axis=1,
        ).astype(np.float32)
        labels = column("is_signal_new").astype(np.int32)
    if not np.isfinite(constituents).all():
        raise JetFileError(f"{path}: constituent columns contain NaN or inf values")
    mask = constituents[..., 0] > 0
    sample = JetSample(
        constituents=np.where(mask[..., None], constituents, 0.0).astype(np.float32),
        mask=mask,
        jets=jet_summary(constituents, mask, mask.sum(axis=1)),
        labels=labels,
        attrs={"source_format": "top_tagging_landscape", "source_path": os.fspath(path)},
    )
    validate_sample(sample, source=os.fspath(path))
    _check_masks(sample, os.fspath(path), rows.start)
    return sample


def read_jetnet(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> JetSample:
    """Read a JetNet file (``particle_features``, ``jet_features``) into the schema.

    JetNet stores ``particle_features (n, 30 or 150, 4) = (eta_rel, phi_rel, pT_rel, mask)`` and
    ``jet_features (n, 5) = (type, pT, eta, mass, n_particles)``. Constituents are rebuilt as
    massless four-vectors with ``pT = pT_rel * jet pT``, ``eta = jet eta + eta_rel`` and
    ``phi = phi_rel``: the jet's azimuth is not stored, so every jet sits at ``phi = 0``.
    ``jets`` holds JetNet's own jet values (pT, eta, phi = 0, mass, n_particles), which describe
    the whole jet; ``labels`` holds the jet type. A jet without real particles raises JetFileError;
    ``n_particles`` is not checked against the mask.
    """
    with _open_hdf5(path) as file:
        particles_dataset = _dataset(file, path, "particle_features")
        jet_dataset = _dataset(file, path, "jet_features")
        if particles_dataset.ndim != 3 or particles_dataset.shape[2] != 4:
            shape = particles_dataset.shape
            raise JetFileError(f"{path}: dataset 'particle_features' has shape {shape}, expected (n, n_max, 4)")
        if jet_dataset.shape != (particles_dataset.shape[0], 5):
            expected = (particles_dataset.shape[0], 5)
            raise JetFileError(f"{path}: dataset 'jet_features' has shape {jet_dataset.shape}, expected {expected}")
        rows = _checked_slice(path, particles_dataset.shape[0], start, stop)
        particles = particles_dataset[rows].astype(np.float64)
        jet_features = jet_dataset[rows].astype(np.float64)
    if not (np.isfinite(particles).all() and np.isfinite(jet_features).all()):
        raise JetFileError(f"{path}: JetNet features contain NaN or inf values")
    jet_type, jet_pt, jet_eta, jet_mass, num_particles = jet_features.T
    mask = particles[..., 3] > 0.5
    pt = particles[..., 2] * jet_pt[:, None]
    eta = particles[..., 0] + jet_eta[:, None]
    phi = particles[..., 1]
    four_vectors = massless_four_vectors(pt, eta, phi)
    jets = np.stack([jet_pt, jet_eta, np.zeros_like(jet_pt), jet_mass, num_particles], axis=1)
    sample = JetSample(
        constituents=np.where(mask[..., None], four_vectors, 0.0).astype(np.float32),
        mask=mask,
        jets=jets.astype(np.float32),
        labels=np.rint(jet_type).astype(np.int32),
        attrs={"source_format": "jetnet", "source_path": os.fspath(path)},
    )
    validate_sample(sample, source=os.fspath(path))
    _check_masks(sample, os.fspath(path), rows.start, check_counts=False)
    return sample


def _write_datasets(file: h5py.File, sample: JetSample) -> None:
    """Create the schema's datasets, chunked along the jet axis and gzip-compressed."""
    arrays = {"constituents": sample.constituents, "mask": sample.mask, "jets": sample.jets}
    if sample.labels is not None:
        arrays["labels"] = sample.labels
    chunk_jets = min(_CHUNK_JETS, sample.constituents.shape[0])
    for name, array in arrays.items():
        chunks = (chunk_jets, *array.shape[1:])
        file.create_dataset(name, data=array, chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)


@contextlib.contextmanager
def _open_hdf5(path: str | os.PathLike):
    """``path`` open for reading; an HDF5 error while opening or reading it becomes a JetFileError
    that names the file (corrupt, truncated or empty) and says to regenerate it."""
    if not os.path.isfile(path):
        raise JetFileError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as file:
            yield file
    except _HDF5_READ_ERRORS as error:
        raise JetFileError(
            f"{path}: not a readable HDF5 file: corrupt, truncated or empty ({error}); {_REGENERATE}"
        ) from error


def _check_masks(sample: JetSample, source: str, first_row: int, *, check_counts: bool = True) -> None:
    """Raise JetFileError naming ``source`` and the file row of the first jet whose mask has no real
    constituent or, with ``check_counts``, does not hold ``min(jets[:, 4], n_max)`` of them."""
    num_real = sample.mask.sum(axis=1)
    expected = np.minimum(sample.jets[:, 4], sample.mask.shape[1]) if check_counts else num_real
    bad = np.flatnonzero((num_real == 0) | (num_real != expected))
    if bad.size == 0:
        return
    index = bad[0]
    if num_real[index] == 0:
        raise JetFileError(f"{source}: row {first_row + index}: the mask is all False (a jet without constituents)")
    raise JetFileError(
        f"{source}: row {first_row + index}: the mask marks {num_real[index]} constituents, but n_constituents "
        f"(jets[:, 4]) = {sample.jets[index, 4]:g} requires {expected[index]:g}"
    )


def _remove_stale_temp_files(path: str) -> None:
    """Delete temporary files of earlier writes of ``path`` whose writer process no longer runs."""
    directory, name = os.path.split(path)
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:(\d+)\.)?[0-9a-f]{{32}}\.tmp")  # pid absent: older writers
    for entry in os.listdir(directory):
        match = pattern.fullmatch(entry)
        if match and not (match[1] and _is_running(int(match[1]))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, entry))


def _is_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True


def _dataset(file: h5py.File, path: str | os.PathLike, name: str) -> h5py.Dataset:
    if not isinstance(file.get(name), h5py.Dataset):
        raise JetFileError(f"{path}: missing dataset '{name}'")
    return file[name]


def _checked_slice(path: str | os.PathLike, num_jets: int, start: int, stop: int | None) -> slice:
    if num_jets == 0:
        raise JetFileError(f"{path}: holds no jets")
    stop = num_jets if stop is None else stop
    if not 0 <= start < stop <= num_jets:
        raise JetFileError(f"{path}: slice [{start}, {stop}) is empty or outside the {num_jets} jets")
    return slice(start, stop)


def _pandas_fixed_columns(file: h5py.File, path: str | os.PathLike) -> dict[str, tuple[h5py.Dataset, int]]:
    """Map column name -> (block values dataset, column position) for a pandas fixed frame."""
    table = file.get("table")
    if not isinstance(table, h5py.Group) or "block0_items" not in table:
        raise JetFileError(f"{path}: missing pandas table 'table/block0_items'")
    columns = {}
    block = 0
    while f"block{block}_items" in table:
        values = _dataset(file, path, f"table/block{block}_values")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in table[f"block{block}_items"][()]]
        if values.ndim != 2 or values.shape[1] != len(names):
            expected = f"(n, {len(names)})"
            raise JetFileError(f"{path}: 'table/block{block}_values' has shape {values.shape}, expected {expected}")
        columns.update({name: (values, position) for position, name in enumerate(names)})
        block += 1
    return columns


def _to_hdf5_attr(key: str, value: Any) -> Any:
    """Attribute value as HDF5 stores it: scalars as they are, sequences as arrays."""
    if isinstance(value, (str, bool, int, float, np.generic)):
        return value
    if isinstance(value, (tuple, list)):
        if all(isinstance(item, str) for item in value):
            return np.array(value, dtype=h5py.string_dtype())
        return np.asarray(value)
    raise JetFileError(f"attribute '{key}' has unsupported type {type(value).__name__}")


def _from_hdf5_attr(value: Any) -> Any:
    """Plain Python value of an HDF5 attribute: scalars -> int/float/bool/str, arrays -> tuples."""
    if isinstance(value, np.ndarray):
        return tuple(_from_hdf5_attr(item) for item in value.tolist())
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
