"""The findings of the generation study: sentences with the numbers its grid answers directly."""
from __future__ import annotations

from typing import Callable

from jaxebm.experiments.generation_study.settings import MAIN_METRIC, PAPER_FAMILY, TRAIN_T_EFF, paper_reference


def _formatters(by: dict[str, dict]) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """Text of a setting's selection distance (± its bootstrap error) and of its share of jets in the pT tail."""

    def d(setting: str) -> str:
        r = by[setting]
        return f"{r[MAIN_METRIC]:.3f} ± {r['distance_err']:.3f}"

    def over(setting: str) -> str:
        return f"{100 * by[setting]['frac_pt_tail']:.1f}%"

    return d, over


def _paper(rows: list[dict]) -> list[dict]:
    """The paper setting's rows by chain length."""
    return sorted((r for r in rows if r["family"] == PAPER_FAMILY), key=lambda r: r["steps"])


def _chain_length(rows: list[dict], by: dict[str, dict]) -> list[str]:
    """The paper setting at every length against the noise start."""
    d, _ = _formatters(by)
    out = []
    paper = _paper(rows)
    if paper and "noise_start" in by:
        out.append("Chain length, paper setting: selection distance " + ", ".join(
            f"{r['steps']} steps {d(r['setting'])}" for r in paper) + f" (noise start {d('noise_start')}); JSD(pT) "
            + ", ".join(f"{r['jsd_pt']:.3f}" for r in paper) + "; W1 of constituent log pT "
            + ", ".join(f"{r['w1_const_log_pt']:.3f}" for r in paper) + ".")
    return out


def _schedule(by: dict[str, dict]) -> list[str]:
    """Step schedules at the longest length all of them reached."""
    d, _ = _formatters(by)
    out = []
    common = [s for s in (100, 50, 25) if all(f"{f}@{s}" in by for f in (PAPER_FAMILY, "ula_const_n0.001"))]
    if common:
        s_ = common[0]
        out.append(f"Schedule at {s_} steps (noise 0.001): paper decay {d(f'{PAPER_FAMILY}@{s_}')}, constant 0.1 "
                   f"{d(f'ula_const_n0.001@{s_}')}" + "".join(
                       f", {name} {d(f'{name}@{s_}')}" for name in ("ula_fast_decay", "ula_inv_time")
                       if f"{name}@{s_}" in by) + ".")
    return out


def _noise_and_temperature(by: dict[str, dict]) -> list[str]:
    """Noise scales, then temperatures, of the paper schedule at the longest length run for both."""
    d, over = _formatters(by)
    out = []
    for s_ in (100, 50, 25):
        names = [n for n in ("ula_paper_n0", PAPER_FAMILY, "ula_paper_n0.005") if f"{n}@{s_}" in by]
        if len(names) > 1:
            out.append(f"Noise at {s_} steps (paper schedule): " + ", ".join(
                f"{ {'ula_paper_n0': 'noise 0', PAPER_FAMILY: 'noise 0.001', 'ula_paper_n0.005': 'noise 0.005'}[n]} "
                f"{d(f'{n}@{s_}')} (tail {over(f'{n}@{s_}')})" for n in names) + ".")
            break
    for s_ in (100, 50, 25):
        names = [n for n in ("ula_paper_T0.5", PAPER_FAMILY, "ula_paper_T2") if f"{n}@{s_}" in by]
        if len(names) > 1:
            out.append(f"Temperature at {s_} steps (paper schedule, noise 0.001; for ULA T only rescales the "
                       "drift, step / T): " + ", ".join(
                           f"T = { {'ula_paper_T0.5': '0.5', PAPER_FAMILY: '1', 'ula_paper_T2': '2'}[n]} "
                           f"{d(f'{n}@{s_}')} (tail {over(f'{n}@{s_}')})" for n in names) + ".")
            break
    return out


def _mala(rows: list[dict], by: dict[str, dict]) -> list[str]:
    """MALA: with the paper's decoupled noise, with tied noise at T = 1 and at the training chain's T_eff."""
    d, over = _formatters(by)
    out = []
    mala_paper = sorted((r for r in rows if r["family"] == "mala_paper"), key=lambda r: r["steps"])
    if mala_paper:
        r = mala_paper[-1]
        accepted = "< 0.01%" if r["acceptance"] < 1e-4 else f"{100 * r['acceptance']:.2g}%"
        out.append(f"MALA with the paper's decoupled noise (0.001, step 0.1 x 0.8 / 40, T = 1) accepts "
                   f"{accepted} of its moves over {r['steps']} steps: the proposal is a drift of "
                   f"step x grad E with a tiny spread, its reverse move is essentially impossible, so the chains stay "
                   f"at their starts (distance {d(r['setting'])} vs noise start {d('noise_start')}).")
    tied = sorted((r for r in rows if r["family"] == "mala_tied_T1"), key=lambda r: r["steps"])
    if tied:
        r = tied[-1]
        out.append(f"MALA with tied noise at T = 1 (step 1e-3, noise 0.045), i.e. sampling the model's own density "
                   f"exp(-E): acceptance {100 * r['acceptance']:.0f}%, distance {d(r['setting'])} after {r['steps']} "
                   f"steps, tail {over(r['setting'])}.")
    exact = sorted((r for r in rows if r["family"] == "mala_tied_train_T"), key=lambda r: r["steps"])
    for r in exact:
        twin = by.get(f"ula_const_n0.005@{r['steps']}")
        if twin is not None and r is exact[-1]:
            out.append(f"The training chain (ULA step 0.1, noise 0.005: stationary T_eff = {TRAIN_T_EFF:.3g}) made "
                       f"exact by MALA at that temperature accepts {100 * r['acceptance']:.0f}% of moves; after "
                       f"{r['steps']} steps: MALA {d(r['setting'])}, ULA {d(twin['setting'])}.")
    return out


def _checks(rows: list[dict], by: dict[str, dict]) -> list[str]:
    """The run's own samples.h5 against the same setting here, and the replay-buffer starts."""
    d, over = _formatters(by)
    out = []
    paper = _paper(rows)
    buffer = sorted((r for r in rows if r["family"].startswith("buffer_ula")), key=lambda r: (r["family"], r["steps"]))
    if "run_samples" in by and paper:
        r, p = by["run_samples"], next((q for q in paper if q["steps"] == by["run_samples"]["steps"]), None)
        if p is not None:
            out.append(f"Check against the run's own generated jets (samples.h5, {r['steps']} steps, another key): "
                       f"distance {d('run_samples')} vs this study's {d(p['setting'])}, tail {over('run_samples')} "
                       f"vs {over(p['setting'])}.")
    if "buffer_start" in by:
        ref = paper_reference(rows)
        text = (f"Replay-buffer starts (persistent chains of training): 0 steps {d('buffer_start')}, tail "
                f"{over('buffer_start')}")
        text += "".join(f"; {r['family']} {r['steps']} steps {d(r['setting'])}" for r in buffer)
        if ref:
            text += f" (paper setting {ref}: {d(ref)}, tail {over(ref)})"
        out.append(text + ".")
    return out


def findings(rows: list[dict]) -> list[str]:
    """Sentences with the numbers the grid answers directly (skipped where a setting was not run)."""
    by = {r["setting"]: r for r in rows}
    return (_chain_length(rows, by) + _schedule(by) + _noise_and_temperature(by) + _mala(rows, by)
            + _checks(rows, by))
