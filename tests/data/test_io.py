"""HDF5 schema: round trip, slices, atomic writes, clear errors, public-format readers."""

import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from jaxebm.data import io
from jaxebm.data.io import (
    SCHEMA_VERSION,
    JetFileError,
    JetSample,
    count_jets,
    jet_summary,
    massless_four_vectors,
    read_jetnet,
    read_jets,
    read_top_tagging_landscape,
    write_jets,
)


def _synthetic_sample(num_jets=12, num_slots=7, seed=0):
    rng = np.random.default_rng(seed)
    multiplicity = rng.integers(1, num_slots + 3, size=num_jets)  # some exceed num_slots (truncated)
    mask = np.arange(num_slots) < np.minimum(multiplicity, num_slots)[:, None]
    pt = np.sort(rng.exponential(20.0, size=(num_jets, num_slots)), axis=1)[:, ::-1] + 1.0
    four_vectors = massless_four_vectors(pt, rng.normal(0, 0.3, pt.shape), rng.normal(0, 0.3, pt.shape))
    constituents = np.where(mask[..., None], four_vectors, 0.0).astype(np.float32)
    return JetSample(
        constituents=constituents,
        mask=mask,
        jets=jet_summary(constituents, mask, multiplicity),
        labels=rng.integers(0, 3, size=num_jets).astype(np.int32),
        attrs={"process": "synthetic", "seed": 3, "jet_radius": 0.8, "is_test": True,
               "settings": ("A:b = on", "C:d = 2"), "worker_seeds": (5, 6), "match_pdg_ids": ()},
    )


def _write_raw(path, schema_version=SCHEMA_VERSION, **arrays):
    with h5py.File(path, "w") as file:
        if schema_version is not None:
            file.attrs["schema_version"] = schema_version
        for name, array in arrays.items():
            file.create_dataset(name, data=array)


def test_round_trip_keeps_arrays_and_attributes(tmp_path):
    sample = _synthetic_sample()
    write_jets(tmp_path / "jets.h5", sample)
    loaded = read_jets(tmp_path / "jets.h5")
    for name in ("constituents", "mask", "jets", "labels"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(sample, name))
        assert getattr(loaded, name).dtype == getattr(sample, name).dtype
    assert loaded.attrs == {**sample.attrs, "schema_version": SCHEMA_VERSION}
    assert count_jets(tmp_path / "jets.h5") == 12


def test_slices_read_only_the_requested_jets(tmp_path):
    sample = _synthetic_sample(num_jets=600)
    write_jets(tmp_path / "jets.h5", sample)
    part = read_jets(tmp_path / "jets.h5", start=250, stop=520)  # crosses a chunk boundary
    np.testing.assert_array_equal(part.constituents, sample.constituents[250:520])
    np.testing.assert_array_equal(part.labels, sample.labels[250:520])
    np.testing.assert_array_equal(read_jets(tmp_path / "jets.h5", start=590).jets, sample.jets[590:])
    with h5py.File(tmp_path / "jets.h5") as file:
        assert file["constituents"].chunks[0] < 600 and file["constituents"].compression == "gzip"


def test_failed_write_leaves_the_old_file_untouched_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "jets.h5"
    write_jets(path, _synthetic_sample(seed=1))
    old_bytes = path.read_bytes()
    original = h5py.Group.create_dataset
    calls = []

    def fail_on_second_dataset(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fail_on_second_dataset)
    with pytest.raises(OSError, match="disk full"):
        write_jets(path, _synthetic_sample(seed=2))
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["jets.h5"]


# Creates the temporary file of ``argv[1]``, then stalls until killed (as a write killed mid-way).
_STALLED_WRITER = """
import sys, time
import numpy as np
from jaxebm.data import io
def stall(file, sample):
    time.sleep(60)
io._write_datasets = stall
io.write_jets(sys.argv[1], io.JetSample(np.ones((2, 3, 4), np.float32), np.ones((2, 3), bool),
                                        np.full((2, 5), 3, np.float32)))
"""


def test_next_write_removes_the_temp_file_of_a_killed_write(tmp_path):
    path = tmp_path / "jets.h5"
    writer = subprocess.Popen([sys.executable, "-c", _STALLED_WRITER, str(path)])
    try:
        deadline = time.monotonic() + 15
        while not list(tmp_path.glob(".jets.h5.*.tmp")) and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.kill()
        writer.wait(timeout=10)
    assert len(list(tmp_path.glob(".jets.h5.*.tmp"))) == 1, "the writer never created its temporary file"
    live_writer_temp = f".jets.h5.{os.getpid()}.{'0' * 32}.tmp"  # a write in progress in a live process
    (tmp_path / live_writer_temp).write_bytes(b"")
    write_jets(path, _synthetic_sample())
    assert sorted(os.listdir(tmp_path)) == sorted([live_writer_temp, "jets.h5"])
    assert count_jets(path) == 12


def test_write_replaces_an_existing_file_and_creates_directories(tmp_path):
    path = tmp_path / "new" / "jets.h5"
    write_jets(path, _synthetic_sample(seed=1))
    write_jets(path, _synthetic_sample(seed=2))
    np.testing.assert_array_equal(read_jets(path).jets, _synthetic_sample(seed=2).jets)
    assert os.listdir(path.parent) == ["jets.h5"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"constituents": np.full((2, 3, 4), np.nan, np.float32)}, "'constituents' contains NaN"),
        ({"constituents": np.zeros((2, 3, 4), np.float64)}, "'constituents' must be float32"),
        ({"mask": np.ones((2, 4), bool)}, "'mask' has shape"),
        ({"labels": np.zeros(2, np.int64)}, "'labels' must be int32"),
    ],
)
def test_writing_a_bad_sample_raises_and_writes_nothing(tmp_path, change, message):
    good = JetSample(np.ones((2, 3, 4), np.float32), np.ones((2, 3), bool), np.ones((2, 5), np.float32))
    with pytest.raises(JetFileError, match=message):
        write_jets(tmp_path / "bad.h5", good._replace(**change))
    assert os.listdir(tmp_path) == []


def test_unsupported_attribute_type_raises(tmp_path):
    sample = _synthetic_sample()._replace(attrs={"config": {"nested": 1}})
    with pytest.raises(JetFileError, match="attribute 'config'"):
        write_jets(tmp_path / "jets.h5", sample)
    assert os.listdir(tmp_path) == []


def _bad_files():
    """(name, writer(path), expected message) for every kind of broken file."""
    good = {"constituents": np.ones((3, 2, 4), np.float32), "mask": np.ones((3, 2), bool),
            "jets": np.ones((3, 5), np.float32)}
    nan_jets = good["jets"].copy()
    nan_jets[1, 2] = np.inf
    return [
        ("empty_bytes", lambda p: p.write_bytes(b""), "not a readable HDF5 file"),
        ("text", lambda p: p.write_text("E,px,py,pz\n"), "not a readable HDF5 file"),
        ("no_mask", lambda p: _write_raw(p, constituents=good["constituents"], jets=good["jets"]),
         "missing dataset 'mask'"),
        ("no_version", lambda p: _write_raw(p, schema_version=None, **good), "unknown schema_version None"),
        ("future_version", lambda p: _write_raw(p, schema_version=99, **good), "unknown schema_version 99"),
        ("jets_shape", lambda p: _write_raw(p, **{**good, "jets": np.ones((3, 4), np.float32)}), "'jets' has shape"),
        ("mask_dtype", lambda p: _write_raw(p, **{**good, "mask": np.ones((3, 2), np.uint8)}), "'mask' must be bool"),
        ("inf_jets", lambda p: _write_raw(p, **{**good, "jets": nan_jets}), "'jets' contains NaN or inf"),
        ("no_jets", lambda p: _write_raw(p, **{k: v[:0] for k, v in good.items()}), "holds no jets"),
        ("labels_shape", lambda p: _write_raw(p, **good, labels=np.zeros(2, np.int32)), "'labels' has shape"),
    ]


@pytest.mark.parametrize(("name", "writer", "message"), _bad_files(), ids=[case[0] for case in _bad_files()])
def test_reading_a_bad_file_names_the_problem(tmp_path, name, writer, message):
    path = tmp_path / f"{name}.h5"
    writer(path)
    with pytest.raises(JetFileError, match=message) as error:
        read_jets(path)
    assert str(path) in str(error.value)


def _with_bad_mask_row(row, problem):
    """Arrays of a valid 5-jet file with jet ``row`` broken: an all-False mask, or a mask count that
    contradicts n_constituents."""
    sample = _synthetic_sample(num_jets=5)
    arrays = {"constituents": sample.constituents, "mask": sample.mask.copy(), "jets": sample.jets.copy()}
    if problem == "empty":
        arrays["mask"][row] = False
    else:
        arrays["jets"][row, 4] = arrays["mask"][row].sum() - 1
    return arrays


@pytest.mark.parametrize(("problem", "message"), [("empty", "the mask is all False"),
                                                  ("count", r"the mask marks \d+ constituents, but n_constituents")])
def test_a_bad_mask_row_names_the_file_and_the_first_bad_row(tmp_path, problem, message):
    path = tmp_path / "jets.h5"
    arrays = _with_bad_mask_row(3, problem)
    arrays["mask"][4] = False  # a second bad row: the first one is reported
    _write_raw(path, **arrays)
    for start in (0, 2):
        with pytest.raises(JetFileError, match=f"{re.escape(str(path))}: row 3: .*({message})"):
            read_jets(path, start=start)
    assert read_jets(path, stop=3).jets.shape == (3, 5)


def test_landscape_and_jetnet_readers_reject_a_jet_without_constituents(tmp_path):
    constituents = np.zeros((3, 200, 4), np.float32)
    constituents[:, 0] = [10.0, 6.0, 8.0, 0.0]
    constituents[1] = 0.0
    _write_landscape(tmp_path / "landscape.h5", constituents, np.zeros(3))
    with pytest.raises(JetFileError, match="landscape.h5: row 1: the mask is all False"):
        read_top_tagging_landscape(tmp_path / "landscape.h5")
    features = np.zeros((3, 30, 4), np.float32)
    features[[0, 2], 0] = [0.0, 0.0, 1.0, 1.0]
    with h5py.File(tmp_path / "jetnet.hdf5", "w") as file:
        file.create_dataset("particle_features", data=features)
        file.create_dataset("jet_features", data=np.ones((3, 5), np.float32))
    with pytest.raises(JetFileError, match="jetnet.hdf5: row 1: the mask is all False"):
        read_jetnet(tmp_path / "jetnet.hdf5")


def _zero_first_chunk(path):
    """Overwrite the first compressed chunk of 'constituents' with zeros (corrupt data, intact layout)."""
    with h5py.File(path, "r") as file:
        chunk = file["constituents"].id.get_chunk_info(0)
    with open(path, "r+b") as handle:
        handle.seek(chunk.byte_offset)
        handle.write(bytes(chunk.size))


def _truncate_to_half(path):
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage", [_zero_first_chunk, _truncate_to_half, lambda path: path.write_bytes(b"")],
                         ids=["corrupt_chunk", "truncated", "empty"])
def test_a_damaged_file_names_the_file_and_says_to_regenerate_it(tmp_path, damage):
    path = tmp_path / "jets.h5"
    write_jets(path, _synthetic_sample(num_jets=600))
    damage(path)
    with pytest.raises(JetFileError, match=f"{re.escape(str(path))}: not a readable HDF5 file.*generate it again"):
        read_jets(path)


def test_missing_file_and_bad_slices_raise(tmp_path):
    with pytest.raises(JetFileError, match="no such file"):
        read_jets(tmp_path / "absent.h5")
    write_jets(tmp_path / "jets.h5", _synthetic_sample())
    for start, stop in [(5, 5), (-1, 3), (0, 13), (12, None)]:
        with pytest.raises(JetFileError, match="outside the 12 jets"):
            read_jets(tmp_path / "jets.h5", start, stop)


def _landscape_columns():
    constituent_columns = [f"{c}_{i}" for i in range(200) for c in ("E", "PX", "PY", "PZ")]
    return constituent_columns + ["truthE", "truthPX", "truthPY", "truthPZ"], ["ttv", "is_signal_new"]


def _write_landscape(path, constituents, labels):
    """A pandas "fixed" frame under key ``table``, as h5py sees it: one block per dtype."""
    float_columns, int_columns = _landscape_columns()
    num_jets = len(constituents)
    floats = np.zeros((num_jets, len(float_columns)), np.float32)
    floats[:, :800] = constituents.reshape(num_jets, 800)
    ints = np.stack([np.zeros(num_jets, np.int64), labels.astype(np.int64)], axis=1)
    with h5py.File(path, "w") as file:
        table = file.create_group("table")
        table.attrs["pandas_type"] = "frame"
        table.create_dataset("axis0", data=np.array(float_columns + int_columns, dtype="S"))
        table.create_dataset("axis1", data=np.arange(num_jets, dtype=np.int64))
        table.create_dataset("block0_items", data=np.array(float_columns, dtype="S"))
        table.create_dataset("block0_values", data=floats)
        table.create_dataset("block1_items", data=np.array(int_columns, dtype="S"))
        table.create_dataset("block1_values", data=ints)


def test_top_tagging_landscape_layout_is_converted(tmp_path):
    rng = np.random.default_rng(4)
    num_jets, multiplicity = 9, rng.integers(1, 200, size=9)
    pt = np.sort(rng.exponential(10.0, (num_jets, 200)), axis=1)[:, ::-1] + 0.5
    four_vectors = massless_four_vectors(pt, rng.normal(0, 0.4, pt.shape), rng.normal(1.0, 0.4, pt.shape))
    real = np.arange(200) < multiplicity[:, None]
    constituents = np.where(real[..., None], four_vectors, 0.0).astype(np.float32)
    labels = rng.integers(0, 2, num_jets)
    _write_landscape(tmp_path / "train.h5", constituents, labels)

    sample = read_top_tagging_landscape(tmp_path / "train.h5")
    np.testing.assert_array_equal(sample.constituents, constituents)
    np.testing.assert_array_equal(sample.mask, real)
    np.testing.assert_array_equal(sample.labels, labels)
    np.testing.assert_allclose(sample.jets, jet_summary(constituents, real, multiplicity), rtol=1e-6)
    part = read_top_tagging_landscape(tmp_path / "train.h5", start=2, stop=5, max_constituents=40)
    np.testing.assert_array_equal(part.constituents, constituents[2:5, :40])
    write_jets(tmp_path / "converted.h5", sample)
    np.testing.assert_array_equal(read_jets(tmp_path / "converted.h5").labels, labels)


def test_landscape_reader_names_missing_pieces(tmp_path):
    with h5py.File(tmp_path / "no_table.h5", "w") as file:
        file.create_dataset("jets", data=np.zeros(3))
    with pytest.raises(JetFileError, match="missing pandas table"):
        read_top_tagging_landscape(tmp_path / "no_table.h5")
    with h5py.File(tmp_path / "no_label.h5", "w") as file:
        file.create_dataset("table/block0_items", data=np.array(["E_0", "PX_0", "PY_0", "PZ_0"], dtype="S"))
        file.create_dataset("table/block0_values", data=np.ones((3, 4), np.float32))
    with pytest.raises(JetFileError, match="no column 'is_signal_new'"):
        read_top_tagging_landscape(tmp_path / "no_label.h5")


def test_massless_four_vectors_have_the_requested_kinematics():
    rng = np.random.default_rng(5)
    pt, eta, phi = rng.uniform(1, 100, (3, 4)), rng.uniform(-2, 2, (3, 4)), rng.uniform(-3, 3, (3, 4))
    energy, px, py, pz = np.moveaxis(massless_four_vectors(pt, eta, phi), -1, 0)
    np.testing.assert_allclose(np.hypot(px, py), pt, rtol=1e-12)
    np.testing.assert_allclose(np.arcsinh(pz / pt), eta, rtol=1e-12)
    np.testing.assert_allclose(np.arctan2(py, px), phi, rtol=1e-12)
    np.testing.assert_allclose(energy, np.sqrt(px**2 + py**2 + pz**2), rtol=1e-12)


def test_jetnet_layout_is_rebuilt_as_massless_constituents(tmp_path):
    rng = np.random.default_rng(5)
    num_jets, num_slots = 6, 30
    multiplicity = rng.integers(5, 45, num_jets)  # JetNet counts every particle, stores 30
    mask = np.arange(num_slots) < np.minimum(multiplicity, num_slots)[:, None]
    pt_rel = np.sort(rng.dirichlet(np.ones(num_slots), num_jets), axis=1)[:, ::-1]
    features = np.stack([rng.normal(0, 0.2, pt_rel.shape), rng.normal(0, 0.2, pt_rel.shape), pt_rel, mask], -1)
    features = np.where(mask[..., None], features, 0.0).astype(np.float32)
    jet_pt, jet_eta = rng.uniform(900, 1100, num_jets), rng.normal(0, 1, num_jets)
    jet_mass = rng.uniform(5, 200, num_jets)
    jet_type = np.array([0, 1, 2, 3, 4, 2])
    jet_features = np.stack([jet_type, jet_pt, jet_eta, jet_mass, multiplicity], 1).astype(np.float32)
    with h5py.File(tmp_path / "t.hdf5", "w") as file:
        file.create_dataset("particle_features", data=features)
        file.create_dataset("jet_features", data=jet_features)

    sample = read_jetnet(tmp_path / "t.hdf5")
    np.testing.assert_array_equal(sample.mask, mask)
    np.testing.assert_array_equal(sample.labels, jet_type)
    energy, px, py, pz = sample.constituents[mask].astype(np.float64).T
    pt = np.hypot(px, py)
    np.testing.assert_allclose(pt, (features[..., 2] * jet_features[:, 1:2])[mask], rtol=1e-5)
    np.testing.assert_allclose(np.arcsinh(pz / pt), (features[..., 0] + jet_features[:, 2:3])[mask], atol=1e-4)
    np.testing.assert_allclose(np.arctan2(py, px), features[..., 1][mask], atol=1e-5)
    np.testing.assert_allclose(energy, np.hypot(pt, pz), rtol=1e-5)  # massless
    assert (sample.constituents[~mask] == 0).all()
    np.testing.assert_array_equal(sample.jets[:, [0, 1, 3, 4]], jet_features[:, [1, 2, 3, 4]])
    assert (sample.jets[:, 2] == 0).all()  # JetNet keeps no jet azimuth
    np.testing.assert_array_equal(read_jetnet(tmp_path / "t.hdf5", start=4).labels, jet_type[4:])


def test_jetnet_reader_rejects_wrong_shapes(tmp_path):
    with h5py.File(tmp_path / "bad.hdf5", "w") as file:
        file.create_dataset("particle_features", data=np.zeros((4, 30, 3), np.float32))
        file.create_dataset("jet_features", data=np.zeros((4, 5), np.float32))
    with pytest.raises(JetFileError, match="'particle_features' has shape"):
        read_jetnet(tmp_path / "bad.hdf5")
    with pytest.raises(JetFileError, match="missing dataset 'jet_features'"):
        with h5py.File(tmp_path / "half.hdf5", "w") as file:
            file.create_dataset("particle_features", data=np.zeros((4, 30, 4), np.float32))
        read_jetnet(tmp_path / "half.hdf5")


def test_module_exports_what_the_contract_names():
    assert {"JetSample", "SCHEMA_VERSION", "write_jets", "read_jets", "JetFileError",
            "read_top_tagging_landscape", "read_jetnet"} <= set(io.__all__)
    assert issubclass(JetFileError, ValueError)
