"""The generated jet pT tails: per-jet numbers of the tail jets against the rest (`tail_analysis`) and
their markdown tables (`tail_text`)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxebm.data.preprocess import features_to_four_vectors
from jaxebm.evaluation import jet_observables
from jaxebm.experiments.generation_study.report import fmt
from jaxebm.experiments.generation_study.settings import PAPER_FAMILY, PT_OVERFLOW, PT_UNDERFLOW, paper_reference


def _tail_detail(setting: str, stats: dict, real_ref: dict, start: dict | None) -> dict:
    """Tail jets (pT above the plots' top edge, ``real_ref["tail_pt"]``) against the other generated jets:
    their hardest constituents, how much of the tail the single hardest constituent makes, and (with
    ``start``, the chains' starting stats) how the starts of the tail jets looked."""
    ok = stats["finite"]
    pt, lead, num_hard = stats["pt"][ok], stats["lead"][ok], stats["num_hard"][ok]
    edge = real_ref["tail_pt"]
    over = pt > edge
    detail: dict[str, Any] = {"setting": setting, "num_jets": int(ok.sum()), "frac_tail": float(over.mean()),
                              "frac_over": float(np.mean(pt > PT_OVERFLOW)), "frac_under": float(np.mean(pt < PT_UNDERFLOW))}
    if start is not None:
        start_pt = start["pt"][ok]
        start_lead = start["lead"][ok][:, 0]
    for label, sel in (("overflow", over), ("rest", ~over)):
        if not sel.any():
            continue
        part = {"num_jets": int(sel.sum()), "lead_log_pt": lead[sel, 0].mean().item(),
                "second_log_pt": lead[sel, 1].mean().item(), "third_log_pt": lead[sel, 2].mean().item(),
                "num_hard": num_hard[sel].mean().item(), "lead_pt_share": stats["lead_pt_share"][ok][sel].mean().item(),
                "scalar_pt_median": float(np.median(stats["scalar_pt"][ok][sel])), "pt_median": float(np.median(pt[sel]))}
        if start is not None:
            part |= {"start_pt_median": float(np.median(start_pt[sel])),
                     "frac_start_pt_tail": float(np.mean(start_pt[sel] > edge)),
                     "start_lead_log_pt": float(np.mean(start_lead[sel])),
                     "frac_start_lead_above_real_q99": float(np.mean(start_lead[sel] > real_ref["lead_log_pt_q99"]))}
        detail[label] = part
    # the overflow left when only the hardest slot of each jet is capped at the real 99% quantile
    raw, m = stats["raw"][ok].copy(), stats["mask"][ok]
    hardest = np.argmax(np.where(m, raw[..., 0], -np.inf), axis=1)
    rows = np.arange(len(raw))
    raw[rows, hardest, 0] = np.minimum(raw[rows, hardest, 0], real_ref["lead_log_pt_q99"])
    capped_pt = jet_observables(features_to_four_vectors(raw, m), m)["pt"]
    detail["frac_tail_with_lead_capped_at_real_q99"] = float(np.mean(capped_pt > edge))
    detail["frac_lead_above_real_q99"] = float(np.mean(lead[:, 0] > real_ref["lead_log_pt_q99"]))
    if start is not None:
        detail["corr_start_lead_end_lead"] = float(np.corrcoef(start_lead, lead[:, 0])[0, 1])
        detail["corr_start_pt_end_pt"] = float(np.corrcoef(start_pt, pt)[0, 1])
    return detail


def tail_analysis(rows: list[dict], kept: dict, real_ref: dict) -> dict:
    """Numbers behind the generated pT tails (see `tail_text` and the markdown for the reading)."""
    out: dict[str, Any] = {"real": real_ref}
    paper_rows = sorted((r for r in rows if r["family"] == PAPER_FAMILY), key=lambda r: r["steps"])
    out["paper_vs_length"] = [{k: r.get(k) for k in ("steps", "frac_pt_tail", "frac_pt_over", "frac_pt_under",
                                                   "lead_log_pt", "num_hard", "lead_log_pt_tail", "num_hard_tail",
                                                   "corr_start_end_pt", "frac_tail_from_tail_start")}
                              for r in paper_rows]
    out["tail_by_setting"] = {r["setting"]: [r.get("frac_pt_tail"), r.get("frac_pt_over")] for r in rows}
    ref = paper_reference(rows)
    if ref is not None and ref in kept:
        start = kept["noise_start"]
        out["paper_detail"] = _tail_detail(ref, kept[ref], real_ref, start)
    if "run_samples" in kept:
        out["samples_detail"] = _tail_detail("run_samples", kept["run_samples"], real_ref, None)
    out["noise_start_detail"] = _tail_detail("noise_start", kept["noise_start"], real_ref, None)
    return out


def _real_lines(real: dict) -> list[str]:
    """The real test jets' tail numbers (`real_reference`)."""
    edge = real["tail_pt"]
    return [f"Tail: jet pT above {edge:.0f} GeV, the top edge of the runs' jet pT plots (`jaxebm.plots`: the real "
            f"99.9% quantile plus 10% of the range), so these jets fill the plots' top (overflow) bin; the JSD range "
            f"ends at 800 GeV.", "",
            f"Real test jets: {100 * real['frac_pt_tail']:.2f}% above {edge:.0f} GeV, {100 * real['frac_pt_over']:.2f}% "
            f"above 800 GeV, {100 * real['frac_pt_under']:.2f}% below 400 GeV; hardest constituent log pT mean "
            f"{real['lead_log_pt']:.2f} (99% quantile {real['lead_log_pt_q99']:.2f}, i.e. "
            f"{math.exp(real['lead_log_pt_q99']):.0f} GeV), 2nd {real['second_log_pt']:.2f}, 3rd {real['third_log_pt']:.2f}; "
            f"{real['num_hard']:.2f} constituents above 100 GeV per jet; hardest constituent's share of the scalar "
            f"pT sum {real['lead_pt_share']:.2f}.", ""]


def _length_table(paper_vs_length: list[dict], edge: float) -> list[str]:
    """The paper setting's tail numbers against chain length, as a markdown table."""
    lines = [f"Paper setting against chain length (the same noise starts): fractions above {edge:.0f} GeV, above 800 "
             "and below 400 GeV; mean hardest log pT and number of constituents above 100 GeV (all jets; tail "
             "jets); correlation of each chain's start and end jet pT; share of the tail jets whose noise start "
             "was already in the tail:", "",
             f"| steps | >{edge:.0f} | >800 | <400 | hardest log pT | >100 GeV constituents | hardest log pT (tail) "
             "| >100 GeV constituents (tail) | corr(start, end pT) | tail from tail start |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in paper_vs_length:
        lines.append("| " + " | ".join(fmt(r[k], 3) for k in (
            "steps", "frac_pt_tail", "frac_pt_over", "frac_pt_under", "lead_log_pt", "num_hard", "lead_log_pt_tail",
            "num_hard_tail", "corr_start_end_pt", "frac_tail_from_tail_start")) + " |")
    return lines


def _detail_table(details: list[dict], real: dict, edge: float) -> list[str]:
    """Tail jets against the rest of each sample (`_tail_detail`), with the real jets as the first row."""
    lines = ["", f"Tail jets (pT > {edge:.0f} GeV) against the rest of the same sample: hardest three "
             "constituents' log pT, constituents above 100 GeV, the hardest one's share of the scalar pT sum, "
             "median scalar pT sum; for chains from noise also the start's median jet pT and hardest log pT, "
             "and the share of starts whose hardest constituent was above the real 99% quantile:", "",
             "| sample | part | jets | log pT 1st / 2nd / 3rd | >100 GeV constituents | hardest share | scalar pT [GeV] "
             "| start pT [GeV] | start hardest log pT | start hardest > real q99 |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines.append(f"| real | all | {real['num_jets']} | {real['lead_log_pt']:.2f} / {real['second_log_pt']:.2f} / "
                 f"{real['third_log_pt']:.2f} | {real['num_hard']:.2f} | {real['lead_pt_share']:.2f} | "
                 f"{real['scalar_pt_median']:.0f} | | | |")
    for d in details:
        for part in ("overflow", "rest"):
            if part not in d:
                continue
            q = d[part]
            lines.append(f"| `{d['setting']}` | {'tail' if part == 'overflow' else 'rest'} | {q['num_jets']} | "
                         f"{q['lead_log_pt']:.2f} / {q['second_log_pt']:.2f} / {q['third_log_pt']:.2f} | "
                         f"{q['num_hard']:.2f} | {q['lead_pt_share']:.2f} | {q['scalar_pt_median']:.0f} | "
                         f"{fmt(q.get('start_pt_median'), 3)} | {fmt(q.get('start_lead_log_pt'), 3)} | "
                         f"{fmt(q.get('frac_start_lead_above_real_q99'), 3)} |")
    return lines + [""]


def _detail_bullets(details: list[dict], edge: float) -> list[str]:
    """One sentence per sample: tail shares, the hardest constituent's part in them, start-end correlations."""
    lines = []
    for d in details:
        text = (f"`{d['setting']}`: {100 * d['frac_tail']:.1f}% above {edge:.0f} GeV, {100 * d['frac_over']:.1f}% above "
                f"800 GeV; hardest constituent above the real 99% quantile in {100 * d['frac_lead_above_real_q99']:.1f}% "
                f"of jets; capping only that constituent at the real 99% quantile leaves "
                f"{100 * d['frac_tail_with_lead_capped_at_real_q99']:.1f}% above {edge:.0f} GeV")
        if "corr_start_pt_end_pt" in d:
            text += (f"; correlation of start and end over the chains: jet pT {d['corr_start_pt_end_pt']:.2f}, "
                     f"hardest log pT {d['corr_start_lead_end_lead']:.2f}")
        lines.append(f"- {text}.")
    return lines


def tail_text(tails: dict) -> list[str]:
    """The markdown tables of `tail_analysis` (numbers; the reading is in the findings)."""
    real = tails["real"]
    edge = real["tail_pt"]
    lines = _real_lines(real) + _length_table(tails["paper_vs_length"], edge)
    details = [tails[k] for k in ("noise_start_detail", "paper_detail", "samples_detail") if k in tails]
    if details:
        lines += _detail_table(details, real, edge) + _detail_bullets(details, edge)
    lines += ["", f"Fractions above {edge:.0f} / above 800 GeV for every setting: " + ", ".join(
        f"`{k}` {100 * v[0]:.1f}% / {100 * v[1]:.1f}%" for k, v in tails["tail_by_setting"].items()
        if v[0] is not None and v[1] is not None and np.isfinite(v[0]) and np.isfinite(v[1])) + "."]
    return lines
