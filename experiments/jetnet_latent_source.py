"""ConVAE + NF with the latent flow trained on posterior means or on posterior samples (issue 22, item 6):
coverage, W1M, W1P and FPD of the two CPU-preset runs (mean ± std over seeds), the truth floor and the
paper's Table 8 row beside them, over the seeds each run has finished; writes ``latent_source.json`` and
``latent_source.md`` into OUT_DIR (default: experiments/results/jetnet).

    python -m experiments.jetnet_latent_source runs/cvae_mean runs/cvae_sample [OUT_DIR]
"""
import json
import sys
from pathlib import Path

import numpy as np

METRICS = (("cov", "COV", 1.0, True), ("w1m", "W1M x1e-3", 1e3, False), ("w1p", "W1P x1e-3", 1e3, False),
           ("fpd", "FPD x1e-3", 1e3, False))  # key, label, display scale, higher is better
PAPER = {"cov": 0.38, "w1m": 4.5e-3, "w1p": 5.3e-3}  # seed 004 Table 8, JetNet gluon ConVAE+NF (FPND 34.3, no FPD)


def last_line(path: Path) -> dict:
    """The last JSON line of a ``metrics.jsonl``."""
    return json.loads(path.read_text().splitlines()[-1])


def seed_row(seed_dir: Path) -> dict:
    """One seed: the ConVAE+NF and truth metric values, and the latent flow's last epoch (nll in nats per
    latent vector, input_std: mean per-dimension std of its training latents)."""
    results = json.loads((seed_dir / "results.json").read_text())
    flow = last_line(seed_dir / "latent_flow" / "metrics.jsonl")
    return {"seed": results["seed"],
            "convae_nf": {key: results["metrics"]["convae_nf"][key][0] for key, *_ in METRICS},
            "truth": {key: results["metrics"]["truth"][key][0] for key, *_ in METRICS},
            "flow_nll": flow["nll"], "flow_input_std": flow["input_std"],
            "flow_train_seconds": results["train_seconds"]["latent_flow"]}


def mean_std(rows: list[dict], row: str) -> dict[str, list[float]]:
    """``{metric: [mean, std]}`` over seeds (population std, as the benchmark's summary)."""
    return {key: [float(np.mean([r[row][key] for r in rows])), float(np.std([r[row][key] for r in rows]))]
            for key, *_ in METRICS}


def read_run(run: Path) -> dict:
    """A run's source, commit, per-seed rows and their mean ± std."""
    config = json.loads((run / "config.json").read_text())
    rows = [seed_row(d) for d in sorted(run.glob("seed_*")) if (d / "results.json").exists()]
    return {"run": str(run), "latent_source": config["latent_flow"]["latent_source"],
            "commit": json.loads((run / "run.json").read_text())["git_commit"], "seeds": rows,
            "convae_nf": mean_std(rows, "convae_nf"), "truth": mean_std(rows, "truth")}


def wins(a: dict, b: dict) -> list[str]:
    """Metrics on which run ``a``'s mean over seeds beats run ``b``'s."""
    better = {True: np.greater, False: np.less}
    return [key for key, _, _, higher in METRICS if better[higher](a["convae_nf"][key][0], b["convae_nf"][key][0])]


def cell(value: list[float], scale: float) -> str:
    return f"{value[0] * scale:.3g} ± {value[1] * scale:.2g}"


def markdown(runs: list[dict]) -> str:
    """The comparison table, per-seed values and the latent flows' inputs."""
    head = "| ConVAE + NF latent flow trained on | " + " | ".join(label for _, label, _, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for run in runs:
        lines.append(f"| posterior {run['latent_source']}s ({len(run['seeds'])} seeds) | "
                     + " | ".join(cell(run["convae_nf"][k], s) for k, _, s, _ in METRICS) + " |")
    lines.append("| truth floor (train vs test, same seeds) | "
                 + " | ".join(cell(runs[0]["truth"][k], s) for k, _, s, _ in METRICS) + " |")
    lines.append("| paper Table 8, JetNet gluon (GPU, 124k jets) | "
                 + " | ".join(f"{PAPER[k] * s:.3g}" if k in PAPER else "n/a (FPND 34.3)" for k, _, s, _ in METRICS)
                 + " |")
    lines += ["", "Per seed (COV / W1M x1e-3 / W1P x1e-3 / FPD x1e-3; latent flow: last-epoch NLL, std of its "
              "training latents, training seconds):", ""]
    for run in runs:
        for row in run["seeds"]:
            values = " / ".join(f"{row['convae_nf'][k] * s:.3g}" for k, _, s, _ in METRICS)
            lines.append(f"- {run['latent_source']}, seed {row['seed']}: {values}; NLL {row['flow_nll']:.2f}, "
                         f"input std {row['flow_input_std']:.3f}, {row['flow_train_seconds']:.0f} s")
    lines += ["", "Runs: " + "; ".join(f"{r['run']} (commit {r['commit']})" for r in runs), ""]
    return "\n".join(lines)


def main(mean_run: str, sample_run: str, out_dir: str = str(Path(__file__).parent / "results" / "jetnet")) -> None:
    runs = [read_run(Path(mean_run)), read_run(Path(sample_run))]
    if [r["latent_source"] for r in runs] != ["mean", "sample"]:
        raise SystemExit("give the mean run, then the sample run")
    out = Path(out_dir)
    result = {"runs": runs, "paper_table8_convae_nf": PAPER,
              "sample_better_on": wins(runs[1], runs[0]), "mean_better_on": wins(runs[0], runs[1])}
    (out / "latent_source.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "latent_source.md").write_text(markdown(runs))
    print(markdown(runs), "\nsample better on:", result["sample_better_on"])


if __name__ == "__main__":
    main(*sys.argv[1:])
