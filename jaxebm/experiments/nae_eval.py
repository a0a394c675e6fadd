"""Evaluation of the NAE experiment (`jaxebm.experiments.nae`): the compiled functions of a model, energies
in batches, the plain-AE summary after phase 1, the validation loss that selects the checkpoint, the latent
landscape on the sphere, and the tagging numbers of a trained seed (`evaluate_seed`). Reports
(`jaxebm.experiments.nae_report`) draw what this module computes."""
from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.experiments.nae_data import load_images
from jaxebm.metrics.tagging import tagging_metrics
from jaxebm.models.nae_autoencoder import ConvAE
from jaxebm.runs import SeedJob
from jaxebm.runs.records import atomic_write_bytes, git_commit
from jaxebm.train import nae
from jaxebm.train.monitor import read_metrics

if TYPE_CHECKING:
    from jaxebm.experiments.nae import ExperimentConfig, Trained

__all__ = ["BEST_METRIC", "MAP_SHAPE", "batched_energy", "evaluate_seed", "image_energy_fn", "in_batches", "jitted",
           "figure_inputs", "latent_map", "latent_resultant_length", "make_validation_fn", "phase1_summary", "sphere_frame"]

BEST_METRIC = "val_abs_loss"


MAP_SHAPE = (36, 72)  # latitude x longitude cells of the equirectangular map


@functools.lru_cache(maxsize=8)
def jitted(model, config: nae.NAEConfig) -> SimpleNamespace:
    """Jitted functions of one model and NAE config, compiled once per process: ``energy(variables, x)``,
    ``encode``, ``reconstruct``, ``latent_energy(variables, z)``, ``negatives(key, state)`` (the
    training chains' ``NegativeSamples``) and ``paths(key, state, z_start)``."""
    return SimpleNamespace(
        energy=jax.jit(lambda v, x: model.apply(v, x, method="energy")),
        encode=jax.jit(lambda v, x: model.apply(v, x, method="encode")),
        reconstruct=jax.jit(lambda v, x: model.apply(v, x)),
        latent_energy=jax.jit(lambda v, z: model.apply(v, z, method="latent_energy")),
        negatives=jax.jit(lambda key, state: nae.sample_negatives(key, model, config, state)[0]),
        paths=jax.jit(lambda key, state, z: nae.latent_chain_paths(key, model, config, state, z)))


def in_batches(fn, variables, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """``fn(variables, x)`` over ``x`` in batches of ``batch_size`` (the last one zero-padded, so one
    compiled shape serves every call)."""
    out = []
    for start in range(0, len(x), batch_size):
        chunk = np.asarray(x[start:start + batch_size])
        padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(fn(variables, padded))[: len(chunk)])
    return np.concatenate(out)


def sphere_frame(latents: np.ndarray) -> np.ndarray:
    """Orthonormal frame ``(3, 3)`` (rows e1, e2, e3) whose e1 is the mean direction of ``latents (n, 3)``:
    the map's centre (longitude 0, latitude 0) sits where most jets are, as in the paper's Fig. 2."""
    centre = np.mean(latents, axis=0)
    centre = centre / max(np.linalg.norm(centre), 1e-12) if np.linalg.norm(centre) > 1e-6 else np.eye(3)[0]
    helper = np.eye(3)[int(np.argmin(np.abs(centre)))]
    e2 = np.cross(centre, helper)
    e2 /= np.linalg.norm(e2)
    return np.stack([centre, e2, np.cross(centre, e2)])


def _grid_points(frame: np.ndarray) -> np.ndarray:
    """Cell centres of the map as unit vectors ``(num_lat * num_lon, 3)``."""
    num_lat, num_lon = MAP_SHAPE
    lat = (np.arange(num_lat) + 0.5) / num_lat * np.pi - np.pi / 2
    lon = (np.arange(num_lon) + 0.5) / num_lon * 2 * np.pi - np.pi
    lon, lat = np.meshgrid(lon, lat)
    local = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1).reshape(-1, 3)
    return (local @ frame).astype(np.float32)


def latent_map(model, config: nae.NAEConfig, state: nae.NAEState, background_latents: np.ndarray, *, seed: int,
               num_chains: int = 12) -> dict[str, np.ndarray]:
    """The latent landscape of ``state`` (D_z = 3 only; ``{}`` otherwise): ``map_frame (3, 3)``,
    ``map_energy`` (H(z) on the `MAP_SHAPE` grid) and ``map_paths (z_num_steps + 1, num_chains, 3)``,
    latent chains from buffer entries with the training kernel."""
    if model.config.latent_dim != 3:
        return {}
    frame = sphere_frame(background_latents)
    fns = jitted(model, config)
    values = in_batches(fns.latent_energy, {"params": state.params, **state.spectral}, _grid_points(frame))
    starts = jnp.asarray(np.asarray(state.buffer.samples)[:num_chains])
    paths = fns.paths(jax.random.key(seed + 777), state, starts)
    return {"map_frame": frame, "map_energy": values.reshape(MAP_SHAPE), "map_paths": np.asarray(paths)}


@functools.lru_cache(maxsize=4)
def image_energy_fn(model: ConvAE):
    """``outputs_fn(variables, images (B, P, P), None) -> E (B,)`` for `anomaly_scores` (one function object
    per model, so one compilation)."""
    return lambda variables, images, mask: model.apply(variables, images, method="energy")


def batched_energy(model: ConvAE, config: nae.NAEConfig, state: nae.NAEState, images: np.ndarray,
                   batch_size: int = 512) -> np.ndarray:
    """Energies ``(n,)`` of ``images (n, P, P)`` under ``state``, in batches (one compiled shape)."""
    return in_batches(jitted(model, config).energy, {"params": state.params, **state.spectral}, images, batch_size)


def latent_resultant_length(latents: np.ndarray) -> float:
    """Mean resultant length ``R = |mean z|`` of unit latent vectors ``(n, D_z)``: 1 when all coincide,
    ~0 when they spread over the sphere."""
    return float(np.linalg.norm(np.mean(np.asarray(latents, np.float64), axis=0)))


def phase1_summary(model: ConvAE, config: ExperimentConfig, state: nae.NAEState, job: SeedJob,
                    train: np.ndarray) -> dict:
    """Plain-AE results at the end of phase 1: validation and test energies, test latents, a few
    reconstructions (averaged in the plots), and the collapse-guard numbers of the validation jets:
    ``latent_resultant_length`` and ``mse_over_mean_image_mse`` (their mean MSE over the mean MSE to the
    average training image)."""
    val = load_images(job.data["background"], config.data, "val")
    tests = {role: load_images(job.data[role], config.data, "test") for role in ("background", "signal")}
    energies = {role: batched_energy(model, config.nae, state, x) for role, x in tests.items()}
    variables = {"params": state.params, **state.spectral}
    num = config.run.num_plot_images
    fns = jitted(model, config.nae)
    latents = {role: in_batches(fns.encode, variables, x) for role, x in tests.items()}
    recon = {role: in_batches(fns.reconstruct, variables, x[:num]).mean(0) for role, x in tests.items()}
    val_energy = float(np.mean(batched_energy(model, config.nae, state, val)))
    mean_image_mse = float(np.mean(np.square(val - train.mean(axis=0))))
    return {"val_energy": np.float64(val_energy), "step": np.int64(int(state.step)),
            "latent_resultant_length": np.float64(latent_resultant_length(in_batches(fns.encode, variables, val))),
            "mse_over_mean_image_mse": np.float64(val_energy / mean_image_mse),
            **{f"energy_{r}": e for r, e in energies.items()}, **{f"latent_{r}": z for r, z in latents.items()},
            **{f"recon_mean_{r}": m for r, m in recon.items()},
            **latent_map(model, config.nae, state, latents["background"], seed=job.seed)}


def make_validation_fn(model: ConvAE, config: ExperimentConfig, val_images: np.ndarray, select_from: int):
    """``eval_fn(state)``: the NAE loss on validation positives against one batch of fresh negatives,
    ``val_loss = mean E(val) - mean E(x-)`` and ``val_e_pos``, ``val_e_neg``; from step ``select_from``
    on also ``val_abs_loss = |val_loss|`` (what ranks the selected checkpoint)."""
    sample = jitted(model, config.nae).negatives

    def eval_fn(state) -> dict[str, float]:
        key = jax.random.fold_in(jax.random.key(4242), int(state.step))
        negatives = np.asarray(sample(key, state).x_end)
        e_pos = float(np.mean(batched_energy(model, config.nae, state, val_images)))
        e_neg = float(np.mean(batched_energy(model, config.nae, state, negatives)))
        metrics = {"val_e_pos": e_pos, "val_e_neg": e_neg, "val_loss": e_pos - e_neg}
        if int(state.step) >= select_from:
            metrics[BEST_METRIC] = abs(e_pos - e_neg)
        return metrics

    return eval_fn


def _tagging(background: np.ndarray, signal: np.ndarray) -> dict[str, float]:
    labels = np.r_[np.zeros(len(background)), np.ones(len(signal))]
    metrics = tagging_metrics(labels, np.r_[background, signal], signal_efficiencies=(0.2,))
    return {"auc": metrics["auc"], "inv_eps_b_0.2": metrics["rejection_at_0.2"]}


def evaluate_seed(config: ExperimentConfig, job: SeedJob, trained: Trained) -> tuple[dict, dict, dict]:
    """AE (phase-1 end) and NAE (selected checkpoint) tagging on the test sets (``scores.npz`` written):
    ``(results, test images by role, NAE energies by role)``."""
    tests = {role: load_images(job.data[role], config.data, "test") for role in ("background", "signal")}
    energies = {role: trained.energy(x) for role, x in tests.items()}
    phase1 = trained.phase1
    results = {
        "seed": job.seed, "direction": config.data.direction, "pt_power": config.data.pt_power,
        "pt_power_norm": config.data.pt_power_norm, "intensity_scale": trained.model.config.intensity_scale,
        "git_commit": git_commit(),
        "ae": {**_tagging(phase1["energy_background"], phase1["energy_signal"]),
               "latent_resultant_length": float(phase1["latent_resultant_length"]),
               "mse_over_mean_image_mse": float(phase1["mse_over_mean_image_mse"])},
        "nae": _tagging(energies["background"], energies["signal"]),
        "selected_step": trained.best_step, "ae_steps": config.run.ae_steps, "num_steps": config.run.num_steps,
        "mean_energy": {"ae": {r: float(np.mean(phase1[f"energy_{r}"])) for r in ("background", "signal")},
                        "nae": {r: float(np.mean(e)) for r, e in energies.items()}},
    }
    atomic_write_bytes(job.directory / "scores.npz", lambda handle: np.savez(
        handle, **{f"nae_{r}": e for r, e in energies.items()},
        **{f"ae_{r}": phase1[f"energy_{r}"] for r in ("background", "signal")}))
    results["timing"] = _timing(job.directory)
    return results, tests, energies


def figure_inputs(config: ExperimentConfig, trained: Trained, tests: dict[str, np.ndarray], seed: int) -> dict:
    """What a seed's figures show beyond the scores: ``latents`` (the NAE's test latents by role),
    ``reconstructions`` (of the first ``run.num_plot_images`` test images by role), ``negatives`` (one batch
    of training chains' images) and, for D_z = 3, ``map`` (`latent_map` of the selected state)."""
    model, state = trained.model, trained.state
    variables = {"params": state.params, **state.spectral}
    fns = jitted(model, trained.nae_config)
    num = config.run.num_plot_images
    figures = {"latents": {r: in_batches(fns.encode, variables, x) for r, x in tests.items()}}
    if model.config.latent_dim == 3:
        figures["map"] = latent_map(model, trained.nae_config, state, figures["latents"]["background"], seed=seed)
    figures["negatives"] = np.asarray(fns.negatives(jax.random.key(seed + 99), state).x_end)
    figures["reconstructions"] = {r: in_batches(fns.reconstruct, variables, x[:num]) for r, x in tests.items()}
    return figures


def _timing(seed_dir: Path) -> dict[str, float]:
    """Training wall time (s) per phase from ``metrics.jsonl`` (the loop's ``time`` column, reset at each start)."""
    path = seed_dir / "metrics.jsonl"
    rows = read_metrics(path) if path.exists() else []
    total, last = 0.0, 0.0
    for row in rows:
        if "time" not in row:
            continue
        if row["time"] < last:
            total += last
        last = row["time"]
    return {"train_seconds": round(total + last, 1)}
