"""What the generation study reads off its rows: the best setting per CPU-time budget and the
recommended generation default."""
from __future__ import annotations

import math

import numpy as np

from jaxebm.experiments.generation_study.settings import MAIN_METRIC, paper_reference


def pick_budget_winners(rows: list[dict], budgets_us: list[float], cost_key: str = "est_us_per_jet") -> list[dict]:
    """For each CPU budget (us per jet): the lowest selection distance among settings within it, over
    all settings and over those `generate` can run (ULA from noise). ``cost_key``: the estimated cost
    (evaluations x the least-loaded cost of one; the measured wall times swing with the machine's load)
    or the measured ``us_per_jet``."""
    out = []
    for budget in budgets_us:
        entry = {"budget_us_per_jet": budget, "cost": cost_key}
        for label, pool in (("any", rows), ("generate", [r for r in rows if r.get("generation_config")])):
            within = [r for r in pool if (r.get(cost_key) if r.get(cost_key) is not None else math.inf) <= budget
                      and np.isfinite(r.get(MAIN_METRIC, np.nan) if r.get(MAIN_METRIC) is not None else np.nan)]
            best = min(within, key=lambda r: r[MAIN_METRIC]) if within else None
            entry[label] = None if best is None else {k: best.get(k) for k in (
                "setting", "us_per_jet", "est_us_per_jet", "evals_per_jet", MAIN_METRIC, "distance_err")}
        out.append(entry)
    return out


def recommend(rows: list[dict]) -> tuple[dict | None, str]:
    """The recommended `GenerationConfig`: among settings `generate` can run, the cheapest whose
    selection distance is within twice the bootstrap error (combined) or 5% of the best one's; among
    equally cheap ones, the one whose distance grows least when the same chain runs twice as long (a
    default should not degrade when someone runs it longer; unknown counts as worst), then the closest."""
    pool = [r for r in rows if r.get("generation_config") and np.isfinite(r.get(MAIN_METRIC, np.nan))]
    if not pool:
        return None, "No setting `generate` can run (ULA from noise) was completed within the time budget."
    best = min(pool, key=lambda r: r[MAIN_METRIC])
    tolerance = lambda r: max(2 * math.hypot(r["distance_err"], best["distance_err"]), 0.05 * best[MAIN_METRIC])  # noqa: E731
    near = [r for r in pool if r[MAIN_METRIC] <= best[MAIN_METRIC] + tolerance(r)]
    by_setting = {r["setting"]: r for r in rows}

    def growth(r: dict) -> float:
        longer = by_setting.get(f"{r['family']}@{2 * r['steps']}")
        return math.inf if longer is None else max(0.0, longer[MAIN_METRIC] - r[MAIN_METRIC])

    choice = min(near, key=lambda r: (r["evals_per_jet"], growth(r), r[MAIN_METRIC]))
    ties = [r for r in near if r["evals_per_jet"] == choice["evals_per_jet"] and r is not choice]
    paper = next((r for r in rows if r["setting"] == paper_reference(rows)), None)
    reason = (f"`{choice['setting']}` reaches selection distance {choice[MAIN_METRIC]:.3f} ± {choice['distance_err']:.3f} "
              f"with {choice['evals_per_jet']} gradient evaluations per jet (~{choice.get('est_us_per_jet', np.nan) / 1e3:.0f} ms "
              f"per jet here, {choice['us_per_jet'] / 1e3:.0f} ms measured under the load); "
              f"the best setting `generate` can run, `{best['setting']}`, reaches {best[MAIN_METRIC]:.3f} ± "
              f"{best['distance_err']:.3f} with {best['evals_per_jet']} evaluations, within the tolerance "
              f"(2 combined bootstrap errors or 5%).")
    if ties:
        reason += (" Equally cheap and as close: " + ", ".join(
            f"`{r['setting']}` ({r[MAIN_METRIC]:.3f}, at twice the length {'+' if growth(r) > 0 else ''}"
            f"{growth(r):.3f})" for r in ties) + f"; the choice changes least at twice the length "
            f"(+{growth(choice):.3f}).")
    if paper is not None:
        reason += (f" The paper's setting ({paper['steps']} steps) gives {paper[MAIN_METRIC]:.3f} ± {paper['distance_err']:.3f} "
                   f"at {paper['evals_per_jet']} evaluations; jets in the pT tail (the plots' top bin) "
                   f"{100 * paper['frac_pt_tail']:.1f}% vs {100 * choice['frac_pt_tail']:.1f}% for the recommendation.")
    return choice, reason
