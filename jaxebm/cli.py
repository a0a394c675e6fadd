"""The ``jaxebm`` command: jet data, training runs, samples, evaluation, reports, benchmarks and the demo.

    jaxebm data generate --process qcd --num-jets 1000 --jet-radius 1.0 --workers 2 --out data/qcd.h5
    jaxebm data info data/qcd.h5
    jaxebm data convert test.h5 data/top_tagging_test.h5
    jaxebm train ebm --preset cpu --set run.num_steps=200 --out runs/ebm_short
    jaxebm train ebm --out runs/ebm_short --extend --set run.num_steps=400
    jaxebm sample runs/ebm_short --num-jets 1000
    jaxebm evaluate runs/ebm_short
    jaxebm report runs/ebm_short
    jaxebm bench --quick
    jaxebm demo

Exit codes: 0 done; 2 a usage error (an unknown option, experiment, preset or config key, a value of the
wrong type or range, a run directory that needs --extend or --force), reported in one line without a
traceback; 1 a failure while running (a locked run directory, a missing or corrupt data file, a diverged
training, an unexpected error). No error prints a traceback unless ``jaxebm --debug COMMAND`` asks for it. Progress bars appear on a terminal only and never with --quiet; status lines are plain text.
Every command's ``--help`` ends with an example.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

__all__ = ["UsageError", "build_parser", "find_checkout", "main"]


class UsageError(Exception):
    """A command line that cannot work as given (exit code 2)."""


def _progress(args) -> bool:
    """Progress bars: on a terminal, unless --quiet (the runner passes the switch down to every bar)."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _mode(args) -> str:
    """The runner mode of the --resume / --extend / --force flags ("auto" without them)."""
    return "resume" if args.resume else "extend" if args.extend else "force" if args.force else "auto"


def _data_generate(args) -> int:
    """``jaxebm data generate``: the generator's command line (`jaxebm.data.generate.build_parser`)."""
    from jaxebm.data import generate

    generate.main(args.rest, generate.build_parser("jaxebm data generate", f"example:\n  {_GENERATE_EXAMPLE}"))
    return 0


_GENERATE_EXAMPLE = "jaxebm data generate --process top --num-jets 10000 --jet-radius 1.0 --workers 2 --out data/top.h5"


def _data_info(args) -> int:
    """``jaxebm data info``: a few lines (or a JSON object) per jet file."""
    from jaxebm.data.convert import describe

    for path in args.files:
        info = describe(path)
        if args.json:
            print(json.dumps(info, default=list))
            continue
        print(f"{info['path']}: {info['format']} layout, {info['num_jets']} jets x {info['num_slots']} slots"
              + (f", labels {info['labels']}" if info["labels"] else ""))
        for name, (low, median, high) in info["quantiles_16_50_84"].items():
            print(f"  {name:<13} median {median:g} (16-84%: {low:g} - {high:g})")
        for key in ("process", "generator", "seed", "jet_radius", "jet_pt_min", "jet_pt_max", "source_format",
                    "creation_time"):
            if key in info["attrs"]:
                print(f"  {key:<13} {info['attrs'][key]}")
    return 0


def _data_convert(args) -> int:
    """``jaxebm data convert``: a public layout into a schema file."""
    from jaxebm.data.convert import convert, detect_format

    if args.start < 0 or (args.stop is not None and args.stop <= args.start):
        raise UsageError(f"--start must be >= 0 and --stop above it, got --start {args.start} --stop {args.stop}")
    fmt = args.source_format or detect_format(args.source)
    sample = convert(args.source, args.target, fmt, start=args.start, stop=args.stop, overwrite=args.overwrite)
    print(f"wrote {len(sample.jets)} jets ({fmt} layout) to {args.target}")
    return 0


def _train(args) -> int:
    """``jaxebm train``: config from a preset (or the run's own record) and overrides, then the runner."""
    from jaxebm import experiments
    from jaxebm.runs import RunOptions, run_experiment

    overrides = list(args.overrides) + ([f"seeds={list(args.seeds)}"] if args.seeds else [])
    if args.preset is None and args.out is not None and (args.out / "config.json").is_file():
        config = experiments.load_recorded(args.experiment, args.out, overrides)
    else:
        config = experiments.load(args.experiment, args.preset or "cpu", overrides)
    out = args.out or Path("runs") / args.experiment / config.name
    run_experiment(experiments.get(args.experiment), config, out, RunOptions(_mode(args), _progress(args)))
    print(f"report: {out / 'report.md'}")
    return 0


def _sample(args) -> int:
    """``jaxebm sample``: jets from a trained seed into a schema file."""
    from jaxebm import experiments
    from jaxebm.runs.trained import sample_run

    out = sample_run(experiments.for_run(args.run), args.run, args.num_jets, seed=args.seed, rng=args.rng,
                     out=args.out, progress=_progress(args), overwrite=args.overwrite)
    print(f"wrote {args.num_jets} generated jets to {out}")
    return 0


def _evaluate(args) -> int:
    """``jaxebm evaluate``: the trained seeds evaluated again, then the summary."""
    from jaxebm import experiments
    from jaxebm.runs import RunOptions
    from jaxebm.runs.trained import evaluate_run

    evaluate_run(experiments.for_run(args.run), args.run, RunOptions(progress=_progress(args)))
    print(f"report: {args.run / 'report.md'}")
    return 0


def _report(args) -> int:
    """``jaxebm report``: the report over the finished seeds of the given runs."""
    from jaxebm import experiments
    from jaxebm.runs.trained import report_runs

    if args.out is None and (len(args.runs) > 1 or (args.runs[0] / "results.json").exists()):
        raise UsageError("a report over several runs, or over seed directories, needs --out DIR")
    out = args.out or args.runs[0]
    report_runs(experiments.for_run(args.runs[0]), args.runs, out)
    print(f"report: {out / 'report.md'}")
    return 0


def find_checkout() -> Path | None:
    """The source checkout holding ``benchmarks/bench_ebm.py``: the working directory or the package's parent."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / "benchmarks" / "bench_ebm.py").is_file():
            return root
    return None


def _bench(args) -> int:
    """``jaxebm bench``: python -m benchmarks.bench_ebm in the checkout, with the same options."""
    root = find_checkout()
    if root is None:
        print("jaxebm bench: the benchmarks are part of a source checkout (benchmarks/bench_ebm.py), not of the "
              "installed package: run it from a clone of the repository", file=sys.stderr)
        return 1
    return subprocess.call([sys.executable, "-m", "benchmarks.bench_ebm", *args.rest], cwd=root)


def _demo(args) -> int:
    """``jaxebm demo``: the cpu preset (``--quick``: smoke) for seed 0, as ``jaxebm train`` would run it."""
    args.experiment, args.preset = "ebm", "smoke" if args.quick else "cpu"
    args.overrides, args.seeds = [], [0]
    args.out = args.out or Path("runs/demo-quick" if args.quick else "runs/demo")
    args.resume = args.extend = args.force = False
    return _train(args)


def _command(subparsers, name: str, handler, help_text: str, example: str, *, more: str = "",
             **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser whose help ends with ``more`` and ``example``."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text, epilog=f"{more}example:\n  {example}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    parser.set_defaults(handler=handler)
    return parser


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    """The --quiet flag: no progress bars."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars (status lines stay)")


def _data_commands(subparsers) -> None:
    """``jaxebm data generate | info | convert``."""
    data = subparsers.add_parser("data", help="generate, inspect and convert jet files",
                                 description="Jet files in the jaxebm HDF5 schema.", epilog="example:\n  "
                                 "jaxebm data info runs/data/ebm_r10/qcd_train.h5",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="{generate,info,convert}")
    generate = _command(data_commands, "generate", _data_generate, "Pythia 8 + FastJet jets into a schema file",
                        _GENERATE_EXAMPLE, add_help=False)
    generate.set_defaults(passthrough=True)  # every option goes to jaxebm.data.generate.build_parser
    info = _command(data_commands, "info", _data_info, "jets, slots, labels, pT / mass / multiplicity, provenance",
                    "jaxebm data info runs/data/ebm_r10/qcd_train.h5")
    info.add_argument("files", nargs="+", type=Path, help="jet files (schema, top-tagging or JetNet layout)")
    info.add_argument("--json", action="store_true", help="one JSON object per file")
    convert = _command(data_commands, "convert", _data_convert, "public top-tagging / JetNet files into the schema",
                       "jaxebm data convert train.h5 data/top_tagging_train.h5 --stop 100000")
    convert.add_argument("source", type=Path, help="jet file in one of the layouts of --from")
    convert.add_argument("target", type=Path, help="schema file to write (never the source)")
    convert.add_argument("--from", dest="source_format", choices=("top-tagging", "jetnet", "jaxebm"),
                         help="layout of SOURCE (default: detected from its datasets)")
    convert.add_argument("--start", type=int, default=0, help="first jet (default 0)")
    convert.add_argument("--stop", type=int, default=None, help="one past the last jet (default: all)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing TARGET")


def _experiment_list() -> str:
    """A line per experiment: name, what it is, its presets (for ``jaxebm train --help``)."""
    from jaxebm import experiments

    width = max(map(len, experiments.EXPERIMENTS))
    return "experiments (jaxebm train NAME --preset PRESET):\n" + "".join(
        f"  {name:<{width}}  {experiments.DESCRIPTIONS[name]}\n  {'':<{width}}  presets: "
        f"{', '.join(experiments.presets(name))}\n" for name in experiments.EXPERIMENTS) + "\n"


def _run_commands(subparsers) -> None:
    """``jaxebm train | sample | evaluate | report | bench | demo``."""
    from jaxebm import experiments

    train = _command(subparsers, "train", _train, "train and evaluate an experiment's seeds into a run directory",
                     "jaxebm train ebm --preset cpu --seeds 0 --set run.num_steps=600 --out runs/ebm_600",
                     more=_experiment_list())
    train.add_argument("experiment", help=f"experiment name: {', '.join(experiments.EXPERIMENTS)} (below)")
    train.add_argument("--preset", help="preset name or a .toml path (default: the config recorded in --out, "
                       "to resume or extend a run without repeating it; else cpu)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one config value (repeatable; default: none)")
    train.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds (default: the preset's)")
    train.add_argument("--out", type=Path, help="run directory (default runs/<experiment>/<preset name>)")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="require an existing run with the same config "
                      "(default: resume one if --out holds it, else start one)")
    mode.add_argument("--extend", action="store_true", help="continue a run: a larger run.num_steps, more seeds")
    mode.add_argument("--force", action="store_true", help="new run; an old one in --out is renamed, not deleted")
    _add_quiet(train)
    sample = _command(subparsers, "sample", _sample, "generate jets from a trained run's selected checkpoint",
                      "jaxebm sample runs/demo --num-jets 1000 --out runs/demo/generated.h5")
    sample.add_argument("run", type=Path, help="run directory or seed directory")
    sample.add_argument("--num-jets", type=int, required=True, help="jets to generate (required)")
    sample.add_argument("--out", type=Path, help="schema file (default <seed dir>/generated_<N>.h5)")
    sample.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sample.add_argument("--seed", type=int, help="which trained seed of RUN (default: the first)")
    sample.add_argument("--rng", type=int, default=0, help="PRNG seed of the chains (default 0)")
    _add_quiet(sample)
    evaluate = _command(subparsers, "evaluate", _evaluate, "evaluate a run's trained seeds again, then its report",
                        "jaxebm evaluate runs/demo")
    evaluate.add_argument("run", type=Path, help="run directory")
    _add_quiet(evaluate)
    report = _command(subparsers, "report", _report, "markdown report with plots over one run or a seed sweep",
                      "jaxebm report runs/ebm_s0 runs/ebm_s1/seed_1 --out runs/ebm_sweep")
    report.add_argument("runs", nargs="+", type=Path, help="run directories or seed directories")
    report.add_argument("--out", type=Path, help="directory of the report (default: the one run)")
    bench = _command(subparsers, "bench", _bench, "the EBM benchmark suite (benchmarks/bench_ebm.py, a checkout)",
                     "jaxebm bench --quick", add_help=False)
    bench.set_defaults(passthrough=True)  # every option goes to python -m benchmarks.bench_ebm
    demo = _command(subparsers, "demo", _demo, "the main job: Pythia jets, EBM training, generation, report "
                    "(the cpu preset, seed 0, ~27 min on 2 cores)", "jaxebm demo --quick   # smoke preset, ~2 min")
    demo.add_argument("--quick", action="store_true", help="the seconds-scale smoke preset into runs/demo-quick")
    demo.add_argument("--out", type=Path, help="run directory (default runs/demo)")
    _add_quiet(demo)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(prog="jaxebm", description=__doc__.split("\n\n")[0],
                                     epilog="example:\n  jaxebm demo --quick",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True,
                                       metavar="{data,train,sample,evaluate,report,bench,demo}")
    _data_commands(subparsers)
    _run_commands(subparsers)
    return parser


def _exit_code(error: Exception) -> int | None:
    """2 for a usage error, 1 for a known failure while running, None for anything else (a bug: re-raised)."""
    from jaxebm.config import ConfigError
    from jaxebm.data.io import JetFileError
    from jaxebm.runs.errors import RunError, RunRefused

    if isinstance(error, ConfigError | RunRefused | FileExistsError | UsageError):
        return 2
    if isinstance(error, RunError | JetFileError | FileNotFoundError):
        return 1
    from jaxebm.train import CheckpointError, TrainingDiverged

    return 1 if isinstance(error, CheckpointError | TrainingDiverged) else None


def _code(exit_: SystemExit) -> int:
    """The exit code a `SystemExit` carries (argparse: 0 for --help, 2 for a usage error)."""
    return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1


def main(argv: list[str] | None = None) -> int:
    """Run ``jaxebm`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args, args.rest = parser.parse_known_args(argv)
        if args.rest and not getattr(args, "passthrough", False):
            parser.error(f"unrecognized arguments: {' '.join(args.rest)}")
    except SystemExit as exit_:  # --help (0) and usage errors (2), argparse's message already printed
        return _code(exit_)
    try:
        return args.handler(args)
    except SystemExit as exit_:  # a delegated command's own argparse
        return _code(exit_)
    except KeyboardInterrupt:
        print("jaxebm: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - errors become a message and an exit code
        if args.debug:
            raise
        code = _exit_code(error)
        if code is None:
            print(f"jaxebm {args.command}: unexpected error ({type(error).__name__}): {error}\n"
                  f"Run `jaxebm --debug {args.command} ...` to see the traceback, and report it", file=sys.stderr)
            return 1
        print(f"jaxebm {args.command}: error: {error}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
