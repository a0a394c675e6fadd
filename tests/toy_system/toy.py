"""A toy system: a tiny energy model on 2-D data, built only from the contract of docs/ADDING_A_SYSTEM.md.

Model (MLP energy ``E(x) (B,)`` of points ``x (B, 2)``), step (persistent contrastive divergence: replay-buffer
starts, tied-noise Langevin chains, squared-energy penalty, Adam), and an experiment the runner runs (config,
no data files: the points are drawn from the seed, evaluation by long chains from noise). The data are a
Gaussian with mean `DATA_MEAN` and standard deviation `DATA_STD` per coordinate.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxebm.config import ConfigError, check_seeds
from jaxebm.inference import anomaly_scores
from jaxebm.runs import Experiment, SeedJob
from jaxebm.sampling import buffer, langevin
from jaxebm.train.batches import ArrayBatches
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.guard import keep_if_finite, scaled_update
from jaxebm.train.loop import LoopConfig, train_loop

DATA_MEAN = np.array([1.5, -1.0], np.float32)
DATA_STD = np.array([0.5, 1.0], np.float32)


# ------------------------------------------------------------------------------------------------- model

class ToyEnergy(nn.Module):
    """``E(x) (B,)`` of points ``x (B, 2)``: a two-layer softplus MLP plus a weak confining term."""

    hidden: int = 32

    @nn.compact
    def __call__(self, x):
        h = nn.softplus(nn.Dense(self.hidden)(x))
        h = nn.softplus(nn.Dense(self.hidden)(h))
        return nn.Dense(1)(h)[:, 0] + 0.01 * jnp.sum(jnp.square(x), axis=-1)


# ------------------------------------------------------------------------------------------------- step

@dataclass(frozen=True)
class CDSection:
    """lr: Adam step. batch_size: points per step (= chains). num_chain_steps, step_size: Langevin chain
    (tied noise sqrt(2 step_size): exact in the small-step limit). buffer_size, restart_prob: persistent
    chains. alpha: weight of the squared-energy penalty."""

    lr: float = 1e-2
    batch_size: int = 128
    num_chain_steps: int = 10
    step_size: float = 0.05
    buffer_size: int = 1024
    restart_prob: float = 0.05
    alpha: float = 0.01


@flax.struct.dataclass
class ToyState:
    """The driver's state protocol (step, params, opt_state, key, lr_scale) plus the replay buffer."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    key: jax.Array
    lr_scale: jax.Array
    buffer: buffer.BufferState


def noise(key, num: int) -> jax.Array:
    """Chain starts ``(num, 2)``: uniform on [-4, 4]^2."""
    return jax.random.uniform(key, (num, 2), minval=-4.0, maxval=4.0)


def create_state(seed: int, model: ToyEnergy, cd: CDSection) -> ToyState:
    key_params, key_buffer, key = jax.random.split(jax.random.key(seed), 3)
    params = model.init(key_params, jnp.zeros((1, 2)))
    return ToyState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optax.adam(cd.lr).init(params), key=key,
                    lr_scale=jnp.ones((), jnp.float32), buffer=buffer.init(key_buffer, noise, cd.buffer_size))


def sample_chains(key, model: ToyEnergy, params, starts: jax.Array, cd: CDSection, num_steps: int) -> jax.Array:
    """Langevin chains of ``exp(-E)`` from ``starts (B, 2)``; stop-gradient parameters."""
    frozen = jax.lax.stop_gradient(params)
    chain_config = langevin.LangevinConfig(cd.step_size, None)
    return langevin.run_chain(key, starts, lambda x: model.apply(frozen, x), chain_config, num_steps)[0]


def make_step(model: ToyEnergy, cd: CDSection):
    """Jitted ``step(state, x (batch_size, 2)) -> (state, metrics)`` of persistent CD."""
    optimizer = optax.adam(cd.lr)

    def loss_fn(params, x_pos, x_neg):
        e_pos, e_neg = model.apply(params, x_pos), model.apply(params, x_neg)
        penalty = jnp.mean(jnp.square(e_pos)) + jnp.mean(jnp.square(e_neg))
        return jnp.mean(e_pos) - jnp.mean(e_neg) + cd.alpha * penalty, (jnp.mean(e_pos), jnp.mean(e_neg))

    def step(state: ToyState, x):
        key, key_buffer, key_chain = jax.random.split(state.key, 3)
        starts, slots = buffer.sample(key_buffer, state.buffer, cd.batch_size, noise, cd.restart_prob)
        x_neg = sample_chains(key_chain, model, state.params, starts, cd, cd.num_chain_steps)
        (loss, (e_pos, e_neg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, x_neg)
        params, opt_state = scaled_update(optimizer, grads, state.opt_state, state.params, state.lr_scale)
        (params, opt_state), is_finite, _ = keep_if_finite(loss, grads, (params, opt_state),
                                                           (state.params, state.opt_state))
        new_buffer = buffer.push(state.buffer, x_neg, slots)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, key=key, buffer=new_buffer)
        return new_state, {"loss": loss, "e_pos": e_pos, "e_neg": e_neg, "gap": e_neg - e_pos,
                           "is_finite": is_finite, "lr_scale": state.lr_scale}

    return jax.jit(step, donate_argnums=0)


# ------------------------------------------------------------------------------------------------- experiment

@dataclass(frozen=True)
class RunSection:
    num_steps: int = 400
    log_every: int = 50
    checkpoint_every: int = 100
    num_train: int = 4096
    num_samples: int = 2048
    sample_chain_steps: int = 500


@dataclass(frozen=True)
class ToyConfig:
    name: str = "smoke"
    seeds: tuple[int, ...] = (0,)
    model: int = 32  # hidden units
    cd: CDSection = field(default_factory=CDSection)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self):
        check_seeds(self.seeds)


def validate(config: ToyConfig) -> None:
    if config.cd.batch_size > config.run.num_train:
        raise ConfigError(f"cd.batch_size ({config.cd.batch_size}) exceeds run.num_train ({config.run.num_train})")


def training_points(seed: int, num: int) -> np.ndarray:
    """``(num, 2)`` float32 data points of seed ``seed``."""
    return (DATA_MEAN + DATA_STD * np.random.default_rng(seed).standard_normal((num, 2))).astype(np.float32)


def train_seed(config: ToyConfig, job: SeedJob):
    model = ToyEnergy(config.model)
    batches = ArrayBatches((training_points(job.seed, config.run.num_train),), config.cd.batch_size, seed=job.seed)
    loop = LoopConfig(num_steps=config.run.num_steps, log_every=config.run.log_every,
                      checkpoint_every=config.run.checkpoint_every, progress=job.progress)
    state = train_loop(make_step(model, config.cd), create_state(job.seed, model, config.cd), batches,
                       job.directory, loop, run_config=config)
    return model, state.params


def load_seed(config: ToyConfig, job: SeedJob):
    model = ToyEnergy(config.model)
    with Checkpointer(job.directory / "checkpoints") as ckpt:
        state, _ = ckpt.restore(create_state(job.seed, model, config.cd))
    return model, state.params


def evaluate_seed(config: ToyConfig, job: SeedJob, trained) -> dict:
    """Mean and std of points from long chains started in noise, and the score API on data vs far points."""
    model, params = trained
    key_start, key_chain = jax.random.split(jax.random.key(1000 + job.seed))
    starts = noise(key_start, config.run.num_samples)
    points = np.asarray(sample_chains(key_chain, model, params, starts, config.cd, config.run.sample_chain_steps))
    outputs_fn = lambda p, x, mask: model.apply(p, x)  # noqa: E731
    data = training_points(10_000 + job.seed, 256)
    energy_data = anomaly_scores(outputs_fn, params, data)["energy"]
    energy_far = anomaly_scores(outputs_fn, params, data + 6.0)["energy"]
    results = {"seed": job.seed, "sample_mean": points.mean(axis=0).tolist(), "sample_std": points.std(axis=0).tolist(),
               "far_more_anomalous": float(np.mean(energy_far > np.median(energy_data)))}
    (job.directory / "report.md").write_text(json.dumps(results, indent=1) + "\n")
    return results


def write_summary(out_dir: Path, config: ToyConfig, per_seed: list[dict], **_) -> dict:
    summary = {key: np.mean([r[key] for r in per_seed], axis=0).tolist()
               for key in ("sample_mean", "sample_std", "far_more_anomalous")}
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def sample(config, trained, num_jets, seed, progress=True):
    raise ConfigError("the toy system draws points, not jets")


EXPERIMENT = Experiment(
    name="toy", config_class=ToyConfig, presets=Path(__file__).parent / "configs", validate=validate,
    data_files=lambda config: {}, describe_data=lambda out_dir, config, paths: None, train_seed=train_seed,
    load_seed=load_seed, evaluate_seed=evaluate_seed, write_summary=write_summary, write_report=write_summary,
    sample=sample)
