"""Diagnostic on seed 0 of a JetNet-benchmark run: is ConVAE+NF limited by its latent flow or by the decoder?

Decodes (a) the encoder means of the test jets (reconstruction), (b) samples of the run's flow (restored),
(c) samples of a flow trained 100 epochs (the paper's flow epochs) on the same latents, (d) N(0, 1) latents;
each compared with the test jets (W1M x1e-3 and the fraction of jets above the largest test relative mass).
Prints the numbers as JSON (``experiments/results/jetnet/flow_ablation.json`` is this output for the
first CPU run, whose flows trained 15 epochs).

    python -m experiments.jetnet_flow_ablation runs/jetnet/cpu_flow15 > flow_ablation.json   # a run directory
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from jaxebm import experiments
from jaxebm.experiments import jetnet_bench as jb
from jaxebm.metrics.jetnet import jetnet_features, w1m
from jaxebm.models.jet_convae import ConVAE, MinMaxScaler, jets_to_momenta, momenta_to_constituents
from jaxebm.models.flows import RealNVP, RealNVPConfig
from jaxebm.runs import SeedJob
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.vae import StageConfig, encode_means, fit_network, history, init_flow_state, init_vae_state, make_flow_step

NUM_CONSTITUENTS = 30
NUM_JETS = 900  # generated jets per score


def scorer(test) -> Callable[[np.ndarray], dict]:
    """``momenta (n, 3 N) -> {"w1m_x1e3", "above_test_max"}`` against the test jets ``test`` (a `JetSample`)."""
    real = jetnet_features(test.constituents.astype(np.float64), test.mask)

    def score(momenta) -> dict:
        p4, mask = momenta_to_constituents(np.asarray(momenta))
        gen = jetnet_features(p4, mask)
        return {"w1m_x1e3": 1e3 * w1m(real, gen, seed=0).value,
                "above_test_max": float(np.mean(gen.mass > real.mass.max()))}

    return score


def restore_convae(seed_dir: Path, config) -> tuple[ConVAE, dict]:
    """The run's ConVAE and its trained parameters (``convae_rec`` checkpoints)."""
    vae = ConVAE(config.convae_rec.model)
    state = init_vae_state(jax.random.key(0), vae, 1e-3)
    with Checkpointer(seed_dir / "convae_rec" / "checkpoints") as ckpt:
        state, _ = ckpt.restore(state)
    return vae, state.params


def flow_for(config, num_latents: int) -> RealNVP:
    """The run's latent flow architecture on ``num_latents`` latent dimensions."""
    return RealNVP(RealNVPConfig(num_latents, config.latent_flow.num_couplings, config.latent_flow.hidden_sizes))


def restore_flow_params(seed_dir: Path, flow: RealNVP) -> dict:
    """The run's trained latent flow parameters (``latent_flow`` checkpoints)."""
    state = init_flow_state(jax.random.key(1), flow, 1e-3)
    with Checkpointer(seed_dir / "latent_flow" / "checkpoints") as ckpt:
        state, _ = ckpt.restore(state)
    return state.params


def ablation(run: Path) -> dict:
    """Every number of the diagnostic for seed 0 of ``run`` (see the module docstring)."""
    seed_dir = run / "seed_0"
    config = experiments.load_recorded("jetnet_bench", run)
    splits = jb._splits(config, SeedJob(0, seed_dir, {"sample": jb._paths(config.data)[0]}, False))
    train_m = jets_to_momenta(splits["train"].constituents, splits["train"].mask, NUM_CONSTITUENTS)
    test_m = jets_to_momenta(splits["test"].constituents, splits["test"].mask, NUM_CONSTITUENTS)
    scaler = MinMaxScaler.fit(train_m)
    score = scorer(splits["test"])
    vae, params = restore_convae(seed_dir, config)
    decode = jax.jit(lambda z: scaler.invert(vae.apply(params, z, method=ConVAE.decode)))
    means = encode_means(vae, params, scaler.apply(train_m))
    out = {"latent_mean_std": [float(means.mean()), float(means.std())],
           "reconstruction": score(decode(encode_means(vae, params, scaler.apply(test_m))))}
    flow = flow_for(config, means.shape[1])
    sample = jax.jit(lambda key, p: flow.apply(p, key, NUM_JETS, method=RealNVP.sample))
    run_flow = restore_flow_params(seed_dir, flow)
    out["flow_15_epochs"] = score(decode(sample(jax.random.key(5), run_flow)))
    out["flow_15_sample_std"] = float(np.asarray(sample(jax.random.key(5), run_flow)).std())
    step = make_flow_step(flow, config.latent_flow.stage.learning_rate)
    fresh = init_flow_state(jax.random.key(2), flow, config.latent_flow.stage.learning_rate)
    tic = time.process_time()
    with tempfile.TemporaryDirectory() as flow_dir:
        fresh = fit_network(step, fresh, (np.asarray(means, np.float32),), flow_dir,
                            StageConfig(config.latent_flow.stage.learning_rate, 100, 100),
                            order_seed=lambda epoch: (7, epoch))
        epochs = history(flow_dir)
    out["flow_100_epochs_cpu_s"] = time.process_time() - tic
    out["flow_100_epochs_nll"] = [epochs[14]["nll"], epochs[-1]["nll"]]
    out["flow_100_epochs"] = score(decode(sample(jax.random.key(5), fresh.params)))
    out["prior_n01"] = score(decode(jax.random.normal(jax.random.key(6), (NUM_JETS, means.shape[1]))))
    return out


def main(argv=None) -> dict:
    """Print the diagnostic of the run directory given on the command line as JSON; returns it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory of the JetNet benchmark (with seed_0/)")
    out = ablation(parser.parse_args(argv).run)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
