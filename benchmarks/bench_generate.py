"""Jet generation throughput against the bare Pythia event rate (QCD card, one run, one machine).

Measures, alternating the measurements over ``--repeats`` rounds and keeping each one's best:
  (a) bare ``pythia.next()`` events/s with the generator's QCD settings (initialisation excluded);
  (b) the full generator (``generate_jets``, 1 worker): events/s with Pythia's initialisation time
      taken out, its ratio to (a), and jets/s end to end;
  (c) jets/s end to end with 2 worker processes (spawn and initialisation included);
and, for context, (d) the bare rate with multiparton interactions off and (e) the rate of the
previous design: a per-particle Python loop feeding scikit-hep ``fastjet``.

Writes ``benchmarks/results/generate.json`` and ``generate.md``.

    python -m benchmarks.bench_generate            # ~1-2 minutes on 2 cores
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import time

import fastjet

from jaxebm.data.generate import GenerationConfig, generate_jets, make_pythia, pythia_settings

RESULTS_DIR = pathlib.Path(__file__).parent / "results"


def bare_event_rate(config: GenerationConfig, num_events: int) -> tuple[float, float]:
    """(events/s of ``pythia.next()`` alone, initialisation seconds)."""
    start = time.perf_counter()
    pythia = make_pythia(pythia_settings(config, seed=12345))
    init_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(num_events):
        pythia.next()
    return num_events / (time.perf_counter() - start), init_seconds


def python_loop_event_rate(config: GenerationConfig, num_events: int) -> float:
    """Events/s when every particle crosses into Python and scikit-hep fastjet clusters them."""
    pythia = make_pythia(pythia_settings(config, seed=12345))
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, config.jet_radius)
    start = time.perf_counter()
    for _ in range(num_events):
        pythia.next()
        event = pythia.event
        inputs = []
        for index in range(event.size()):
            particle = event[index]
            if particle.isFinal() and particle.isVisible():
                inputs.append(fastjet.PseudoJet(particle.px(), particle.py(), particle.pz(), particle.e()))
        sequence = fastjet.ClusterSequence(inputs, definition)
        sequence.inclusive_jets(config.jet_pt_min)
    return num_events / (time.perf_counter() - start)


def generator_rates(config: GenerationConfig, init_seconds: float) -> dict[str, float]:
    """Events/s (initialisation excluded) and jets/s (end to end) of ``generate_jets``."""
    start = time.perf_counter()
    sample = generate_jets(config, progress=False)
    wall = time.perf_counter() - start
    return {
        "events_per_s": sample.attrs["num_events"] / (wall - init_seconds),
        "jets_per_s": config.num_jets / wall,
        "jets_per_event": config.num_jets / sample.attrs["num_events"],
        "wall_s": wall,
    }


def run(num_events: int, num_jets: int, repeats: int) -> dict:
    qcd = GenerationConfig(process="qcd", num_jets=num_jets, seed=1)
    rounds = []
    for _ in range(repeats):
        bare, init_seconds = bare_event_rate(qcd, num_events)
        one_worker = generator_rates(qcd, init_seconds)
        two_workers = generator_rates(dataclasses.replace(qcd, num_jets=2 * num_jets, num_workers=2), init_seconds)
        rounds.append({"bare": bare, "init_s": init_seconds, "one": one_worker, "two": two_workers})
    bare = max(r["bare"] for r in rounds)
    one = max((r["one"] for r in rounds), key=lambda r: r["events_per_s"])
    two = max((r["two"] for r in rounds), key=lambda r: r["jets_per_s"])
    no_mpi, _ = bare_event_rate(dataclasses.replace(qcd, multiparton_interactions=False), num_events)
    return {
        "process": "qcd",
        "config": dataclasses.asdict(qcd),
        "bare_next_events_per_s": bare,
        "pythia_init_s": min(r["init_s"] for r in rounds),
        "generator_1_worker": one,
        "generator_fraction_of_bare": one["events_per_s"] / bare,
        "generator_2_workers": two,
        "scaling_2_over_1_workers": two["jets_per_s"] / one["jets_per_s"],
        "bare_next_events_per_s_mpi_off": no_mpi,
        "python_loop_scikit_fastjet_events_per_s": python_loop_event_rate(qcd, num_events // 2),
        "rounds": rounds,
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' where there is none)."""
    if not os.path.exists("/proc/cpuinfo"):
        return ""
    with open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return names[0] if names else ""


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "versions": {p: importlib.metadata.version(p) for p in ("pythia8mc", "fastjet", "numpy", "h5py")},
    }


def markdown(result: dict) -> str:
    one, two = result["generator_1_worker"], result["generator_2_workers"]
    info = result["machine"]
    return "\n".join([
        "# Jet generation throughput (QCD, 550-650 GeV, anti-kT R = 0.8, MPI on)",
        "",
        f"{info['date']}, {info['cpu_model'] or info['processor']}, {info['nproc']} cores "
        f"(1-min load {info['load_average_1min_at_start']:.2f} at start: other jobs share the cores), "
        f"pythia8mc {info['versions']['pythia8mc']}, fastjet {info['versions']['fastjet']}.",
        "",
        "| measurement | rate |",
        "|---|---|",
        f"| (a) bare `pythia.next()` | {result['bare_next_events_per_s']:.1f} events/s |",
        f"| (b) generator, 1 worker (init excluded) | {one['events_per_s']:.1f} events/s = "
        f"**{100 * result['generator_fraction_of_bare']:.0f}%** of bare |",
        f"| (b) generator, 1 worker, end to end | {one['jets_per_s']:.1f} jets/s "
        f"({one['jets_per_event']:.2f} jets/event) |",
        f"| (c) generator, 2 workers, end to end | {two['jets_per_s']:.1f} jets/s "
        f"(x{result['scaling_2_over_1_workers']:.2f} over 1 worker) |",
        f"| (d) bare `pythia.next()`, MPI off | {result['bare_next_events_per_s_mpi_off']:.1f} events/s |",
        f"| (e) per-particle Python loop + scikit-hep fastjet | "
        f"{result['python_loop_scikit_fastjet_events_per_s']:.1f} events/s |",
        "",
        f"Pythia initialisation: {result['pythia_init_s']:.2f} s per worker. Best of "
        f"{len(result['rounds'])} alternating rounds per measurement.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-events", type=int, default=800, help="events for the bare-rate loops")
    parser.add_argument("--num-jets", type=int, default=800, help="jets per worker for the generator runs")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    result = {"machine": machine(), **run(args.num_events, args.num_jets, args.repeats)}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "generate.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS_DIR / "generate.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
