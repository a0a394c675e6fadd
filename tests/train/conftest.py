"""Shared tiny CD setup for the train tests: one MLP energy, one compiled step (compiles once)."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.models import MLPConfig, MLPEnergy
from jaxebm.train import CDConfig, create_train_state, make_cd_step, make_noise_fn

NUM_CONSTITUENTS, NUM_FEATURES, BATCH = 4, 3, 16


class TinySetup(NamedTuple):
    model: MLPEnergy
    config: CDConfig
    noise_fn: object
    step: object

    def new_state(self, seed: int = 0):
        x, mask = data_batch(0)
        return create_train_state(jax.random.key(seed), self.model, self.config, x, mask, self.noise_fn)


def data_batch(index: int, batch_size: int = BATCH):
    """Deterministic toy 'jets' for batch ``index``: features (B, N, F) near (1, 0.5, -0.5), all real."""
    rng = np.random.default_rng(index)
    x = np.array([1.0, 0.5, -0.5], np.float32) + 0.2 * rng.standard_normal(
        (batch_size, NUM_CONSTITUENTS, NUM_FEATURES)).astype(np.float32)
    return jnp.asarray(x), jnp.ones((batch_size, NUM_CONSTITUENTS), bool)


@pytest.fixture(scope="session")
def tiny():
    model = MLPEnergy(MLPConfig(hidden_sizes=(16, 16)))
    config = CDConfig(batch_size=BATCH, buffer_size=64, num_langevin_steps=4, steps_per_epoch=5, lr=1e-3,
                      ema_decay=0.9)
    noise_fn = make_noise_fn((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), NUM_CONSTITUENTS)
    return TinySetup(model, config, noise_fn, make_cd_step(model, config, noise_fn))
