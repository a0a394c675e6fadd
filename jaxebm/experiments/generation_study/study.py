"""The whole generation study of one seed run (`run_generation_study`) and the rewrite of an earlier
study's report from its JSON (`rewrite_report`)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from jaxebm.config import to_dict
from jaxebm.experiments.generation_study.chains import time_energy_gradient
from jaxebm.experiments.generation_study.loading import LoadedRun, load_run, read_run_samples
from jaxebm.experiments.generation_study.metrics import jet_stats_from_four_vectors, real_reference, score
from jaxebm.experiments.generation_study.outputs import finish
from jaxebm.experiments.generation_study.runner import load_avg, machine_info, run_study
from jaxebm.experiments.generation_study.settings import Family, study_grid
from jaxebm.experiments.generation_study.tails import tail_analysis


def select_families(families: list[Family], names: list[str] | None) -> list[Family]:
    """The families called ``names`` (all for None), in grid order; ValueError for unknown names."""
    if not names:
        return families
    unknown = set(names) - {f.name for f in families}
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; known: {[f.name for f in families]}")
    return [f for f in families if f.name in names]


def run_samples_row(run: LoadedRun) -> tuple[dict, dict] | None:
    """The row and per-jet stats of the run's own generated jets (``samples.h5``: `evaluate_seed`'s
    `generate` with the run's generation config, another key), or None without the file."""
    samples = read_run_samples(run.run_dir)
    if samples is None:
        return None
    sample_p4, sample_mask = samples
    metrics, stats = score(run, None, sample_mask, seed=run.seed, stats=jet_stats_from_four_vectors(sample_p4,
                                                                                                    sample_mask))
    gen = run.config.generation
    row = {"setting": "run_samples", "family": "run_samples", "start": "noise", "sampler": "ula",
           "description": f"the run's samples.h5 ({len(sample_mask)} jets: `generate` with the run's "
           f"generation config, {gen.num_steps} steps, another key)", "steps": gen.num_steps,
           "evals_per_jet": gen.num_steps, "us_per_jet": float("nan"), "acceptance": float("nan"),
           "energy": float("nan"), **metrics}
    return row, stats


def _describe(run: LoadedRun, run_dir: Path, num_jets: int, batch_size: int) -> dict:
    """The run and the sample sizes of the study (the head of its JSON)."""
    return {
        "run_dir": str(run_dir), "seed": run.seed, "best_step": run.best_step,
        "model": f"{run.config.model.num_layers} x {run.config.model.d_model} transformer",
        "feature_space": run.pipeline.feature_space, "padding_mode": run.pipeline.padding_mode,
        "num_constituents": run.pipeline.num_constituents, "num_jets": num_jets, "batch_size": batch_size,
    }


def _family_records(families: list[Family]) -> list[dict]:
    """The settings of each family as the JSON records them."""
    return [{"name": f.name, "description": f.description, "sampler": f.sampler, "step": f.describe_step(),
             "noise": "tied" if f.noise is None else f.noise, "temperature": f.temperature, "start": f.start,
             "lengths": list(f.lengths + f.extra)} for f in families]


def run_generation_study(run_dir: Path, out: Path, *, num_jets: int | None = None, batch_size: int | None = None,
                         data_dir: str | None = None, families: list[str] | None = None,
                         max_minutes: float | None = None, quick: bool = False, notes: Path | None = None,
                         progress: bool = True) -> dict:
    """Run the grid (`study_grid`, or the ``families`` of it) on the seed run ``run_dir`` and write the
    study to ``out`` (`finish`); returns the study as written to ``generation_study.json``.

    ``num_jets``: generated jets per setting (default 1000; ``quick``: the run's num_generated_jets);
    ``batch_size``: chains per jitted call (default the run's generation batch); ``max_minutes``: time
    budget of the whole study (chains are run and lengthened in the order of `work_plan` while it lasts).
    """
    t_start, load_start = time.perf_counter(), load_avg()
    run = load_run(run_dir, data_dir)
    num_jets = num_jets or (run.config.run.num_generated_jets if quick else 1000)
    batch_size = min(batch_size or run.config.generation.batch_size, num_jets)
    grid = select_families(study_grid(quick), families)
    grad_seconds, grad_seconds_median = time_energy_gradient(run, batch_size)
    max_seconds = None if max_minutes is None else 60 * max_minutes - (time.perf_counter() - t_start) - 30
    rows, kept, cuts = run_study(run, grid, num_jets, batch_size, progress=progress, max_seconds=max_seconds,
                                 seconds_per_jet_eval=grad_seconds_median)
    samples = run_samples_row(run)
    if samples is not None:
        rows.append(samples[0])
        kept["run_samples"] = samples[1]
    real_ref = real_reference(run)
    study = {
        **_describe(run, run_dir, num_jets, batch_size), "quick": quick, "machine": machine_info(), "load_avg": [load_start, load_avg()],
        "grad_us_per_jet": 1e6 * grad_seconds, "grad_us_per_jet_median": 1e6 * grad_seconds_median,
        "budget_cuts": cuts, "max_minutes": max_minutes, "total_seconds": time.perf_counter() - t_start,
        "families": _family_records(grid), "real": real_ref,
        "reference": {"real": real_ref, **({k: run.results[k] for k in ("noise_init", "truth_vs_truth", "generated")}
                                           if run.results else {})},
        "rows": rows, "tails": tail_analysis(rows, kept, real_ref), "config": to_dict(run.config),
    }
    return finish(study, out, notes, kept, run)


def rewrite_report(out: Path, notes: Path | None = None) -> dict:
    """Rewrite the markdown, the JSON's derived parts and the plots from an earlier study's
    ``out/generation_study.json`` (no chains; `finish` without per-jet stats)."""
    study = json.loads((out / "generation_study.json").read_text())
    for row in study["rows"]:  # JSON keeps NaN as null
        row.update({k: float("nan") for k, v in row.items() if v is None and k != "generation_config"})
    return finish(study, out, notes)
