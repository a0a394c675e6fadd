"""Config loading: presets, overrides and the errors that name what is wrong."""
import json
import re
from dataclasses import dataclass, field

import pytest

from jaxebm.config import ConfigError, check_config, check_value, from_dict, load_config, save_config, to_dict


@dataclass(frozen=True)
class Inner:
    width: int = 8
    sizes: tuple[int, ...] = (4, 4)
    name: str = "relu"


@dataclass(frozen=True)
class Outer:
    seeds: tuple[int, ...] = (0,)
    lr: float = 1e-3
    inner: Inner = field(default_factory=Inner)


def test_preset_and_overrides_build_nested_frozen_config(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('seeds = [1, 2, 3]\n[inner]\nwidth = 16\nsizes = [32, 32]\n')
    config = load_config(Outer, preset, ["lr=0.5", "inner.name=swish", 'inner.sizes=[1, 2]'])
    assert config == Outer(seeds=(1, 2, 3), lr=0.5, inner=Inner(width=16, sizes=(1, 2), name="swish"))
    hash(config)  # hashable: usable as a static jit argument


def test_saved_config_reloads_identically(tmp_path):
    config = Outer(seeds=(4,), inner=Inner(width=3))
    save_config(config, tmp_path / "run" / "config.json")
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == to_dict(config)
    assert not list((tmp_path / "run").glob("*.tmp"))


@pytest.mark.parametrize("overrides, message", [
    (["inner.depth=3"], "unknown key(s) ['depth'] in config section 'inner'"),
    (["nonsense"], "not of the form section.key=value"),
    (["lr.x=1"], "'lr' is not a section"),
    (["inner=3"], "'inner' is a section: it takes a table, got 3"),
])
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(Outer, None, overrides)


def test_missing_and_invalid_presets(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [1,\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(Outer, bad)


@pytest.mark.parametrize(("override", "message"), [
    ("inner.width=2.5", "'inner.width' expects int, got 2.5 (float)"),
    ("inner.width=true", "'inner.width' expects int, got True (bool)"),
    ("inner.sizes=[1, 2.5]", "'inner.sizes[1]' expects int, got 2.5 (float)"),
    ("inner.sizes=4", "'inner.sizes' expects tuple[int, ...], got 4 (int)"),
    ("lr=\"fast\"", "'lr' expects float, got 'fast' (str)"),
])
def test_values_of_the_wrong_type_name_the_key_and_the_type(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(Outer, None, [override])


def test_ints_widen_to_float_and_unknown_keys_get_the_closest_suggestion():
    assert load_config(Outer, None, ["lr=1"]).lr == 1.0 and isinstance(load_config(Outer, None, ["lr=1"]).lr, float)
    with pytest.raises(ConfigError, match=re.escape("('widht' -> did you mean 'width'?); known: ['name', 'sizes'")):
        load_config(Outer, None, ["inner.widht=3"])


@dataclass(frozen=True)
class Sampler:
    z_step_size: float = 0.1
    batch_size: int = 4
    cut: float = field(default=float("inf"), metadata={"finite": False})  # declared: may be infinite


@pytest.mark.parametrize(("override", "message"), [
    ("lr=inf", "'lr' must be a finite number, got inf"),
    ("lr=nan", "'lr' must be a finite number, got nan"),
    ("lr=0", "'lr' must be > 0, got 0"),
])
def test_one_range_checker_refuses_non_finite_values_and_names_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(Outer, None, [override])


def test_range_rules_follow_the_key_name_and_a_field_may_allow_infinity():
    assert from_dict(Sampler, {"cut": float("inf")}).cut == float("inf")
    check_config(Sampler())
    with pytest.raises(ConfigError, match=re.escape("'z_step_size' must be >= 0, got -1.0")):
        from_dict(Sampler, {"z_step_size": -1.0})
    with pytest.raises(ConfigError, match=re.escape("'sampler.batch_size' must be > 0, got 0")):
        check_config(Sampler(batch_size=0), "sampler")
    with pytest.raises(ConfigError, match=re.escape("'inner.width' must be a finite number")):
        check_value("inner.width", float("nan"))
