"""What the NAE phase changes in the energy, against a property of the images: their spread.

For finished NAE seed directories (their ``scores.npz``: the AE's and the selected NAE's energy of every test image;
nothing retrained), per seed: the AUC of the AE, of the NAE and of two image features alone (the spread
``n_eff = 1 / sum_i p_i^2``, the number of pixels the jet's intensity effectively covers, with p the image normalised
to unit sum; and the brightest pixel), the Spearman correlation of each stage's energy with the spread on the
background test images, and the median NAE / AE energy ratio of each class. An AE whose AUC follows a feature
alone, and an NAE phase that removes the energy's dependence on that feature within the background, is an NAE that
loses what the AE ranked by (docs/NAE.md). Writes ``energy_shift.{json,md,png}`` into ``--out``. A seed directory
given as ``NAME=DIR`` is labelled NAME (e.g. a variant); otherwise by its direction and pT power.

    python -m experiments.nae_energy_shift runs/nae/cpu/tag_dark_n0.3/seed_* gneg=runs/nae/gneg/tag_top/seed_0 --out DIR
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from jaxebm import experiments
from jaxebm.experiments.nae_data import data_files, load_images
from jaxebm.metrics import auc
from jaxebm.runs.records import atomic_write_text

ROLES = ("background", "signal")


def image_spread(images: np.ndarray) -> np.ndarray:
    """``n_eff = 1 / sum_i p_i^2`` ``(n,)`` of images ``(n, P, P)`` (p: each image over its sum): 1 for one lit
    pixel, k for k equally lit pixels."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    totals = flat.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        raise ValueError("image_spread needs images with a positive sum; an empty image has no spread")
    p = flat / totals
    return 1.0 / np.sum(p * p, axis=1)


def brightest_pixel(images: np.ndarray) -> np.ndarray:
    """The largest pixel ``(n,)`` of images ``(n, P, P)``."""
    return images.reshape(len(images), -1).max(axis=1)


def _auc(background: np.ndarray, signal: np.ndarray) -> float:
    """AUC of a score that is larger for the signal."""
    return auc(np.r_[np.zeros(len(background)), np.ones(len(signal))], np.r_[background, signal])


def shift_row(energies: dict[str, dict[str, np.ndarray]], features: dict[str, dict[str, np.ndarray]]) -> dict:
    """One seed's numbers from ``energies[stage][role]`` (stage "ae" / "nae") and ``features[name][role]``
    (name "spread" / "brightest"), each ``(n_role,)``, roles background / signal (module doc)."""
    row = {f"auc_{stage}": _auc(energies[stage]["background"], energies[stage]["signal"]) for stage in ("ae", "nae")}
    row |= {f"auc_{name}": _auc(values["background"], values["signal"]) for name, values in features.items()}
    for stage in ("ae", "nae"):
        row[f"spearman_{stage}_spread_background"] = float(
            spearmanr(energies[stage]["background"], features["spread"]["background"]).statistic)
    for role in ROLES:
        row[f"median_ratio_{role}"] = float(np.median(energies["nae"][role] / energies["ae"][role]))
    return row


def analyse_seed(seed_dir: Path, name: str | None = None) -> dict:
    """`shift_row` of a finished seed directory, labelled ``name`` or by its direction and pT power."""
    config = experiments.load_recorded("nae", seed_dir)
    files = data_files(config)
    scores = np.load(seed_dir / "scores.npz")
    images = {role: load_images(files[role].path, config.data, "test") for role in ROLES}
    for role in ROLES:
        if len(scores[f"nae_{role}"]) != len(images[role]):
            raise ValueError(f"{seed_dir}/scores.npz holds {len(scores[f'nae_{role}'])} {role} energies but the "
                             f"config's test split has {len(images[role])} images: not this seed's scores")
    energies = {stage: {role: scores[f"{stage}_{role}"] for role in ROLES} for stage in ("ae", "nae")}
    features = {"spread": {role: image_spread(x) for role, x in images.items()},
                "brightest": {role: brightest_pixel(x) for role, x in images.items()}}
    label = config.data.direction + (f"_n{config.data.pt_power:g}" if config.data.direction == "tag_dark" else "")
    return {"label": f"{name} {label}" if name else label, "seed_dir": str(seed_dir), **shift_row(energies, features)}


def write_outputs(out: Path, rows: list[dict]) -> None:
    """``energy_shift.json``, ``energy_shift.md`` (one line per seed) and ``energy_shift.png``."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "energy_shift.json", json.dumps(rows, indent=1))
    keys = [k for k in rows[0] if k not in ("label", "seed_dir")]
    lines = ["# What the NAE phase changes in the energy (test images; the selected NAE against the AE)", "",
             "auc_spread / auc_brightest: the AUC of the image feature alone (spread n_eff = 1 / sum p^2). "
             "spearman_<stage>_spread_background: rank correlation of the energy with the spread on the background. "
             "median_ratio_<role>: median NAE / AE energy.", "", "![shift](energy_shift.png)", "",
             "| run | seed dir | " + " | ".join(keys) + " |", "| --- | --- |" + " ---: |" * len(keys)]
    lines += [f"| {r['label']} | {r['seed_dir']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for r in rows]
    atomic_write_text(out / "energy_shift.md", "\n".join(lines) + "\n")
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    for i, label in enumerate(labels):
        group = [r for r in rows if r["label"] == label]
        separations = {"AE": [r["auc_ae"] for r in group], "NAE": [r["auc_nae"] for r in group],
                       "spread alone (either sign)": [max(r["auc_spread"], 1 - r["auc_spread"]) for r in group]}
        for j, (name, values) in enumerate(separations.items()):
            axes[0].scatter([i + 0.2 * (j - 1)] * len(values), values, color=f"C{j}", marker="os^"[j],
                            label=name if i == 0 else None)
        for stage, marker in (("ae", "o"), ("nae", "s")):
            axes[1].scatter([r[f"spearman_{stage}_spread_background"] for r in group],
                            [r[f"auc_{stage}"] for r in group], color=f"C{i}", marker=marker,
                            label=f"{label} {stage.upper()}")
    axes[0].set_xticks(range(len(labels)), labels, rotation=20)
    axes[0].set(title="AUC against the background", ylabel="AUC")
    axes[1].set(title="AUC against the energy's dependence on the spread", ylabel="AUC",
                xlabel="Spearman(energy, spread) on the background test images")
    for ax in axes:
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(out / "energy_shift.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed_dirs", nargs="+", help="finished NAE seed directories (with scores.npz), or NAME=DIR")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    named = [arg.split("=", 1) if "=" in arg else (None, arg) for arg in args.seed_dirs]
    write_outputs(args.out, [analyse_seed(Path(seed_dir), name) for name, seed_dir in named])
    print((args.out / "energy_shift.md").read_text())


if __name__ == "__main__":
    main()
