"""Controlled runs of the NAE phase (issue 21): one finished AE phase, several NAE-phase settings.

Restores a seed's checkpoint at the end of its AE phase (``run.ae_steps``) and runs the NAE phase with NAE-config
overrides, writing one JSON line every ``--every`` iterations: the step's E(x+), E(x-) and chain acceptances,
the validation balance |E(val) - E(x-)| (`nae_eval.make_validation_fn`, what selects checkpoints), and, as a
diagnostic only (never used to select anything), the test AUC (with ``--ema DECAY`` also that of an exponential
moving average of the NAE-phase parameters). The AE phase is shared, so the runs differ in the one setting changed.

    python -m experiments.nae_phase2_probe runs/nae/cpu/tag_qcd/seed_0 OUT.jsonl --set nae.lr=5e-4
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm import experiments
from jaxebm.experiments import nae_data, nae_eval
from jaxebm.metrics import auc
from jaxebm.models.nae_autoencoder import ConvAE
from jaxebm.train import nae
from jaxebm.train.batches import ArrayBatches
from jaxebm.train.checkpoint import Checkpointer


def test_auc(model, config, state, tests: dict[str, np.ndarray]) -> float:
    """The diagnostic test AUC of ``state`` (background vs signal test images; never used to select)."""
    energy = {role: nae_eval.batched_energy(model, config.nae, state, x) for role, x in tests.items()}
    labels = np.r_[np.zeros(len(energy["background"])), np.ones(len(energy["signal"]))]
    return float(auc(labels, np.r_[energy["background"], energy["signal"]]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed_dir", type=Path, help="a NAE seed directory whose AE phase has finished")
    parser.add_argument("out", type=Path, help="JSON lines written here")
    parser.add_argument("--iterations", type=int, default=200, help="NAE iterations")
    parser.add_argument("--every", type=int, default=20, help="iterations between evaluations")
    parser.add_argument("--ema", type=float, default=None,
                        help="also report the test AUC of an exponential moving average of the parameters, this decay")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)
    config = experiments.load_recorded("nae", args.seed_dir.parent, args.overrides)
    paths = {role: f.path for role, f in nae_data.data_files(config).items()}
    tests = {role: nae_data.load_images(paths[role], config.data, "test") for role in paths}
    train = nae_data.load_images(paths["background"], config.data, "train")
    scale = nae_data.read_intensity_scale(args.seed_dir)
    model = ConvAE(dataclasses.replace(config.model, intensity_scale=scale))
    template = jax.eval_shape(lambda key: nae.create_state(key, model, config.nae, jnp.asarray(train[:2])),
                              jax.random.key(0))
    with Checkpointer(args.seed_dir / "checkpoints") as ckpt:
        state, _ = ckpt.restore(template, step=config.run.ae_steps)
    state = nae.start_nae_phase(state, config.nae)
    step = nae.make_nae_step(model, config.nae)
    balance = nae_eval.make_validation_fn(model, config, nae_data.load_images(paths["background"], config.data, "val"),
                                          select_from=0)
    batches = ArrayBatches((train,), config.nae.batch_size, seed=1)
    ema_params = jax.tree.map(jnp.copy, state.params)  # the step donates the state
    start = time.time()
    with open(args.out, "w") as handle:
        for iteration in range(args.iterations + 1):
            if iteration:
                state, metrics = step(state, jnp.asarray(next(batches)[0]))
                if args.ema is not None:
                    ema_params = jax.tree.map(lambda e, p: args.ema * e + (1 - args.ema) * p, ema_params, state.params)
            if iteration % args.every == 0:
                row = {"it": iteration, "seconds": round(time.time() - start, 1), "overrides": args.overrides,
                       **balance(state), "test_auc": test_auc(model, config, state, tests)}
                if args.ema is not None:
                    row["test_auc_ema"] = test_auc(model, config, state.replace(params=ema_params), tests)
                if iteration:
                    row |= {key: float(np.mean(metrics[key])) for key in
                            ("e_pos", "e_neg", "z_acceptance", "x_acceptance")}
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                print(row, flush=True)


if __name__ == "__main__":
    main()
