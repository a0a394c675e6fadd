"""Where the EBM's score norm ranks anomalies the wrong way (issue 22, item 5).

For an EBM seed directory and a checkpoint directory (``<dir>/latest/<step>``, by default the seed's own): at
every saved step, with its EMA parameters, the anomaly AUC (top and H -> hh -> 4b against QCD test jets) of
E(x), of ||grad_x E|| in raw (log pT, eta, phi) coordinates (the API's ``score_norm``), and of its parts: the
log pT and the angular components, and the real-constituent and the padded slots (in "zeros" padding mode
the model sees every slot, a padded one as a 1 GeV particle on the axis, and the norm runs over all of
them), plus each score's Pearson and Spearman correlation with the jet mass and the number of constituents
on the QCD test jets. Nothing is chosen on test labels: every score is oriented larger = more anomalous. Writes ``score_norm.json``, ``score_norm.md`` and
``score_norm.png`` into ``--out``.

    python -m experiments.ebm_score_norm runs/demo/seed_0 --checkpoints /tmp/kept/seed_0 --out DIR
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import pearsonr, spearmanr

from jaxebm import experiments
from jaxebm.data.io import read_jets
from jaxebm.data.pipeline import ConstituentPipeline
from jaxebm.experiments.ebm import SIGNALS, _template
from jaxebm.experiments.jet_samples import TEST_PROCESSES, data_paths
from jaxebm.inference import anomaly_scores, model_outputs_fn
from jaxebm.metrics import auc
from jaxebm.models.transformer import TransformerEnergy
from jaxebm.plots import save_figure
from jaxebm.runs.records import atomic_write_json, atomic_write_text
from jaxebm.train.cd import make_noise_fn
from jaxebm.train.checkpoint import Checkpointer

SCORES = ("energy", "score_norm", "norm_log_pt", "norm_angular", "norm_real_slots", "norm_padded_slots")


@functools.lru_cache(maxsize=4)
def _slot_gradients(model):
    """Jitted ``(params, x (B, N, F), mask (B, N)) -> grad_x E (B, N, F)`` in the model's coordinates."""
    outputs = model_outputs_fn(model)
    return jax.jit(jax.grad(lambda params, x, mask: jnp.sum(outputs(params, x, mask)), argnums=1))


def norm_parts(model, params, x, model_mask, real_mask, raw_scale, batch_size: int = 500) -> dict[str, np.ndarray]:
    """Parts of ``||grad E||`` (raw coordinates, over the model's slots) per jet, each ``(n,)``: log pT and
    angular components, real-constituent and padded slots (their squares add up to the whole); and
    ``log_pt_grad_by_slot (n, N)``, ``|dE / d log pT|`` per slot (slots in decreasing pT)."""
    grad = np.concatenate([np.asarray(_slot_gradients(model)(params, x[i:i + batch_size], model_mask[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])
    squared = np.square(grad / raw_scale) * model_mask[..., None]
    return {"log_pt_grad_by_slot": np.sqrt(squared[..., 0]),
            "norm_log_pt": np.sqrt(squared[..., 0].sum(1)), "norm_angular": np.sqrt(squared[..., 1:].sum((1, 2))),
            "norm_real_slots": np.sqrt((squared.sum(-1) * real_mask).sum(1)),
            "norm_padded_slots": np.sqrt((squared.sum(-1) * ~real_mask).sum(1))}


def step_row(scores: dict[str, dict[str, np.ndarray]], real_masks: dict[str, np.ndarray], qcd_mass: np.ndarray) -> dict:
    """AUCs against QCD and the QCD mass and multiplicity correlations of every score
    (``scores[process][score] (n,)``), the shares of the padded slots and of log pT in ``||grad E||^2``, and
    the mean ``|dE / d log pT|`` per slot over real constituents (``real_masks[process] (n, N)``)."""
    qcd_multiplicity = real_masks["qcd"].sum(axis=1)
    row = {}
    for name in SCORES:
        background = scores["qcd"][name]
        for signal in SIGNALS:
            labels = np.r_[np.zeros(len(background)), np.ones(len(scores[signal][name]))]
            row[f"{name}_auc_{signal}"] = float(auc(labels, np.r_[background, scores[signal][name]]))
        row[f"{name}_pearson_mass_qcd"] = float(pearsonr(background, qcd_mass)[0])
        row[f"{name}_spearman_mass_qcd"] = float(spearmanr(background, qcd_mass)[0])
        row[f"{name}_spearman_multiplicity_qcd"] = float(spearmanr(background, qcd_multiplicity)[0])
    for process in scores:
        by_slot = np.where(real_masks[process], scores[process]["log_pt_grad_by_slot"], np.nan)
        row[f"log_pt_grad_by_slot_{process}"] = np.nanmean(by_slot, axis=0).round(5).tolist()
        total = scores[process]["score_norm"] ** 2
        row[f"padded_share_{process}"] = float(np.mean(scores[process]["norm_padded_slots"] ** 2 / total))
        row[f"log_pt_share_{process}"] = float(np.mean(scores[process]["norm_log_pt"] ** 2 / total))
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for ax, signal in zip(axes[:2], SIGNALS):
        for name in SCORES:
            ax.plot(steps, [r[f"{name}_auc_{signal}"] for r in rows], marker="o", label=name)
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set(xlabel="CD iteration", ylabel=f"AUC {signal} vs QCD", title=f"{signal}: larger score = anomalous")
    for name in SCORES:
        axes[2].plot(steps, [r[f"{name}_pearson_mass_qcd"] for r in rows], marker="o", label=name)
    axes[2].axhline(0.0, color="grey", lw=0.8)
    axes[2].set(xlabel="CD iteration", ylabel="Pearson(score, jet mass), QCD")
    for process in TEST_PROCESSES:
        profile = rows[-1][f"log_pt_grad_by_slot_{process}"]
        axes[3].plot(np.arange(1, len(profile) + 1), profile, label=process)
    axes[3].set(xlabel="constituent (decreasing pT)", ylabel="mean |dE / d log pT|", yscale="log",
                title=f"step {rows[-1]['step']}")
    axes[3].legend(fontsize=7)
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed_dir", type=Path, help="an EBM seed directory (config.json, pipeline.json)")
    parser.add_argument("--checkpoints", type=Path, help="holds latest/<step>/ (default: the seed's checkpoints)")
    parser.add_argument("--num-jets", type=int, default=2000, help="test jets per process")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = experiments.load_recorded("ebm", args.seed_dir)
    pipeline = ConstituentPipeline.from_dict(json.loads((args.seed_dir / "pipeline.json").read_text()))
    if pipeline.feature_space != "raw":
        parser.error(f"the study splits raw (log pT, eta, phi) gradients; this seed is {pipeline.feature_space!r}")
    model = TransformerEnergy(config.model)
    template = _template(model, config.cd, pipeline, make_noise_fn(**pipeline.noise_parameters()))
    paths = data_paths(config.data.data_dir)
    tests = {p: read_jets(paths[p], 0, args.num_jets) for p in TEST_PROCESSES}
    inputs = {p: pipeline.transform(s) for p, s in tests.items()}
    qcd_mass = tests["qcd"].jets[:, 3]
    rows = []
    with Checkpointer(args.checkpoints or args.seed_dir / "checkpoints") as ckpt:
        for step in sorted(ckpt.steps()):
            state, _ = ckpt.restore(template, step=step)
            params = jax.device_get(state.ema_params)
            scores = {}
            for process, (x, mask, real) in inputs.items():
                api = anomaly_scores(model_outputs_fn(model), params, x, mask, coordinate_scale=pipeline.raw_scale)
                parts = norm_parts(model, params, x, mask, real, pipeline.raw_scale)
                whole = np.sqrt(parts["norm_log_pt"] ** 2 + parts["norm_angular"] ** 2)
                if not np.allclose(whole, api["score_norm"], rtol=1e-3):
                    raise AssertionError("the parts of the score norm do not add up to the API's score_norm")
                scores[process] = {"energy": api["energy"], "score_norm": api["score_norm"], **parts}
            rows.append({"step": step, **step_row(scores, {p: real for p, (_, _, real) in inputs.items()}, qcd_mass)})
            print(f"step {step}: " + ", ".join(f"{n} {rows[-1][f'{n}_auc_top']:.3f}/{rows[-1][f'{n}_auc_h_hh_4b']:.3f}"
                                               for n in SCORES), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "score_norm.json", {"seed_dir": str(args.seed_dir), "num_jets": args.num_jets,
                                                     "compute_dtype": config.model.compute_dtype, "steps": rows})
    header = (["step"] + [f"{n} AUC top / H" for n in SCORES] + [f"{n} Pearson(M) QCD" for n in SCORES]
              + ["padded share of norm^2 QCD / top / H"])
    lines = [f"# Score norm by part across checkpoints: {args.seed_dir}", "", "| " + " | ".join(header) + " |",
             "|" + " ---: |" * len(header)]
    for r in rows:
        cells = [str(r["step"])] + [f"{r[f'{n}_auc_top']:.3f} / {r[f'{n}_auc_h_hh_4b']:.3f}" for n in SCORES]
        cells += [f"{r[f'{n}_pearson_mass_qcd']:+.2f}" for n in SCORES]
        cells.append(" / ".join(f"{r[f'padded_share_{p}']:.2f}" for p in TEST_PROCESSES))
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(args.out / "score_norm.md", "\n".join(lines) + "\n")
    plot(rows, args.out / "score_norm.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
