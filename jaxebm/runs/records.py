"""What a run directory records about itself, and how a new command's config is compared with it.

``config.json``   the resolved config, written when the run is created (again only by ``--extend``).
``run.json``      provenance, written once: the experiment, the config, each data file (path, size, HDF5
                  attributes), jaxebm / jax versions, git commit, devices, host, creation time, command.
``history.jsonl`` one line per command that worked on the run (time, mode, commit, versions, changes).

Configs are compared as flat dotted keys (``{"cd": {"lr": 1e-4}}`` -> ``cd.lr``), so a refusal can name
every changed key: ``cd.lr: 0.0001 -> 0.05``.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import jaxebm
from jaxebm.runs.errors import RunError
from jaxebm.jsonable import to_jsonable

__all__ = ["MISSING", "Change", "append_history", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "changes_between", "data_record", "flatten",
           "format_changes", "git_commit", "now", "provenance", "read_json", "versions"]

MISSING = "(absent)"


class Change(NamedTuple):
    """One differing key: ``old`` is the recorded value, ``new`` the command's (`MISSING` if absent)."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


def _show(value: Any) -> str:
    return MISSING if value == MISSING else repr(value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"section.key": value}``; lists become tuples so they compare like the configs' tuples."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-12)
    return a == b


def changes_between(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every key whose value differs between two nested config dicts, sorted by key."""
    old_flat, new_flat = flatten(old), flatten(new)
    return [Change(key, old_flat.get(key, MISSING), new_flat.get(key, MISSING))
            for key in sorted(set(old_flat) | set(new_flat))
            if not _same(old_flat.get(key, MISSING), new_flat.get(key, MISSING))]


def format_changes(changes: list[Change]) -> str:
    """One indented line per change."""
    return "\n".join(f"  {change}" for change in changes)


def now() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The checkout's commit (``+dirty`` when tracked files changed), or None outside a git checkout."""
    source = Path(jaxebm.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def versions() -> dict[str, Any]:
    """jaxebm, jax, jaxlib and Python versions and the devices jax sees (initialises jax's backend)."""
    import jax
    import jaxlib

    return {"jaxebm": jaxebm.__version__, "git_commit": git_commit(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "python": platform.python_version(),
            "devices": [str(device) for device in jax.devices()],
            "device_kinds": sorted({device.device_kind for device in jax.devices()}), "host": socket.gethostname()}


def data_record(path: Path, attrs: dict[str, Any], num_jets: int) -> dict[str, Any]:
    """A data file as provenance: path, size in bytes, number of jets, HDF5 attributes."""
    return {"path": os.fspath(path), "size_bytes": path.stat().st_size, "num_jets": num_jets,
            "attrs": to_jsonable(dict(attrs))}


def provenance(experiment: str, config_dict: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The content of ``run.json``."""
    return {"experiment": experiment, "created": now(), "command": sys.argv, **versions(), "config": config_dict,
            "data": data}


def read_json(path: Path) -> Any:
    """Parsed JSON of ``path``, or None when it does not exist; `RunError` naming the file when it is not
    valid JSON (a damaged record)."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(f"{path} is damaged (not valid JSON: {error}). Restore it from a copy; a run's config is "
                       f"also recorded in its run.json (key 'config') and in each seed's config.json. Or start a "
                       f"new run with --force (the old directory is renamed, not deleted)") from None


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` by ``write(handle)`` into a uniquely named temporary file beside it, then a rename: a
    reader sees the old file or the new one, never part of one, and no temporary file stays behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (`atomic_write_bytes`)."""
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def atomic_write_json(path: Path, content: Any, *, sort_keys: bool = True) -> None:
    """Write ``content`` as indented JSON to ``path`` atomically (`atomic_write_bytes`)."""
    atomic_write_text(path, json.dumps(to_jsonable(content), indent=2, sort_keys=sort_keys) + "\n")


def append_history(out_dir: Path, mode: str, **fields: Any) -> None:
    """Append a line to ``out_dir/history.jsonl``: time, mode, pid, versions (git commit, devices), ``fields``."""
    line = {"time": now(), "mode": mode, "pid": os.getpid(), **versions(), **fields}
    with open(out_dir / "history.jsonl", "a") as history:
        history.write(json.dumps(to_jsonable(line)) + "\n")
