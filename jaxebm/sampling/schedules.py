"""Step-size and noise schedules: pure functions of the step index, usable inside `lax.scan`.

A schedule is a frozen (hashable) dataclass with `__call__(t) -> scalar`, so it can sit in a sampler
config that `jax.jit` treats as static. `t` is the 0-based step index (a Python int or a traced int32
scalar); the value is a float32 scalar. Plain floats are accepted wherever a schedule is: `value_at`
turns them into constants.

    step_size = StepDecay(0.1, factor=0.8, every=40)   # step_size(80) == 0.1 * 0.8**2
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

import jax.numpy as jnp

__all__ = ["Schedule", "Constant", "StepDecay", "InverseTime", "Linear", "ScheduleLike", "value_at"]


class Schedule(Protocol):
    """Anything with `__call__(t) -> scalar`; should be hashable to live in a static config."""

    def __call__(self, t) -> jnp.ndarray: ...


@dataclass(frozen=True)
class Constant:
    """`value` at every step."""

    value: float

    def __call__(self, t):
        return jnp.full((), self.value, jnp.float32)


@dataclass(frozen=True)
class StepDecay:
    """`init_value * factor ** (t // every)`: multiply by `factor` every `every` steps."""

    init_value: float
    factor: float
    every: int

    def __call__(self, t):
        num_decays = jnp.asarray(t, jnp.int32) // self.every
        return self.init_value * jnp.float32(self.factor) ** num_decays.astype(jnp.float32)


@dataclass(frozen=True)
class InverseTime:
    """`init_value / (1 + rate * t)` (annealing as 1/(1+t) for rate 1)."""

    init_value: float
    rate: float = 1.0

    def __call__(self, t):
        return self.init_value / (1.0 + self.rate * jnp.asarray(t, jnp.float32))


@dataclass(frozen=True)
class Linear:
    """Linear from `init_value` at t = 0 to `end_value` at t = `num_steps`, then constant."""

    init_value: float
    end_value: float
    num_steps: int

    def __call__(self, t):
        frac = jnp.clip(jnp.asarray(t, jnp.float32) / self.num_steps, 0.0, 1.0)
        return self.init_value + frac * (self.end_value - self.init_value)


ScheduleLike = Union[float, Schedule]


def value_at(schedule: ScheduleLike, t) -> jnp.ndarray:
    """The schedule's value at step `t`; a float is a constant schedule. Returns a float32 scalar."""
    if callable(schedule):
        return jnp.asarray(schedule(t), jnp.float32)
    return jnp.asarray(schedule, jnp.float32)
