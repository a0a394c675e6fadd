"""The markdown report of the generation study (``generation_study.md``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxebm.runs.records import atomic_write_text


def fmt(value, digits: int = 3) -> str:
    """A table cell: "-" for None or non-finite, integers as they are, floats to ``digits`` significant digits."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


TABLE_COLUMNS = (("setting", "setting"), ("evals_per_jet", "evals/jet"), ("us_per_jet", "us/jet"),
                 ("est_us_per_jet", "est us/jet"),
                 ("distance", "distance"), ("distance_err", "±"), ("jsd_pt", "JSD pT"), ("jsd_mass", "JSD M"),
                 ("jsd_m_over_pt", "JSD M/pT"), ("w1_pt", "W1 pT"), ("w1_mass", "W1 M"),
                 ("w1_m_over_pt", "W1 M/pT"), ("w1_const_log_pt", "W1 logpT"), ("w1_const_eta", "W1 eta"),
                 ("w1_const_phi", "W1 phi"), ("frac_pt_tail", "tail"), ("frac_pt_over", ">800"),
                 ("frac_pt_under", "<400"),
                 ("acceptance", "accept"), ("nonfinite_frac", "diverged"))


def _header(study: dict) -> list[str]:
    """Title, checkpoint, model and sample sizes."""
    lines = [f"# Generation study: quality per CPU time of `{study['run_dir']}`", ""]
    lines += [f"Checkpoint: best (EMA parameters, step {study['best_step']}) of seed {study['seed']}; model "
              f"{study['model']}; feature space `{study['feature_space']}`, padding `{study['padding_mode']}`, "
              f"N = {study['num_constituents']}. {study['num_jets']} generated jets per setting (chains in batches of "
              f"{study['batch_size']}) against {study['real']['num_jets']} test QCD jets (through "
              f"`jets_as_model_sees`).", ""]
    return lines


def _machine(study: dict) -> list[str]:
    """The machine, its load during the study and the cost of one energy-gradient evaluation."""
    rows, m = study["rows"], study["machine"]
    loads = [x for r in rows for x in (r.get("load_avg_1min") or []) if x is not None] + list(study["load_avg"])
    return [f"Machine: {m['cpu']}, {m['cores']} cores (shared), JAX {m['jax']} on {m['jax_backend']}; 1-minute load "
            f"average between {min(loads):.1f} and {max(loads):.1f} during the study"
            + (" (other jobs on the machine, e.g. test suites and training runs, took a varying share of the two "
               "cores, so the measured times are inflated and noisy: the same 25 steps took between "
               f"{min(r['us_per_jet'] for r in rows if r.get('evals_per_jet') == 25 and np.isfinite(r['us_per_jet'])) / 1e3:.0f}"
               f" and {max(r['us_per_jet'] for r in rows if r.get('evals_per_jet') == 25 and np.isfinite(r['us_per_jet'])) / 1e3:.0f}"
               " ms per jet)" if max(loads) > m["cores"] and any(r.get("evals_per_jet") == 25 for r in rows) else "")
            + f". One batched energy+gradient evaluation at the start: {study['grad_us_per_jet']:.0f} us per jet (best "
            f"of 7, batch {study['batch_size']}); the least-loaded cost seen in the chains, "
            f"{study['unit_us_per_eval']:.0f} us, gives the `est us/jet` column (evaluations x that). Total study time "
            f"{study['total_seconds'] / 60:.1f} min.", ""]


def _columns(study: dict) -> list[str]:
    """What the columns of the settings table are."""
    return ["Columns: gradient evaluations per jet (ULA: steps; MALA: steps + 1); measured wall time per jet "
            "(compilation excluded; chains in jitted segments of 25 steps) and the estimate; selection distance = "
            "sum over pT, M, M/pT of W1 / std(real) with its bootstrap error (lower is better); textbook JSDs on "
            "fixed ranges; W1 of jet pT [GeV], M [GeV], M/pT; W1 of the constituent features over the slots the "
            "model sees (raw log pT, eta_rel, phi_rel); fractions of jets in the tail (above the plots' top edge, "
            f"{study['real']['tail_pt']:.0f} GeV), above 800 and below 400 GeV; MALA's mean "
            "acceptance; diverged (non-finite) jets.", ""]


def _references(study: dict) -> list[str]:
    """The real jets' tail fractions and the truth-vs-truth scores (`results.json`)."""
    ref = study["reference"]
    return [f"Reference levels: real test jets have {100 * ref['real']['frac_pt_tail']:.2f}% above "
            f"{ref['real']['tail_pt']:.0f} GeV (the pT tail), {100 * ref['real']['frac_pt_over']:.2f}% above 800 GeV and "
            f"{100 * ref['real']['frac_pt_under']:.2f}% below 400 GeV"
            + (f"; truth vs truth (results.json) distance {ref['truth_vs_truth']['distance']:.3f}, JSD pT "
               f"{ref['truth_vs_truth']['jsd_pt']:.4f}" if ref.get("truth_vs_truth") else "") + ".", ""]


def _settings_table(study: dict) -> list[str]:
    """Every setting's row, then the families."""
    rows = study["rows"]
    table = ["## All settings", "", "| " + " | ".join(h for _, h in TABLE_COLUMNS) + " |",
             "| " + " | ".join(["---"] + ["---:"] * (len(TABLE_COLUMNS) - 1)) + " |"]
    for r in rows:
        table.append("| " + " | ".join(f"`{r['setting']}`" if k == "setting" else
                                       fmt(r.get(k), 4 if k.startswith("frac") else 3) for k, _ in TABLE_COLUMNS)
                     + " |")
    table += ["", "Families:", ""]
    for fam in study["families"]:
        table.append(f"- `{fam['name']}`: {fam['description']} (step {fam['step']}, noise {fam['noise']}, "
                     f"T {fam['temperature']:g}, start {fam['start']}, lengths {fam['lengths']})")
    return table


def _budget_section(study: dict) -> list[str]:
    """The best setting per CPU-time budget (`pick_budget_winners`)."""
    lines = ["## Best setting per CPU-time budget", "",
             "Lowest selection distance among the settings whose estimated time per jet (evaluations x "
             f"{study['unit_us_per_eval']:.0f} us, the least-loaded cost of one evaluation seen; the measured times "
             "swung several-fold with the load for the same work) is within the budget; "
             "'any' includes buffer starts (they need a trained replay buffer and reuse its chains), 'generate' "
             "only settings `jaxebm.inference.generate` can run (ULA from noise).", "",
             "| budget (us/jet) | best (any) | distance | best (`generate`) | distance |", "| ---: | --- | ---: | --- | ---: |"]
    for b in study["budgets"]:
        cells = []
        for label in ("any", "generate"):
            w = b[label]
            cells += ["-", "-"] if w is None else [
                f"`{w['setting']}` ({w['evals_per_jet']} evals, est {w['est_us_per_jet']:.0f} us, measured "
                f"{fmt(w['us_per_jet'], 3)} us)", f"{w['distance']:.3f} ± {w['distance_err']:.3f}"]
        lines.append(f"| {b['budget_us_per_jet']:.0f} ({b['budget_us_per_jet'] / study['unit_us_per_eval']:.0f} evals) | "
                     + " | ".join(cells) + " |")
    return lines


def _recommendation_section(study: dict) -> list[str]:
    """The recommended generation default and what the time budget cut."""
    rec = study["recommendation"]
    lines = ["", "## Recommended generation default", "", rec["reason"], ""]
    if rec["generation_config"]:
        lines += ["As a `GenerationConfig`: `" + json.dumps(rec["generation_config"]) + "`.", ""]
    if study.get("budget_cuts"):
        lines += ["Cut to the time budget (" + str(study["max_minutes"]) + " min): " + "; ".join(
            f"`{c['family']}` {c['planned']} -> {c['run'] or 'skipped'}" for c in study["budget_cuts"]) + ".", ""]
    return lines


def write_markdown(path: Path, study: dict) -> None:
    """Write the study (`finish`'s JSON content) as markdown to ``path`` (atomically)."""
    lines = _header(study) + _machine(study) + _columns(study) + _references(study)
    if study.get("notes"):
        lines += ["## Summary", "", study["notes"], ""]
    lines += _budget_section(study) + _recommendation_section(study)
    lines += ["## Findings (computed from the table)", ""] + [f"- {item}" for item in study.get("findings", [])] + [""]
    lines += _settings_table(study) + [""]
    lines += ["## Generated jet pT tails: the numbers", ""] + study.get("tail_text", ["(no analysis)"]) + [""]
    lines += ["## Plots", ""] + [f"- [{p}]({p})" for p in study["plots"]] + [""]
    atomic_write_text(path, "\n".join(lines))
