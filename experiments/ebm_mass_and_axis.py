"""Why the EBM's generated jets have too narrow a mass and scattered axes (issue 25 item 4): controlled chains.

Loads one finished seed of `experiments.ebm_jets` (best EMA parameters, replay buffer, test QCD jets;
nothing is retrained) and runs the paper's generation schedule (``config.generation``) from different starts
and for different lengths, changing one thing per row:

- ``noise, 200``: the run's own generation (noise starts, the paper's 200 steps);
- ``noise, 800 (schedule x4)``: the same schedule stretched 4x (``num_steps`` and ``decay_every`` x4): longer
  chains that anneal as the paper's do;
- ``buffer, 50``: the persistent training chains (replay buffer) plus 50 steps;
- ``data, 200``: the test jets themselves as starts: whether the model keeps the real mass tail and centring;
- ``data shifted, 200``: the test jets translated by +``--shift`` in eta and phi (every slot): whether the
  energy pulls a displaced jet back onto its axis;
- and the starts themselves (``noise, 0``; ``data, 0``);
- ``..., recentred``: the chain ends of a row passed through the data's own centring and rotation
  (`jaxebm.data.preprocess.center_rotate_ebm`, what every real jet went through), no further chain steps.

Per row: the jet mass quantiles and the fraction above 150 GeV, the paper-convention JSD(M) and JSD(pT), W1(M), the
W1 of the constituents' eta and phi (every slot the model sees, against the test jets'), and the jet axis of the
summed four-vector (eta, phi): its mean and standard deviation over jets. Separately, the energy change of the test
jets under a rigid translation by delta in eta or phi, E(x + delta) - E(x) (mean over jets, and the fraction of jets
whose own axis is a local minimum along the move), beside the chain's temperature noise^2 / (2 step) in the paper's
last schedule block. Outputs ``mass_and_axis.{json,md,png}`` in ``--out``.

    python -m experiments.ebm_mass_and_axis runs/ebm_cpu_bf16/seed_0 --out experiments/results/mass_and_axis
"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxebm.data.io import read_jets  # noqa: E402
from jaxebm.data.preprocess import center_rotate_ebm, features_to_four_vectors  # noqa: E402
from jaxebm.evaluation import generation_quality, jet_observables  # noqa: E402
from jaxebm.experiments.generation_study.loading import buffer_starts, load_run, noise_starts  # noqa: E402
from jaxebm.experiments.jet_samples import data_paths  # noqa: E402
from jaxebm.inference import generate_from  # noqa: E402
from jaxebm.metrics import wasserstein_1d  # noqa: E402
from jaxebm.models.common import energy_fn  # noqa: E402
from jaxebm.runs.records import atomic_write_json, atomic_write_text  # noqa: E402

HEAVY_MASS = 150.0  # GeV: the tail the generated jets lack (issue 25)
DELTAS = (-0.08, -0.04, -0.02, -0.01, 0.01, 0.02, 0.04, 0.08)
RECENTRED = ("noise, 200 (paper)", "buffer, 50", "data, 200")  # rows also shown after the data's centring


def _model_space(pipeline, raw: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Raw ``(log pT, eta, phi)`` features -> the model's float32 features."""
    return np.asarray(pipeline.standardizer.apply(raw.astype(np.float32), mask), np.float32)


def translated(pipeline, x: np.ndarray, mask: np.ndarray, d_eta: float, d_phi: float) -> np.ndarray:
    """Model-space jets moved rigidly by (d_eta, d_phi) in the raw coordinates (every slot of ``mask``)."""
    raw = pipeline.to_raw_features(x, mask) + np.where(mask[..., None], np.array([0.0, d_eta, d_phi]), 0.0)
    return _model_space(pipeline, raw, mask)


def recentred(pipeline, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Model-space jets passed through the data's centring and principal-axis rotation (`center_rotate_ebm`)."""
    return _model_space(pipeline, center_rotate_ebm(pipeline.to_raw_features(x, mask), mask), mask)


def summary(run, x: np.ndarray, mask: np.ndarray) -> dict:
    """Mass, axis and quality numbers of one sample (model-space ``x``, ``mask``) against the test jets."""
    raw = run.pipeline.to_raw_features(x, mask)
    p4 = features_to_four_vectors(raw, mask)  # what `run.pipeline.to_four_vectors` does, raw features kept
    observables = jet_observables(p4, mask)
    mass, axes = observables["mass"], np.stack([observables["eta"], observables["phi"]], axis=1)  # the jet axis
    real_slots = run.real_raw[run.real_mask]
    quality = generation_quality(run.real_p4, run.real_mask, p4, mask, with_jetnet=False)
    return {"mass_q50_q90_q99": np.quantile(mass, [0.5, 0.9, 0.99]).tolist(),
            "frac_mass_above_150": float(np.mean(mass > HEAVY_MASS)),
            "paper_jsd_mass": quality["paper_jsd_mass"], "paper_jsd_pt": quality["paper_jsd_pt"],
            "w1_mass": quality["w1_mass"],
            "w1_constituent_eta": wasserstein_1d(real_slots[:, 1], raw[mask][:, 1]),
            "w1_constituent_phi": wasserstein_1d(real_slots[:, 2], raw[mask][:, 2]),
            "axis_mean": axes.mean(axis=0).tolist(), "axis_std": axes.std(axis=0).tolist(),
            "_mass": mass, "_axes": axes}


def energy_under_translation(run, x: np.ndarray, mask: np.ndarray, batch_size: int) -> dict:
    """Mean over jets of E(x moved by delta) - E(x), delta in `DELTAS`, for eta and for phi, and the fraction of
    jets for which both E(x - delta) and E(x + delta) are above E(x) (delta > 0)."""
    energy = jax.jit(lambda a, m: energy_fn(run.model, run.params, m)(a))

    def energies(xs):
        return np.concatenate([np.asarray(energy(jnp.asarray(xs[i:i + batch_size]),
                                                 jnp.asarray(mask[i:i + batch_size])))
                               for i in range(0, len(xs), batch_size)])

    base = energies(x)
    rows = {"base_energy_mean": float(base.mean()), "base_energy_std": float(base.std())}
    for axis, name in ((0, "eta"), (1, "phi")):
        change = {d: energies(translated(run.pipeline, x, mask, *((d, 0.0) if axis == 0 else (0.0, d)))) - base
                  for d in DELTAS}
        rows[name] = [float(np.mean(change[d])) for d in DELTAS]
        rows[f"{name}_frac_centre_is_minimum"] = [float(np.mean((change[-d] > 0) & (change[d] > 0)))
                                                  for d in DELTAS if d > 0]
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished seed directory of experiments.ebm_jets")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-jets", type=int, default=1000)
    parser.add_argument("--shift", type=float, default=0.03, help="eta and phi displacement of the shifted starts")
    args = parser.parse_args(argv)
    run = load_run(args.run_dir)
    paper = run.config.generation
    batch = min(paper.batch_size, args.num_jets)
    test = read_jets(data_paths(run.config.data.data_dir)["qcd"], 0, args.num_jets)
    x_data, mask_data, _ = run.pipeline.transform(test)
    x_noise, mask_noise = noise_starts(run, args.num_jets)
    x_buffer, mask_buffer = buffer_starts(run, args.num_jets)
    x_shift = translated(run.pipeline, x_data, mask_data, args.shift, args.shift)
    rows = {  # name: (starts, mask, generation config or None for the starts themselves)
        "noise, 0": (x_noise, mask_noise, None),
        "noise, 200 (paper)": (x_noise, mask_noise, paper),
        "noise, 800 (schedule x4)": (x_noise, mask_noise, dataclasses.replace(
            paper, num_steps=4 * paper.num_steps, decay_every=4 * paper.decay_every)),
        "buffer, 50": (x_buffer, mask_buffer, dataclasses.replace(paper, num_steps=50)),
        "data, 0": (x_data, mask_data, None),
        "data, 200": (x_data, mask_data, paper),
        f"data shifted by {args.shift}, 0": (x_shift, mask_data, None),
        f"data shifted by {args.shift}, 200": (x_shift, mask_data, paper),
    }
    results, curves = {}, {}
    for i, (name, (x0, mask, config)) in enumerate(rows.items()):
        x = x0 if config is None else generate_from(jax.random.key(100 + i), run.model, run.params, x0, mask,
                                                     dataclasses.replace(config, batch_size=batch))
        variants = {name: x} | ({f"{name}, recentred": recentred(run.pipeline, x, mask)} if name in RECENTRED else {})
        for label, xs in variants.items():
            row = summary(run, xs, mask)
            curves[label] = (row.pop("_mass"), row.pop("_axes"))
            results[label] = row
            print(f"{label}: M q50/q90/q99 {np.round(row['mass_q50_q90_q99'], 1)}, M>150 {row['frac_mass_above_150']:.3f}, "
                  f"axis std {np.round(row['axis_std'], 4)}, mean {np.round(row['axis_mean'], 4)}", flush=True)
    last_step = paper.step_size * paper.step_decay ** ((paper.num_steps - 1) // paper.decay_every)
    translation = energy_under_translation(run, x_data, mask_data, batch)
    study = {"run_dir": str(args.run_dir), "step": run.best_step, "num_jets": args.num_jets, "shift": args.shift,
             "git_commit": subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                                         capture_output=True, text=True).stdout.strip(),
             "generation": dataclasses.asdict(paper), "rows": results, "deltas": list(DELTAS),
             "energy_under_translation": translation,
             "chain_temperature_last_block": paper.noise_scale ** 2 / (2 * last_step)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "mass_and_axis.json", study)
    atomic_write_text(args.out / "mass_and_axis.md", markdown(study))
    plot(curves, translation, args.out / "mass_and_axis.png")
    return study


def markdown(study: dict) -> str:
    lines = [f"# Generated jet mass and jet axis: controlled chains ({study['run_dir']}, step {study['step']})", "",
             f"{study['num_jets']} jets per row; the paper's generation schedule unless the row says otherwise; "
             f"commit {study['git_commit'][:7]}. ![plots](mass_and_axis.png)", "",
             "| starts, steps | M q50 / q90 / q99 (GeV) | M > 150 GeV | JSD(M) paper | JSD(pT) paper | W1(M) GeV | "
             "W1 constituent eta / phi | axis std eta / phi | axis mean eta / phi |", "| --- |" + " ---: |" * 8]
    for name, r in study["rows"].items():
        q = r["mass_q50_q90_q99"]
        lines.append(f"| {name} | {q[0]:.1f} / {q[1]:.1f} / {q[2]:.1f} | {r['frac_mass_above_150']:.3f} | "
                     f"{r['paper_jsd_mass']:.2e} | {r['paper_jsd_pt']:.2e} | {r['w1_mass']:.2f} | "
                     f"{r['w1_constituent_eta']:.4f} / {r['w1_constituent_phi']:.4f} | "
                     f"{r['axis_std'][0]:.4f} / {r['axis_std'][1]:.4f} | {r['axis_mean'][0]:+.4f} / {r['axis_mean'][1]:+.4f} |")
    t = study["energy_under_translation"]
    lines += ["", f"Energy of the test jets under a rigid translation (mean over jets of E(x + delta) - E(x); the test "
              f"jets' E has mean {t['base_energy_mean']:.3f} and std {t['base_energy_std']:.3f}; the last schedule "
              f"block's temperature noise^2 / (2 step) is {study['chain_temperature_last_block']:.1e}):", "",
              "| delta | " + " | ".join(f"{d:+.2f}" for d in study["deltas"]) + " |", "| --- |" + " ---: |" * len(study["deltas"]),
              "| eta | " + " | ".join(f"{v:+.4f}" for v in t["eta"]) + " |",
              "| phi | " + " | ".join(f"{v:+.4f}" for v in t["phi"]) + " |", "",
              "Fraction of test jets whose own axis is a local minimum of E along the translation (E(x - delta) and "
              "E(x + delta) both above E(x)):", "",
              "| delta | " + " | ".join(f"{d:.2f}" for d in study["deltas"] if d > 0) + " |",
              "| --- |" + " ---: |" * sum(d > 0 for d in study["deltas"]),
              *(f"| {n} | " + " | ".join(f"{v:.3f}" for v in t[f"{n}_frac_centre_is_minimum"]) + " |" for n in ("eta", "phi"))]
    return "\n".join(lines) + "\n"


def plot(curves: dict, translation: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    bins = np.linspace(0, 400, 41)
    for name, (mass, axis) in curves.items():
        style = dict(histtype="step", density=True, label=name, lw=2 if name.startswith("data, 0") else 1)
        axes[0].hist(np.clip(np.asarray(mass, np.float64), 0, 399), bins=bins, **style)
        for panel, values in zip(axes[1:3], np.asarray(axis, np.float64).T):  # overflow into the edge bins
            panel.hist(np.clip(values, -0.0999, 0.0999), bins=np.linspace(-0.1, 0.1, 41), **style)
    for ax, label in zip(axes[:3], ("jet mass (GeV)", "jet axis eta", "jet axis phi")):
        ax.set_xlabel(label)
        ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    deltas = sorted(DELTAS + (0.0,))
    for name in ("eta", "phi"):
        values = dict(zip(DELTAS, translation[name])) | {0.0: 0.0}
        axes[3].plot(deltas, [values[d] for d in deltas], marker="o", label=name)
    axes[3].set_xlabel("rigid translation delta")
    axes[3].set_ylabel("mean E(x + delta) - E(x)")
    axes[3].legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    main()
