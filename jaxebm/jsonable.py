"""JSON form of the values that records hold (run records, checkpoint side entries, metrics rows).

The one JSON helper below `jaxebm.train` and `jaxebm.runs`, so that neither imports the other for it.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

__all__ = ["to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """``value`` with dataclasses, tuples, numpy / jax arrays and scalars, paths turned into JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
