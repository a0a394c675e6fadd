"""Markdown rendering of the EBM benchmark suite's payload (`benchmarks.bench_ebm`): one table per section."""
from __future__ import annotations

from benchmarks import ebm_costs
from benchmarks.common import markdown_table


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def markdown_report(payload: dict) -> str:
    """The human-readable summary of ``payload`` (the JSON holds every field)."""
    meta, plan, ceilings = payload["meta"], payload["plan"], payload.get("ceilings", {})
    gpu = meta["peak"] is not None
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    lines = [f"# EBM benchmark suite: {meta['device_label']} (`python -m benchmarks.bench_ebm`)", "",
             f"{meta['date']}; {meta['device_kind']} ({meta['jax_platform']}); CPU {meta['cpu']}, "
             f"{meta['cpu_count']} cores, {meta['host_memory_gb']} GB; {versions}; peer: {meta['peer'] or 'none'}"
             f" ({meta['torch_device'] or '-'}); 1-min load average {meta['load_average_1min']} at start, "
             f"{meta.get('load_average_1min_end', '-')} at end.", "",
             f"Medians of {plan['repeats']} timed calls ({plan['train_repeats']} for training) after the compiling "
             f"call and {plan['warmup']} ({plan['heavy_warmup']} for training and generation) untimed calls, "
             "runners alternating. FLOPs are analytic (`benchmarks/ebm_costs.py`: matrix products only; a Langevin "
             "step is a forward pass plus the input gradient).", ""]
    lines += [f"- {note}" for note in plan["notes"]]
    lines += [f"- part {part['file']} ({part['date']})" for part in payload.get("parts", [])] + [""]
    lines += ["## Measured ceilings", ""] + markdown_table(
        ["quantity", "value"], [[k, v / 1e9] for k, v in ceilings.items()]) + [
        "", "(GFLOP/s for products, GB/s for the copy; `matmul_*` is the best of JAX and torch.)", ""]
    if gpu:
        lines += [f"Datasheet peaks used for MFU ({meta['peak']['match']}): "
                  + ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" for k, v in meta["peak"]["flops"].items())
                  + f", {meta['peak']['bandwidth'] / 1e12:.2f} TB/s.", ""]
    lines += _langevin_table(payload.get("langevin", []), gpu)
    lines += _cost_table(payload.get("cost", []))
    lines += _train_table(payload.get("train", []))
    lines += _generation_table(payload.get("generation"))
    lines += _compile_table(payload)
    if payload.get("errors"):
        lines += ["## Sections that failed", ""] + [f"- {k}: {v}" for k, v in payload["errors"].items()] + [""]
    return "\n".join(lines) + "\n"


def _langevin_table(rows: list[dict], gpu: bool) -> list[str]:
    if not rows:
        return []
    headers = ["size", "batch", "steps", "precision", "runner", "us / jet-step", "jet-steps / s", "GFLOP/s",
               "% matmul", "JAX / torch eager", "JAX / torch compile", "host peak MB", "device peak MB"]
    if gpu:
        headers[9:9] = ["MFU %", "GB/s", "% roofline"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["size"], r["batch"], r["steps"], r["precision"], r["runner"], "error: " + r["error"]]
                        + [None] * (len(headers) - 6))
            continue
        device = (r.get("device_memory") or {}).get("peak_bytes_in_use_mb")
        cells = [r["size"], r["batch"], r["steps"], r["precision"], r["runner"], r["us_per_jet_step"],
                 r["jet_steps_per_s"], r["gflops_per_s"], _pct(r["fraction_of_measured_matmul"]),
                 r.get("ratio_vs_torch_eager"), r.get("ratio_vs_torch_compile"), r["host_peak_mb"], device]
        if gpu:
            cells[9:9] = [_pct(r.get("mfu")), r.get("achieved_bandwidth_gb_per_s"), _pct(r.get("fraction_of_roofline"))]
        body.append(cells)
    targets = [f"- {r['size']} B={r['batch']}: {100 * r['fraction_of_measured_matmul']:.0f}% of the measured "
               f"product rate (target >= 75%: {'met' if r['fraction_of_measured_matmul'] >= 0.75 else 'not met'})"
               + (f"; JAX / torch eager {r['ratio_vs_torch_eager']:.2f}" if "ratio_vs_torch_eager" in r else "")
               + (f", / torch compile {r['ratio_vs_torch_compile']:.2f}" if "ratio_vs_torch_compile" in r else "")
               for r in rows if r["runner"] == "jax" and r["precision"] == "f32" and "error" not in r
               and r["fraction_of_measured_matmul"] is not None]
    lines = (["## Langevin throughput (transformer energy, one chain step = forward + input gradient)", ""]
             + markdown_table(headers, body)
             + ["", "Ratios are time ratios (< 1: JAX faster). Host and device peaks are cumulative over the run.", ""])
    if gpu:
        return lines
    return lines + ["Targets on CPU (>= 75% of the measured product rate, ahead of PyTorch):", ""] + targets + [""]


def _cost_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    headers = ["size", "batch", "precision", "fwd GFLOP/jet (analytic)", "fwd (XLA)", "step GFLOP/jet (analytic)",
               "step (XLA)", "XLA / analytic", "step MB/jet (estimate)", "MB accessed/jet (XLA)",
               "grad rel. error vs f32 highest"]
    body = [[r["size"], r["batch"], r["precision"], r["analytic_forward_gflop_per_jet"], r["xla_forward_gflop_per_jet"],
             r["analytic_step_gflop_per_jet"], r["xla_step_gflop_per_jet"], r.get("xla_over_analytic_step"),
             r["analytic_step_mb_per_jet"], r["xla_step_mb_accessed_per_jet"], r["grad_rel_error_vs_highest"]]
            for r in rows]
    return (["## FLOP and byte counts: analytic vs XLA cost analysis", ""] + markdown_table(headers, body)
            + ["", "XLA also counts elementwise work; on a GPU it can miss library calls (cuBLAS), so the "
               "analytic count drives every rate above.", ""])


def _train_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    headers = ["size", "batch", "K", "runner", "s / iteration", "iterations / s", "paper schedule (h)", "GFLOP/s",
               "% matmul", "JAX / torch eager", "JAX / torch compile", "host peak MB"]
    body = [[r["size"], r["batch"], r["langevin_steps"], r["runner"], r["seconds_per_iteration"],
             r["iterations_per_s"], r["paper_schedule_hours"], r["gflops_per_s"],
             _pct(r["fraction_of_measured_matmul"]), r.get("ratio_vs_torch_eager"), r.get("ratio_vs_torch_compile"),
             r["host_peak_mb"]] if "error" not in r
            else [r["size"], None, None, r["runner"], "error: " + r["error"]] + [None] * 7 for r in rows]
    return (["## Training throughput (full jitted CD iteration)", ""] + markdown_table(headers, body)
            + ["", "Paper schedule: 300k jets / 128 per batch x 50 epochs = "
               f"{ebm_costs.paper_schedule_iterations()} iterations of K = 24 Langevin steps.", ""])


def _generation_table(row: dict | None) -> list[str]:
    if not row:
        return []
    note = (f"measured with {row['steps_measured']} steps, scaled linearly to {row['scaled_to_steps']}"
            if row["scaled"] else "measured at 200 steps")
    return (["## Generation (`jaxebm.inference.generate`, paper schedule of 200 steps)", ""]
            + markdown_table(["size", "batch", "us / jet at 200 steps", "jets / s", "note"],
                             [[row["size"], row["batch"], row["us_per_jet_at_200_steps"],
                               row["jets_per_s_at_200_steps"], note]]) + [""])


def _compile_table(payload: dict) -> list[str]:
    rows = [(f"langevin {r['size']} B={r['batch']} x{r['steps']} {r['precision']}", r)
            for r in payload.get("langevin", []) if r.get("runner") == "jax" and "error" not in r]
    rows += [(f"train step {r['size']} B={r['batch']}", r) for r in payload.get("train", [])
             if r.get("runner") == "jax" and "error" not in r]
    torch_rows = [(f"{r['runner']} {r['size']} B={r['batch']}" + (f" {r['precision']}" if "precision" in r else ""), r)
                  for r in payload.get("langevin", []) + payload.get("train", [])
                  if r.get("runner") == "torch_compile" and "error" not in r]
    if not rows:
        return []
    body = [[name, r["first_call"]["first_call_s"], r["first_call"]["trace_s"], r["first_call"]["lower_s"],
             r["first_call"]["compile_s"], r["first_call"]["num_compiles"], r["compiles_while_timed"],
             r["cache_size"]] for name, r in rows]
    body += [[name, r["first_call"]["first_call_s"], None, None, None, None, None, None] for name, r in torch_rows]
    return (["## Compile cost", ""] + markdown_table(
        ["program", "first call s", "trace s", "lower s", "XLA compile s", "compiles at first call",
         "compiles later", "jit cache size"], body)
            + ["", "'compiles later' counts XLA compilations during the warm-up and timed calls (0: no "
               "recompilation); the cache size is the jitted function's number of cached programs. Torch rows: "
               "the first call of the `torch.compile` runner, compilation included.", ""])
