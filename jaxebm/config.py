"""Typed configs: nested frozen dataclasses built from TOML presets plus ``section.key=value`` overrides.

    config = load_config(ExperimentConfig, "jaxebm/experiments/configs/ebm/cpu.toml", ["run.num_steps=200"])
    save_config(config, run_dir / "config.json")

Unknown keys (with the closest known key suggested), wrong sections, values of the wrong type
(``run.num_steps = 20.5`` for an ``int``) and unparsable overrides raise `ConfigError` naming them, so
a typo in a preset never silently falls back to a default. Ints are accepted where a float is expected.

One range checker (`check_value`, `check_config`) covers every experiment's config: each float, in any
section, must be finite unless its field declares ``metadata={"finite": False}``; keys named like a
learning rate, a batch size or an epoch count (`POSITIVE_NAMES`, also with a prefix such as ``ae_lr``,
``cov_batch_size``) must be > 0, and sampler step sizes and noise scales (`NON_NEGATIVE_NAMES`, e.g.
``z_step_size``) >= 0. `from_dict` applies it to every value it is given, before the
config classes are built, and the runner to the whole config before any file is written, so ``inf`` or
``nan`` is refused naming the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "NON_NEGATIVE_NAMES", "POSITIVE_NAMES", "from_dict", "to_dict", "apply_overrides", "load_config", "save_config",
           "check_config", "check_seeds", "check_value", "require_positive"]

POSITIVE_NAMES = ("lr", "learning_rate", "batch_size", "num_epochs")
NON_NEGATIVE_NAMES = ("step_size", "noise_scale")


class ConfigError(ValueError):
    """A preset or override that does not fit the config classes."""


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _nested_class(annotation) -> type | None:
    """The dataclass inside ``annotation`` (``C`` or ``C | None``), if any."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        classes = [a for a in typing.get_args(annotation) if dataclasses.is_dataclass(a)]
        return classes[0] if len(classes) == 1 else None
    return None


def _coerce(value):
    """TOML gives lists where configs hold tuples (hashable, static under jit)."""
    if isinstance(value, list):
        return tuple(_coerce(v) for v in value)
    return value


def _type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _typed(value, annotation, path: str):
    """``value`` checked against ``annotation`` (int, float, bool, str, tuples, ``X | None``); ints widen to
    float. Other annotations are not checked. Raises `ConfigError` naming ``path`` and the expected type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _typed(value, option, path)
            except ConfigError:
                continue
    elif origin is tuple and isinstance(value, tuple):
        items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
        if len(items) == len(value):
            return tuple(_typed(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, items)))
    elif annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif annotation in (int, str, bool) and isinstance(value, annotation) and (
            annotation is bool or not isinstance(value, bool)):
        return value
    elif annotation not in (int, float, str, bool) and origin is not tuple:
        return value
    raise ConfigError(f"{path!r} expects {_type_name(annotation)}, got {value!r} ({type(value).__name__})")


def _named(name: str, bases: Sequence[str]) -> bool:
    """Whether key ``name`` (the last part of a dotted key) is one of ``bases``, bare or with a prefix."""
    return any(name == base or name.endswith(f"_{base}") for base in bases)


def check_value(path: str, value, *, finite: bool = True) -> None:
    """`ConfigError` naming ``path`` when ``value`` (or an item of a tuple) is a non-finite float (unless
    ``finite`` is False), not > 0 under a name of `POSITIVE_NAMES`, or < 0 under one of `NON_NEGATIVE_NAMES`."""
    name = path.rpartition(".")[2]
    for item in value if isinstance(value, tuple) else (value,):
        if finite and isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{path!r} must be a finite number, got {item}")
        if not isinstance(item, int | float) or isinstance(item, bool):
            continue
        if _named(name, POSITIVE_NAMES) and not item > 0:
            raise ConfigError(f"{path!r} must be > 0, got {item}")
        if _named(name, NON_NEGATIVE_NAMES) and not item >= 0:
            raise ConfigError(f"{path!r} must be >= 0, got {item}")


def check_config(config, where: str = "") -> None:
    """`check_value` on every field of the config dataclass ``config`` and of its sections."""
    for spec in dataclasses.fields(config):
        value, path = getattr(config, spec.name), f"{where}.{spec.name}" if where else spec.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value, path)
        else:
            check_value(path, value, finite=spec.metadata.get("finite", True))


def _unknown_keys_message(unknown: list[str], known: list[str], where: str) -> str:
    """Names the unknown keys, the closest known one for each, and all known keys."""
    hints = [f"{key!r} -> did you mean {close[0]!r}?" for key in unknown
             if (close := difflib.get_close_matches(key, known, n=1))]
    return (f"unknown key(s) {unknown} in config section {where!r}" + (f" ({'; '.join(hints)})" if hints else "")
            + f"; known: {known}")


def from_dict(cls, data: Mapping[str, Any], *, where: str = ""):
    """Build dataclass ``cls`` from a nested mapping; missing keys keep their defaults."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {where or cls.__name__!r} must be a table, got {type(data).__name__}")
    types_by_name = _field_types(cls)
    finite = {spec.name: spec.metadata.get("finite", True) for spec in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(types_by_name))
    if unknown:
        raise ConfigError(_unknown_keys_message(unknown, sorted(types_by_name), where or cls.__name__))
    kwargs = {}
    for name, value in data.items():
        nested = _nested_class(types_by_name[name])
        path = f"{where}.{name}" if where else name
        if isinstance(value, Mapping) and nested is None:
            raise ConfigError(f"{path!r} is not a section: it takes a value, got a table")
        if nested is not None and not isinstance(value, Mapping) and value is not None:
            raise ConfigError(f"{path!r} is a section: it takes a table, got {value!r}")
        if isinstance(value, Mapping):
            kwargs[name] = from_dict(nested, value, where=path)
        else:
            kwargs[name] = _typed(_coerce(value), types_by_name[name], path)
            check_value(path, kwargs[name], finite=finite[name])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid config section {where or cls.__name__!r}: {err}") from err


def to_dict(config) -> dict[str, Any]:
    """Plain nested dict of a config (tuples as lists), for JSON."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _parse_value(text: str):
    """A TOML literal (``3``, ``1e-4``, ``true``, ``"mask"``, ``[1, 2]``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``"section.key=value"`` set."""
    data = json.loads(json.dumps(data))
    for override in overrides:
        path, sep, text = override.partition("=")
        if not sep or not path.strip():
            raise ConfigError(f"override {override!r} is not of the form section.key=value")
        *sections, key = path.strip().split(".")
        table = data
        for section in sections:
            table = table.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"override {override!r}: {section!r} is not a section")
        table[key] = _parse_value(text.strip())
    return data


def load_config(cls, preset: str | os.PathLike | None = None, overrides: Sequence[str] = ()):
    """``cls`` from a TOML preset file (or its defaults) with overrides applied."""
    data: dict[str, Any] = {}
    if preset is not None:
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(f"config preset {str(path)!r} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config preset {str(path)!r} is not valid TOML: {err}") from err
    return from_dict(cls, apply_overrides(data, overrides))


def save_config(config, path: str | os.PathLike) -> None:
    """Write the resolved config as JSON atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def require_positive(section: str, config, names: Sequence[str]) -> None:
    """ValueError naming ``section.name`` for the first of ``names`` whose value on ``config`` is not a finite
    number > 0 (the range check of the experiments' config sections)."""
    for name in names:
        value = getattr(config, name)
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{section}.{name} must be {'> 0' if not value > 0 else 'finite'}, got {value}")


def check_seeds(seeds: Sequence[int]) -> None:
    """ValueError unless ``seeds`` lists at least one seed, each >= 0 and once (every experiment's config)."""
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must list at least one seed, each >= 0 and once, got {list(seeds)}")
