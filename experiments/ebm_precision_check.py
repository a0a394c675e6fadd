"""Issue 25's quality check: the EBM CPU preset in bfloat16 against float32, seed by seed.

Reads ``seed_*/results.json`` of two finished runs of `jaxebm train ebm` that differ only in
``model.compute_dtype`` and compares the quantities the issue names (paper-convention JSD of jet pT and mass, the
E(x) AUCs for top and H -> hh -> 4b) and a few more (JSD(M/pT), W1M, W1P, FPD, the score-norm AUCs). Agreement
("within the seed spread", the issue's words) per quantity: the two seed means differ by at most twice the spread of
one seed, |m_bf16 - m_f32| <= 2 s, s^2 = (s_f32^2 + s_bf16^2) / 2 (sample standard deviations over seeds; s_f32
alone while bf16 has one seed). Also reported: the difference in units of the standard error of the difference of
the means (a stricter reading), and whether each bf16 seed lies inside the float32 seeds' range. Writes ``precision_check.{json,md}`` into ``--out``.

    python -m experiments.ebm_precision_check experiments/results/cpu experiments/results/cpu_bf16 \
        --out experiments/results/cpu_bf16
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from jaxebm.runs.records import atomic_write_json, atomic_write_text

QUANTITIES = {  # name: (path in results.json, required by the issue)
    "JSD(pT), paper convention": (("generated", "paper_jsd_pt"), True),
    "JSD(M), paper convention": (("generated", "paper_jsd_mass"), True),
    "AUC top, E(x)": (("anomaly_energy", "auc_top"), True),
    "AUC H, E(x)": (("anomaly_energy", "auc_h_hh_4b"), True),
    "JSD(M/pT), paper convention": (("generated", "paper_jsd_m_over_pt"), False),
    "W1M": (("generated", "w1m"), False),
    "W1P": (("generated", "w1p"), False),
    "FPD": (("generated", "fpd"), False),
    "AUC top, score norm": (("anomaly_score_norm", "auc_top"), False),
    "AUC H, score norm": (("anomaly_score_norm", "auc_h_hh_4b"), False),
}


def seed_values(run_dir: Path) -> dict[str, list[float]]:
    """Every quantity of `QUANTITIES` per finished seed of ``run_dir`` (seeds in increasing order)."""
    results = [json.loads(p.read_text()) for p in sorted(run_dir.glob("seed_*/results.json"))]
    if not results:
        raise SystemExit(f"{run_dir}: no seed_*/results.json (is the run finished?)")
    return {name: [float(r[a][b]) for r in results] for name, ((a, b), _) in QUANTITIES.items()} | {
        "seeds": [int(r["seed"]) for r in results]}


def compare(reference: list[float], candidate: list[float]) -> dict:
    """The agreement test of one quantity (module docstring)."""
    ref, cand = np.asarray(reference), np.asarray(candidate)
    cand_var = cand.var(ddof=1) if len(cand) > 1 else ref.var(ddof=1)
    seed_std = np.sqrt((ref.var(ddof=1) + cand_var) / 2)
    standard_error = np.sqrt(ref.var(ddof=1) / len(ref) + cand_var / len(cand))
    difference = float(cand.mean() - ref.mean())
    return {"f32_mean": float(ref.mean()), "f32_std": float(ref.std(ddof=1)), "f32_range": [float(ref.min()), float(ref.max())],
            "bf16_mean": float(cand.mean()), "bf16_std": float(cand.std(ddof=1)) if len(cand) > 1 else None,
            "bf16_seeds": cand.tolist(), "difference": difference, "allowed": float(2 * seed_std),
            "agrees": bool(abs(difference) <= 2 * seed_std), "difference_in_standard_errors": float(difference / standard_error),
            "bf16_seeds_inside_f32_range": [bool(ref.min() <= c <= ref.max()) for c in cand]}


def markdown(check: dict) -> str:
    lines = [f"# bfloat16 against float32, EBM CPU preset ({check['f32_run']} seeds {check['f32_seeds']}, "
             f"{check['bf16_run']} seeds {check['bf16_seeds']})", "",
             "Agreement (within the seed spread): |mean(bf16) - mean(f32)| <= 2 s, s the pooled standard deviation of one "
             "seed. Required by issue 25: JSD(pT), JSD(M), AUC top / H (E(x)). Last column: the difference in standard "
             "errors of the difference of the means (a stricter reading; |value| > 2 would be a significant shift).", "",
             "| quantity | required | float32 mean ± std (range) | bfloat16 mean ± std | bf16 seeds | difference / allowed | agrees | difference / SE |",
             "| --- | :---: | ---: | ---: | ---: | ---: | :---: | ---: |"]
    for name, row in check["quantities"].items():
        std = "" if row["bf16_std"] is None else f" ± {row['bf16_std']:.3g}"
        lines.append(f"| {name} | {'yes' if QUANTITIES[name][1] else ''} | {row['f32_mean']:.3g} ± {row['f32_std']:.3g} "
                     f"({row['f32_range'][0]:.3g}-{row['f32_range'][1]:.3g}) | {row['bf16_mean']:.3g}{std} | "
                     + ", ".join(f"{v:.3g}" for v in row["bf16_seeds"])
                     + f" | {row['difference']:+.3g} / {row['allowed']:.3g} | {'yes' if row['agrees'] else '**no**'} | "
                     f"{row['difference_in_standard_errors']:+.1f} |")
    verdict = "all required quantities agree" if check["required_agree"] else "**not all required quantities agree**"
    return "\n".join(lines + ["", f"Verdict: {verdict}."]) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("f32_run", type=Path, help="run directory of the float32 preset")
    parser.add_argument("bf16_run", type=Path, help="run directory of the bfloat16 preset")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    reference, candidate = seed_values(args.f32_run), seed_values(args.bf16_run)
    rows = {name: compare(reference[name], candidate[name]) for name in QUANTITIES}
    check = {"f32_run": str(args.f32_run), "bf16_run": str(args.bf16_run), "f32_seeds": reference["seeds"],
             "bf16_seeds": candidate["seeds"], "quantities": rows,
             "required_agree": all(rows[name]["agrees"] for name, (_, required) in QUANTITIES.items() if required)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "precision_check.json", check, sort_keys=False)
    atomic_write_text(args.out / "precision_check.md", markdown(check))
    print(markdown(check))
    return check


if __name__ == "__main__":
    main()
