"""Running the study's grid: every family's chains, scored at every length, in the order of `work_plan`
while a time budget lasts."""
from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from jaxebm.experiments.generation_study.chains import ChainPrograms, ChainProgress, run_family
from jaxebm.experiments.generation_study.loading import LoadedRun, buffer_starts, noise_starts
from jaxebm.experiments.generation_study.metrics import score
from jaxebm.experiments.generation_study.settings import Family


def machine_info() -> dict[str, Any]:
    """CPU model, core count, platform and JAX backend and version of this machine."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "jax_backend": jax.default_backend(), "jax": jax.__version__}


def load_avg() -> float:
    """The machine's 1-minute load average."""
    return float(os.getloadavg()[0])


def work_plan(families: list[Family]) -> list[tuple[str, int]]:
    """The order chains are run (and continued) in: ``(family name, length to reach)``.

    First every family to its floor (the paper's setting to 200 steps, the others to their shortest
    length), then round by round every family to its next length, then the extra lengths in priority
    order. Under a time budget the study stops a family at the first item that does not fit, so a short
    budget leaves every family with its shortest chains rather than some families with none.
    """
    items = [(f.name, f.guaranteed) for f in families]
    rest = {f.name: [length for length in f.lengths if length > f.guaranteed] for f in families}
    while any(rest.values()):
        items += [(f.name, rest[f.name].pop(0)) for f in families if rest[f.name]]
    return items + [(f.name, length) for f in families for length in f.extra]


@dataclass
class _Budget:
    """The time budget of `run_study` (seconds from ``t0``; None: unlimited) and the costs measured so far:
    chain seconds per jet and evaluation, and the other seconds (scoring) per family run."""

    max_seconds: float | None
    seconds_per_jet_eval: float
    overhead_seconds: float
    t0: float = field(default_factory=time.perf_counter)
    chain_seconds: float = 0.0
    jet_evals: int = 0
    overheads: list = field(default_factory=list)

    def seconds_left(self) -> float:
        return math.inf if self.max_seconds is None else self.max_seconds - (time.perf_counter() - self.t0)

    def cost(self, family: Family, steps: int, target: int, num_jets: int, programs: ChainPrograms) -> float:
        """Planned seconds to continue ``family`` from ``steps`` to ``target`` (its first run also compiles)."""
        rate = self.chain_seconds / self.jet_evals if self.jet_evals else self.seconds_per_jet_eval
        overhead = float(np.mean(self.overheads)) if self.overheads else self.overhead_seconds
        if family.sampler not in programs.compile_seconds:
            overhead += max(programs.compile_seconds.values(), default=self.overhead_seconds)
        return (family.evaluations(target) - family.evaluations(steps)) * num_jets * rate + overhead


def _start_rows(run: LoadedRun, starts: dict[str, tuple]) -> tuple[list[dict], dict[str, dict]]:
    """The rows and per-jet stats of the chain starts (0 steps), as ``<start>_start``."""
    rows, stats = [], {}
    for name, (x, mask) in starts.items():
        metrics, stats[f"{name}_start"] = score(run, x, mask, seed=run.seed)
        rows.append({"setting": f"{name}_start", "family": f"{name}_start", "description": f"{name} start, 0 steps",
                     "start": name, "sampler": "-", "steps": 0, "evals_per_jet": 0, "us_per_jet": 0.0,
                     "acceptance": float("nan"), "energy": float("nan"), **metrics})
    return rows, stats


def _family_rows(run: LoadedRun, family: Family, snapshots: dict[int, dict], start_pt: np.ndarray,
                 loads: list[float], num_jets: int) -> list[tuple[dict, dict]]:
    """``(row, per-jet stats)`` of each snapshot of `run_family` past 0 steps; ``start_pt (n,)``: the
    starts' jet pT [GeV], for the start-end correlation and the tail jets' origin."""
    out = []
    for length, snap in sorted(snapshots.items()):
        if length == 0:
            continue
        metrics, stats = score(run, snap["x"], snap["mask"], seed=run.seed)
        ok = stats["finite"]
        tail_end, tail_start = stats["pt"] > run.tail_pt, start_pt > run.tail_pt
        metrics["corr_start_end_pt"] = (float(np.corrcoef(start_pt[ok], stats["pt"][ok])[0, 1])
                                        if ok.sum() > 2 and np.std(stats["pt"][ok]) > 0 else float("nan"))
        metrics["frac_tail_from_tail_start"] = (float(np.mean(tail_start[tail_end & ok]))
                                                if (tail_end & ok).any() else float("nan"))
        out.append(({"setting": f"{family.name}@{length}", "family": family.name, "description": family.description,
                     "start": family.start, "sampler": family.sampler, "step": family.describe_step(),
                     "noise": "tied" if family.noise is None else family.noise,
                     "temperature": family.temperature, "steps": length,
                     "evals_per_jet": family.evaluations(length), "us_per_jet": 1e6 * snap["seconds"] / num_jets,
                     "acceptance": snap["acceptance"], "energy": snap["energy"], "load_avg_1min": loads,
                     "generation_config": family.generation_config and
                     (family.generation_config | {"num_steps": length}), **metrics}, stats))
    return out


def run_study(run: LoadedRun, families: list[Family], num_jets: int, batch_size: int, *,
              keep: set[str] | None = None, progress: bool = True, max_seconds: float | None = None,
              seconds_per_jet_eval: float = 1e-3, overhead_seconds: float = 5.0) -> tuple[list[dict], dict, list]:
    """Every family's chains and scores, run and continued in the order of `work_plan` while the time
    budget lasts (all of it without a budget).

    ``max_seconds``: time budget of the whole call, planned with the measured cost per jet and
    evaluation (``seconds_per_jet_eval`` until a family has run) and ``overhead_seconds`` per family
    (scoring; then measured). Compilation (once per sampler) is charged to the first family of the sampler.
    Returns the rows (one per family and length, plus the 0-step starts), ``{setting: per-jet stats}`` for
    the settings in ``keep`` (None: all) and the list of families cut or skipped by the budget.
    """
    budget = _Budget(max_seconds, seconds_per_jet_eval, overhead_seconds)
    programs = ChainPrograms(run, math.gcd(*(length for f in families for length in f.lengths + f.extra)))
    starts = {"noise": noise_starts(run, num_jets)}
    if any(f.start == "buffer" for f in families):
        starts["buffer"] = buffer_starts(run, num_jets)
    rows, kept = _start_rows(run, starts)
    start_pt = {name: kept[f"{name}_start"]["pt"] for name in starts}
    states: dict[str, ChainProgress] = {}
    closed: set[str] = set()
    done: dict[str, list[int]] = {f.name: [] for f in families}
    by_name = {f.name: f for f in families}
    for name, target in tqdm(work_plan(families), desc="chains", unit="item", disable=not progress):
        family, state = by_name[name], states.get(name)
        steps = 0 if state is None else state.steps
        if name in closed or target <= steps or (state is None and target != family.guaranteed):
            continue
        if budget.cost(family, steps, target, num_jets, programs) > budget.seconds_left():
            closed.add(name)  # its later items are longer still
            continue
        lengths = tuple(length for length in family.lengths + family.extra if steps < length <= target)
        t_family, load_before, seconds_before = time.perf_counter(), load_avg(), 0.0 if state is None else state.seconds
        compiled_before = set(programs.compile_seconds)
        x0, mask = starts[family.start]
        snapshots, state = run_family(run, family, x0, mask, batch_size, programs, lengths=lengths, resume=state,
                                      progress=progress)
        states[name] = state
        done[name] += list(lengths)
        budget.chain_seconds += state.seconds - seconds_before
        budget.jet_evals += (family.evaluations(state.steps) - family.evaluations(steps)) * num_jets
        for row, stats in _family_rows(run, family, snapshots, start_pt[family.start], [load_before, load_avg()],
                                       num_jets):
            rows.append(row)
            if keep is None or row["setting"] in keep or family.name in keep:
                kept[row["setting"]] = stats
        compiled = programs.compile_seconds.get(family.sampler, 0.0) if family.sampler not in compiled_before else 0.0
        budget.overheads.append(time.perf_counter() - t_family - (state.seconds - seconds_before) - compiled)
    cuts = [{"family": f.name, "planned": list(f.lengths + f.extra), "run": sorted(done[f.name])}
            for f in families if sorted(done[f.name]) != list(f.lengths + f.extra)]
    order = [f.name for f in families]
    rows.sort(key=lambda r: (order.index(r["family"]) if r["family"] in order else -1, r["steps"]))
    return rows, kept, cuts
