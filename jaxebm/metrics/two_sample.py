"""Classifier two-sample test: can a small MLP tell real from generated jets?

A Flax linen MLP (ReLU hidden layers, one logit) is trained with Adam on binary cross-entropy
to output ``D(x) = p(real | x)``. Inputs are any per-event features (observables, or
constituents flattened to ``(n, N * 3)``), standardised with the training split's mean and
std. The held-out AUC (real = positive class) is the test statistic: ~0.5 when the samples
are indistinguishable, 1 when fully separated.

Per-event weights ``w(x) = D / (1 - D) * n_gen_train / n_real_train`` (the classifier's
likelihood-ratio estimate, corrected for unequal class sizes) reweight generated events
towards the real distribution; they are returned for every generated event (events used in
training get optimistic weights).

All randomness (split, initialisation, shuffling) derives from ``jax.random.key(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxebm.metrics.result import MetricInputError
from jaxebm.metrics.tagging import auc

__all__ = ["MLPClassifier", "TwoSampleResult", "classifier_two_sample_test"]


class MLPClassifier(nn.Module):
    """``(batch, d) -> (batch,)`` logits; ReLU hidden layers of the given widths."""

    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(1)(x)[..., 0]


class TwoSampleResult(NamedTuple):
    """Outcome of the test.

    Attributes:
        auc: held-out AUC, real = positive class.
        test_labels: ``(n_test,)`` 1 for real, 0 for generated.
        test_scores: ``(n_test,)`` D(x) = p(real | x) on the held-out events.
        gen_weights: ``(n_gen,)`` ``D / (1 - D)`` times the class-size ratio, per generated event.
        settings: the settings used (hidden widths, epochs, batch size, split sizes, seed).
    """

    auc: float
    test_labels: np.ndarray
    test_scores: np.ndarray
    gen_weights: np.ndarray
    settings: dict


def _flatten_features(name: str, values) -> np.ndarray:
    values = np.asarray(values, np.float32)
    if values.ndim < 2 or len(values) < 2:
        raise MetricInputError(
            f"{name}: expected (n >= 2, ...) per-event features, got {values.shape}"
        )
    values = values.reshape(len(values), -1)
    if not np.all(np.isfinite(values)):
        raise MetricInputError(f"{name}: contains non-finite values")
    return values


def _make_train_step(model: MLPClassifier, optimizer: optax.GradientTransformation):
    def loss_fn(params, x, y):
        return optax.sigmoid_binary_cross_entropy(model.apply(params, x), y).mean()

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def _train(model, x, y, key, *, num_epochs: int, batch_size: int, learning_rate: float):
    """Adam on BCE over shuffled minibatches (the last partial batch of each epoch is dropped)."""
    init_key, shuffle_key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1, x.shape[1]), jnp.float32))
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    train_step = _make_train_step(model, optimizer)
    num_steps = len(x) // batch_size
    for epoch_key in jax.random.split(shuffle_key, num_epochs):
        order = np.asarray(jax.random.permutation(epoch_key, len(x)))
        for step in range(num_steps):
            batch = order[step * batch_size : (step + 1) * batch_size]
            params, opt_state, _ = train_step(params, opt_state, x[batch], y[batch])
    return params


def classifier_two_sample_test(
    real,
    gen,
    *,
    hidden: Sequence[int] = (64, 64),
    num_epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> TwoSampleResult:
    """Train a real-vs-generated MLP and report its held-out AUC and per-event weights.

    Args:
        real: ``(n_real, ...)`` per-event features (flattened to ``(n_real, d)``).
        gen: ``(n_gen, ...)`` the same features of generated events.
        hidden: MLP hidden widths.
        num_epochs, batch_size, learning_rate: Adam training settings (batch size is capped
            at the training-set size).
        test_fraction: share of each sample held out for the AUC.
        seed: integer seed of ``jax.random.key``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> result = classifier_two_sample_test(rng.normal(size=(500, 2)),
        ...                                     rng.normal(3.0, 1.0, size=(500, 2)), num_epochs=5)
        >>> result.auc > 0.95
        True
    """
    real, gen = _flatten_features("real", real), _flatten_features("gen", gen)
    if real.shape[1] != gen.shape[1]:
        raise MetricInputError(f"real and gen feature sizes differ: {real.shape}, {gen.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise MetricInputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    split_key, train_key = jax.random.split(jax.random.key(seed))
    real_key, gen_key = jax.random.split(split_key)
    real_order = np.asarray(jax.random.permutation(real_key, len(real)))
    gen_order = np.asarray(jax.random.permutation(gen_key, len(gen)))
    num_real_test = max(1, round(test_fraction * len(real)))
    num_gen_test = max(1, round(test_fraction * len(gen)))
    real_test, real_train = real[real_order[:num_real_test]], real[real_order[num_real_test:]]
    gen_test, gen_train = gen[gen_order[:num_gen_test]], gen[gen_order[num_gen_test:]]

    x_train = np.concatenate([real_train, gen_train])
    y_train = np.r_[np.ones(len(real_train)), np.zeros(len(gen_train))].astype(np.float32)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0

    def standardise(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype(np.float32)

    model = MLPClassifier(tuple(hidden))
    used_batch_size = min(batch_size, len(x_train))
    params = _train(
        model,
        standardise(x_train),
        y_train,
        train_key,
        num_epochs=num_epochs,
        batch_size=used_batch_size,
        learning_rate=learning_rate,
    )
    predict = jax.jit(model.apply)
    x_test = standardise(np.concatenate([real_test, gen_test]))
    test_labels = np.r_[np.ones(len(real_test)), np.zeros(len(gen_test))]
    test_scores = np.asarray(jax.nn.sigmoid(predict(params, x_test)), np.float64)
    gen_logits = np.asarray(predict(params, standardise(gen)), np.float64)
    gen_weights = np.exp(gen_logits) * len(gen_train) / len(real_train)
    settings = {
        "hidden": list(hidden),
        "num_epochs": num_epochs,
        "batch_size": used_batch_size,
        "learning_rate": learning_rate,
        "num_train": [len(real_train), len(gen_train)],
        "num_test": [len(real_test), len(gen_test)],
        "seed": seed,
    }
    return TwoSampleResult(
        auc(test_labels, test_scores), test_labels, test_scores, gen_weights, settings
    )
