"""Shared benchmark helpers: timing, compile accounting, machine facts, memory, result writers.

Timing rules (all suites): the compiling call and ``warmup`` further calls are excluded; every timed
call is synchronised (``jax.block_until_ready`` or the runner's own sync) before the clock stops;
the reported figure is the median of the timed calls; calls of competing runners alternate, so
load from other processes on a shared machine hits all of them alike.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import resource
import statistics
import time
from typing import Any, Callable

import jax
import jax.monitoring

RESULTS_DIR = pathlib.Path(__file__).parent / "results"

__all__ = ["RESULTS_DIR", "CompileCounter", "time_alternating", "timed_first_call", "machine_info",
           "host_peak_memory_mb", "device_memory_stats", "executable_stats", "write_json",
           "markdown_table"]

_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
_LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Counts JAX tracing, lowering and XLA compilations while active (a context manager).

    Fields after exit: ``trace_s``, ``lower_s``, ``compile_s`` (seconds summed over events) and
    ``num_compiles`` (XLA backend compilations). Uses ``jax.monitoring`` duration events, which
    fire on real work only: a cache hit records nothing.
    """

    def __init__(self):
        self.trace_s = self.lower_s = self.compile_s = 0.0
        self.num_compiles = 0

    def _listen(self, event: str, duration: float, **_) -> None:
        if event == _TRACE_EVENT:
            self.trace_s += duration
        elif event == _LOWER_EVENT:
            self.lower_s += duration
        elif event == _COMPILE_EVENT:
            self.compile_s += duration
            self.num_compiles += 1

    def __enter__(self) -> "CompileCounter":
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)

    def as_dict(self) -> dict:
        return {"trace_s": self.trace_s, "lower_s": self.lower_s, "compile_s": self.compile_s,
                "num_compiles": self.num_compiles}


def timed_first_call(run: Callable[[], Any],
                     sync: Callable[[Any], Any] = jax.block_until_ready) -> tuple[dict, Any]:
    """(seconds of the first, compiling call of ``run`` and the JAX compile events it caused, its output)."""
    with CompileCounter() as counter:
        start = time.perf_counter()
        output = run()
        sync(output)
        seconds = time.perf_counter() - start
    return {"first_call_s": seconds, **counter.as_dict()}, output


def time_alternating(runs: dict[str, Callable[[], Any]], repeats: int, *, warmup: int = 1,
                     syncs: dict[str, Callable[[Any], Any]] | None = None, pause_s: float = 0.05) -> dict[str, dict]:
    """Median wall seconds of each runner after ``warmup`` untimed calls, runners alternating.

    An untimed pause of ``pause_s`` seconds before each call lets the previous runner's worker
    threads (XLA's pool, torch's OpenMP team), which spin for a while after their work, go idle, so
    one framework's threads do not steal cores from the other's timed call.

    ``runs`` maps a name to a no-argument callable (already compiled: call ``timed_first_call``
    first); ``syncs`` optionally maps a name to its synchronisation (default
    ``jax.block_until_ready``). Returns per name ``{"median_s", "times_s", "compiles_while_timed"}``,
    the last counting XLA compilations during the warm-up and timed calls (0 proves no retracing).
    """
    syncs = syncs or {}
    times = {name: [] for name in runs}
    with CompileCounter() as counter:
        for _ in range(warmup):
            for name, run in runs.items():
                time.sleep(pause_s)
                syncs.get(name, jax.block_until_ready)(run())
        for _ in range(repeats):
            for name, run in runs.items():
                time.sleep(pause_s)
                start = time.perf_counter()
                syncs.get(name, jax.block_until_ready)(run())
                times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "times_s": t,
                   "compiles_while_timed": counter.num_compiles} for name, t in times.items()}


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(packages: tuple[str, ...] = ("jax", "jaxlib", "flax", "optax", "numpy", "torch")) -> dict:
    """Date, host, CPU, load, memory, JAX device and package versions (None when not installed)."""
    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "host_memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "jax_platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "default_matmul_precision": getattr(jax.config, "jax_default_matmul_precision", None),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "versions": {name: _version(name) for name in packages},
    }


def host_peak_memory_mb() -> float:
    """Peak resident memory of this process so far, MiB (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_memory_stats() -> dict | None:
    """``bytes_in_use`` and ``peak_bytes_in_use`` of device 0 in MiB, or None (e.g. on CPU)."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return {key + "_mb": stats[key] / 2**20 for key in ("bytes_in_use", "peak_bytes_in_use") if key in stats}


def executable_stats(compiled) -> dict:
    """XLA's cost analysis (flops, bytes accessed) and memory analysis (MiB) of a compiled program.

    ``compiled`` is ``jitted.lower(*args).compile()``; after a first call of ``jitted`` with the same
    shapes this reuses the cached executable. Fields XLA does not report are None.
    """
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
    out = {"xla_flops": cost.get("flops"), "xla_bytes_accessed": cost.get("bytes accessed")}
    try:
        memory = compiled.memory_analysis()
    except Exception:  # not implemented on every backend
        memory = None
    for field in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes"):
        value = getattr(memory, field, None)
        out[field.replace("_size_in_bytes", "_mb")] = None if value is None else value / 2**20
    return out


def write_json(path: pathlib.Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically (a partial run leaves a readable file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Lines of a markdown table; floats are printed with 3 significant digits, None as '-'."""
    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e5 else f"{value:.3e}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines
