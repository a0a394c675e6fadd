"""Public jet data sets into the jaxebm schema, and a short description of any jet file.

Formats (`detect_format` tells them apart by their datasets):

- ``"top-tagging"``: the top-tagging landscape data set (pandas table ``table/block*_values``;
  `jaxebm.data.io.read_top_tagging_landscape`);
- ``"jetnet"``: JetNet ``particle_features`` / ``jet_features`` (`jaxebm.data.io.read_jetnet`);
- ``"jaxebm"``: the project's own schema (`jaxebm.data.io.read_jets`).

    convert("test.h5", "data/top_tagging_test.h5")              # format detected, labels kept
    describe("data/top_tagging_test.h5")["num_jets"]
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import jaxebm
from jaxebm.data.io import JetFileError, JetSample, read_jetnet, read_jets, read_top_tagging_landscape, write_jets

__all__ = ["FORMATS", "convert", "describe", "detect_format", "read_any"]

FORMATS = ("top-tagging", "jetnet", "jaxebm")


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path`` (one of `FORMATS`), from the datasets it holds; `JetFileError` if none fits."""
    if Path(path).is_dir():
        raise JetFileError(f"{path} is a directory: give the jet files in it (e.g. {Path(path) / '*.h5'})")
    if not Path(path).exists():
        raise JetFileError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as file:
            names = set(file)
    except (OSError, FileNotFoundError) as error:
        raise JetFileError(f"{path}: not a readable HDF5 file ({error})") from None
    if "constituents" in names:
        return "jaxebm"
    if "particle_features" in names:
        return "jetnet"
    if "table" in names:
        return "top-tagging"
    raise JetFileError(f"{path}: neither the jaxebm schema ('constituents'), JetNet ('particle_features') nor the "
                       f"top-tagging landscape layout ('table'); datasets found: {sorted(names)}")


def read_any(path: str | os.PathLike, fmt: str | None = None, start: int = 0, stop: int | None = None) -> JetSample:
    """Jets ``[start, stop)`` of ``path`` in format ``fmt`` (None: detected) as a `JetSample` of the schema."""
    fmt = fmt or detect_format(path)
    readers = {"top-tagging": read_top_tagging_landscape, "jetnet": read_jetnet, "jaxebm": read_jets}
    if fmt not in readers:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return readers[fmt](path, start, stop)


def convert(source: str | os.PathLike, target: str | os.PathLike, fmt: str | None = None, *, start: int = 0,
            stop: int | None = None, overwrite: bool = False) -> JetSample:
    """Write jets ``[start, stop)`` of ``source`` (format ``fmt`` or detected) to ``target`` in the schema,
    atomically; the attributes record the source and the converter. Refuses to replace an existing
    ``target`` unless ``overwrite``, and ``target`` being ``source`` always (`FileExistsError`); a
    ``start`` below 0 or a ``stop`` not above it is a `ValueError`. Returns the sample written."""
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"the rows [start, stop) must have 0 <= start < stop, got start {start}, stop {stop}")
    if Path(target).exists() and Path(target).samefile(source):
        raise FileExistsError(f"{target} is the source file itself: write the converted jets to another target")
    if Path(target).exists() and not overwrite:
        raise FileExistsError(f"{target} exists: pass --overwrite to replace it, or choose another target")
    sample = read_any(source, fmt, start, stop)
    sample = sample._replace(attrs={**sample.attrs, "converted_by": f"jaxebm {jaxebm.__version__}",
                                    "source_rows": (start, start + len(sample.jets))})
    write_jets(target, sample)
    return sample


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Format, number of jets and slots, labels, quantiles (16/50/84%) of jet pT [GeV], mass [GeV] and
    multiplicity, and the file's attributes."""
    fmt = detect_format(path)
    sample = read_any(path, fmt)
    quantiles = {name: np.percentile(values, [16, 50, 84]).round(3).tolist() for name, values in
                 (("pt", sample.jets[:, 0]), ("mass", sample.jets[:, 3]), ("multiplicity", sample.mask.sum(axis=1)))}
    labels = None if sample.labels is None else dict(zip(*(a.tolist() for a in np.unique(sample.labels,
                                                                                         return_counts=True))))
    return {"path": os.fspath(path), "format": fmt, "num_jets": len(sample.jets),
            "num_slots": sample.constituents.shape[1], "labels": labels, "quantiles_16_50_84": quantiles,
            "attrs": dict(sample.attrs)}
