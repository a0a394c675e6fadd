"""Diagnostic on seed 0 of the CPU run: is ConVAE+NF limited by the flow (15 epochs) or by the decoder?
Decodes (a) the encoder means of the test jets (reconstruction), (b) flow samples after 15 epochs (the table's
flow, restored), (c) flow samples after 100 epochs (the paper's flow epochs), (d) N(0, 1) latents; each
compared with the test jets (W1M x1e-3 and the fraction of jets above the largest test relative mass).

    python experiments/results/jetnet/flow_ablation.py runs/jetnet/cpu_flow15    # a run directory
"""
import json, sys, time
from pathlib import Path
import jax, numpy as np
from jaxebm import experiments
from jaxebm.experiments import jetnet_bench as jb
from jaxebm.metrics.jetnet import jetnet_features, w1m
from jaxebm.models.convae import ConVAE, MinMaxScaler, jets_to_momenta, momenta_to_constituents
from jaxebm.models.flows import RealNVP, RealNVPConfig
from jaxebm.train.vae import (StageConfig, encode_means, fit, init_flow_state, init_vae_state, make_flow_step)
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.runs import SeedJob
run = Path(sys.argv[1]); seed_dir = run / "seed_0"
config = experiments.load_recorded("jetnet_bench", run)
job = SeedJob(0, seed_dir, {"sample": jb._paths(config.data)[0]}, False)
splits = jb._splits(config, job)
train_m = jets_to_momenta(splits["train"].constituents, splits["train"].mask, 30)
test_m = jets_to_momenta(splits["test"].constituents, splits["test"].mask, 30)
scaler = MinMaxScaler.fit(train_m)
vae = ConVAE(config.convae_rec.model)
state = init_vae_state(jax.random.key(0), vae, 1e-3)
with Checkpointer(seed_dir / "convae_rec" / "checkpoints") as ckpt:
    state, _ = ckpt.restore(state)
params = state.params
real = jetnet_features(splits["test"].constituents.astype(np.float64), splits["test"].mask)
def score(momenta):
    p4, mask = momenta_to_constituents(np.asarray(momenta))
    gen = jetnet_features(p4, mask)
    return {"w1m_x1e3": 1e3 * w1m(real, gen, seed=0).value, "above_test_max": float(np.mean(gen.mass > real.mass.max()))}
decode = jax.jit(lambda z: scaler.invert(vae.apply(params, z, method=ConVAE.decode)))
means = encode_means(vae, params, scaler.apply(train_m))
test_means = encode_means(vae, params, scaler.apply(test_m))
out = {"latent_mean_std": [float(means.mean()), float(means.std())], "reconstruction": score(decode(test_means))}
flow = RealNVP(RealNVPConfig(means.shape[1], config.latent_flow.num_couplings, config.latent_flow.hidden_sizes))
fstate = init_flow_state(jax.random.key(1), flow, 1e-3)
with Checkpointer(seed_dir / "latent_flow" / "checkpoints") as ckpt:
    fstate, _ = ckpt.restore(fstate)
sample = jax.jit(lambda key, p: flow.apply(p, key, 900, method=RealNVP.sample))
out["flow_15_epochs"] = score(decode(sample(jax.random.key(5), fstate.params)))
z = np.asarray(sample(jax.random.key(5), fstate.params)); out["flow_15_sample_std"] = float(z.std())
step = make_flow_step(flow, config.latent_flow.stage.learning_rate)
fresh = init_flow_state(jax.random.key(2), flow, config.latent_flow.stage.learning_rate)
t = time.process_time()
fresh, hist = fit(step, fresh, means, batch_size=100, num_epochs=100, seed=7)
out["flow_100_epochs_cpu_s"] = time.process_time() - t
out["flow_100_epochs_nll"] = [hist[14]["nll"], hist[-1]["nll"]]
out["flow_100_epochs"] = score(decode(sample(jax.random.key(5), fresh.params)))
out["prior_n01"] = score(decode(jax.random.normal(jax.random.key(6), (900, means.shape[1]))))
print(json.dumps(out, indent=1))
