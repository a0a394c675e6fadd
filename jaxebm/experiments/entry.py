"""The command line of a thin experiment entry point (``python -m experiments.<name>``): one parser and one
call of the runner, shared by every experiment's wrapper. It sits above both the runner (`jaxebm.runs`,
which knows no experiment) and the registry (`jaxebm.experiments`), and hands the one to the other.

    parser = run_parser(__doc__, "jetnet_bench")          # --preset --set --seeds --out --extend --force
    summary = run_from_args(parser.parse_args(argv), "jetnet_bench")
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxebm import experiments
from jaxebm.runs.runner import RunOptions, run_experiment

__all__ = ["run_from_args", "run_parser"]


def run_parser(doc: str, name: str, default_root: Path | None = None) -> argparse.ArgumentParser:
    """The parser of experiment ``name``'s entry point; its description is the first paragraph of ``doc``;
    ``default_root`` as in `run_from_args`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help=f"a preset of experiment {name!r} or a TOML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--out", type=Path, help=f"output directory (default {default_root or Path('runs') / name}/<preset name>)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--extend", action="store_true", help="continue a run: larger run.num_steps, more seeds")
    mode.add_argument("--force", action="store_true", help="new run; an old one in --out is renamed, not deleted")
    return parser


def run_from_args(args: argparse.Namespace, name: str, default_root: Path | None = None) -> dict:
    """Load the config ``args`` ask for and run it (`run_experiment`); the summary over seeds.
    ``default_root``: where ``--out`` defaults to (``<default_root>/<config name>``; ``runs/<name>``)."""
    overrides = list(args.overrides) + ([f"seeds={list(args.seeds)}"] if args.seeds else [])
    config = experiments.load(name, args.preset, overrides)
    options = RunOptions(mode="extend" if args.extend else "force" if args.force else "auto",
                         progress=sys.stderr.isatty())
    out = args.out or (default_root or Path("runs") / name) / config.name
    return run_experiment(experiments.get(name), config, out, options)
