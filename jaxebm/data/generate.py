"""Jet samples from Pythia 8 (pp) clustered with FastJet's anti-kT algorithm.

Each event's visible final-state particles (Pythia's ``isVisible``: neutrinos and other invisible
particles are left out) are clustered with anti-kT, E-scheme, radius ``jet_radius``. Clustering
runs inside Pythia (``Pythia8::SlowJet`` driving fjcore, the core of FastJet 3 that Pythia ships),
so no per-particle Python loop touches the event: only the constituents of selected jets cross
into Python. The tests check that the jets equal those of the scikit-hep ``fastjet`` package.

A jet is kept when ``jet_pt_min <= pt < jet_pt_max`` and ``|eta| < jet_abs_eta_max``; for a
process with ``match_pdg_ids`` (top, W, H) it must also lie within ``jet_radius`` (in eta-phi) of
such a resonance of the hard process and of every final parton that resonance decays to. Every
jet of an event that passes is kept, in falling pT; the constituents stored are the
``max_constituents`` hardest (default 200, the public top-tagging layout; at 550-650 GeV with
R = 0.8 almost no jet has more), ``jets[:, 4]`` keeps the full multiplicity.

Process cards: `jaxebm.data.processes`; clustering, window and truth matching per event:
`jaxebm.data.jet_selection`.

Multiparton interactions (the underlying event) are on by default; at R = 0.8 they raise the
W-jet median mass from ~82 to ~91 GeV. ``multiparton_interactions=False`` makes events ~4x faster.

Generation is split over ``num_workers`` processes: worker ``w`` produces its quota of jets from
the Pythia seed ``worker_seed(seed, w)``, and the shards are concatenated in worker order, so a
sample is reproducible for a given ``(seed, num_workers)``. Workers exit when the parent process
dies, even by SIGKILL.

Before any event is generated the configuration is checked (each bad value named) and so is the
output path: an existing file is replaced only with ``overwrite`` (``--overwrite``), and the
output directory must be writable.

Example (command line)::

    python -m jaxebm.data.generate --process qcd --num-jets 1000 --out data/qcd.h5 --workers 2 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import importlib.metadata
import math
import multiprocessing
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pythia8mc
from tqdm import tqdm

from jaxebm.data.io import JetSample, write_jets
from jaxebm.data.jet_selection import make_jet_finder, select_jets
from jaxebm.data.processes import PROCESSES

__all__ = [
    "GenerationConfig", "OutputPathError", "Shard", "build_parser", "check_output_path", "generate_jets",
    "generate_shard", "make_pythia", "pythia_settings", "worker_quotas",
    "worker_seed",
]

_MAX_PYTHIA_SEED = 900_000_000
_CLI_ALIASES = {"num_workers": ("--workers",), "extra_pythia_settings": ("--pythia",)}
_CLI_HELP = {  # one line per GenerationConfig field
    "process": "hard process (jets of a decaying resonance are matched to it)",
    "num_jets": "jets to write",
    "seed": "run seed (each worker's Pythia seed derives from it)",
    "num_workers": "Pythia processes in parallel",
    "jet_radius": "anti-kT radius R",
    "jet_pt_min": "lowest jet pT kept [GeV]",
    "jet_pt_max": "jet pT kept below this [GeV]",
    "jet_abs_eta_max": "jets kept with |eta| below this",
    "pt_hat_min": "lowest pT of the hard process [GeV]",
    "pt_hat_max": "highest pT of the hard process [GeV]",
    "max_constituents": "constituents stored per jet (the hardest)",
    "center_of_mass_energy": "pp collision energy [GeV]",
    "multiparton_interactions": "the underlying event (multiparton interactions)",
    "extra_pythia_settings": "one Pythia setting per flag, read after the process card (repeatable)",
    "max_events_without_jet": "stop with an error after this many events in a row without a kept jet",
}
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_PARENT_POLL_SECONDS = 0.5


class OutputPathError(ValueError):
    """The output path cannot take the sample: it exists (and overwriting was not asked for), it is a
    directory, or its directory cannot be written."""


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """What to generate. Energies and momenta in GeV.

    The defaults follow the public top-tagging data set (R = 0.8, 550-650 GeV, |eta| < 2);
    ``jet_radius = 1.0`` gives the EBM paper's jets. ``pt_hat_*`` bound the hard process's pT,
    ``max_constituents`` the stored constituents per jet, ``extra_pythia_settings`` are read after
    the process card (so they override it), and generation stops with an error after
    ``max_events_without_jet`` consecutive events without a kept jet.
    """

    process: str = "qcd"
    num_jets: int = 1000
    seed: int = 1
    num_workers: int = 1
    jet_radius: float = 0.8
    jet_pt_min: float = 550.0
    jet_pt_max: float = 650.0
    jet_abs_eta_max: float = 2.0
    pt_hat_min: float = 500.0
    pt_hat_max: float = 700.0
    max_constituents: int = 200
    center_of_mass_energy: float = 13000.0
    multiparton_interactions: bool = True
    extra_pythia_settings: tuple[str, ...] = ()
    max_events_without_jet: int = 20_000

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            raise ValueError(f"process: unknown {self.process!r}, choose from {sorted(PROCESSES)}")
        if self.num_jets < 1:
            raise ValueError(f"num_jets: must be >= 1, got {self.num_jets}")
        if not 1 <= self.num_workers <= self.num_jets:
            raise ValueError(
                f"num_workers: need 1 <= num_workers <= num_jets ({self.num_jets}), got {self.num_workers}")
        if self.seed < 0:
            raise ValueError(f"seed: must be >= 0, got {self.seed}")
        if not 0 < self.jet_pt_min < self.jet_pt_max:
            raise ValueError(f"jet_pt_min, jet_pt_max: need 0 < min < max, got {self.jet_pt_min}, {self.jet_pt_max}")
        if not 0 <= self.pt_hat_min < self.pt_hat_max:
            raise ValueError(f"pt_hat_min, pt_hat_max: need 0 <= min < max, got {self.pt_hat_min}, {self.pt_hat_max}")
        for name in (
            "jet_radius", "jet_abs_eta_max", "max_constituents", "center_of_mass_energy", "max_events_without_jet"
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{field.name}: must be a finite number, got {value}")


class Shard(NamedTuple):
    """One worker's jets: arrays as in ``JetSample`` plus the number of events it generated."""

    constituents: np.ndarray
    mask: np.ndarray
    jets: np.ndarray
    num_events: int


def worker_seed(seed: int, worker_index: int) -> int:
    """Pythia seed in ``1..900_000_000`` for worker ``worker_index`` of a run seeded ``seed``."""
    state = np.random.SeedSequence((seed, worker_index)).generate_state(1, dtype=np.uint64)[0]
    return int(state % _MAX_PYTHIA_SEED) + 1


def worker_quotas(num_jets: int, num_workers: int) -> tuple[int, ...]:
    """Jets per worker: as equal as possible, the first workers take the remainder."""
    base, remainder = divmod(num_jets, num_workers)
    return tuple(base + (worker < remainder) for worker in range(num_workers))


def pythia_settings(config: GenerationConfig, seed: int) -> tuple[str, ...]:
    """All ``readString`` lines for one Pythia instance: the run's settings, then the seed."""
    return (*_run_settings(config), "Random:setSeed = on", f"Random:seed = {seed}")


def make_pythia(settings: tuple[str, ...]) -> pythia8mc.Pythia:
    """An initialised Pythia instance; raises ValueError naming a setting Pythia rejects."""
    pythia = pythia8mc.Pythia("", False)
    for setting in settings:
        if not pythia.readString(setting):
            raise ValueError(f"Pythia rejected the setting {setting!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise with settings {settings}")
    return pythia


@contextlib.contextmanager
def _c_stdout_dropped():
    """Point file descriptor 1 at /dev/null meanwhile: Pythia's and FastJet's own printout (banners,
    initialisation tables) is written by C++ to it and would fill every log. Python's stdout is flushed first."""
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def generate_shard(
    config: GenerationConfig, worker_index: int, num_jets: int, progress_fn: Callable[[int], Any] | None = None
) -> Shard:
    """Generate ``num_jets`` jets with the Pythia seed of ``worker_index``, without the generators' banners.

    ``progress_fn(n)`` is called with the number of jets each event added.
    """
    with _c_stdout_dropped():
        return _generate_shard(config, worker_index, num_jets, progress_fn)


def _generate_shard(config: GenerationConfig, worker_index: int, num_jets: int,
                    progress_fn: Callable[[int], Any] | None) -> Shard:
    pythia = make_pythia(pythia_settings(config, worker_seed(config.seed, worker_index)))
    jet_finder = make_jet_finder(config.jet_radius, config.jet_pt_min)
    constituents = np.zeros((num_jets, config.max_constituents, 4), np.float32)
    mask = np.zeros((num_jets, config.max_constituents), bool)
    jets = np.zeros((num_jets, 5), np.float32)
    num_kept = num_events = events_since_jet = 0
    while num_kept < num_jets:
        if events_since_jet >= config.max_events_without_jet:
            raise RuntimeError(f"{config.process}: no jet passed the cuts in {events_since_jet} events; check {config}")
        num_events += 1
        events_since_jet += 1
        if not pythia.next():
            continue
        new_jets = select_jets(pythia, jet_finder, config)[: num_jets - num_kept]
        for summary, momenta in new_jets:
            jets[num_kept] = summary
            constituents[num_kept, : len(momenta)] = momenta
            mask[num_kept, : len(momenta)] = True
            num_kept += 1
        if new_jets:
            events_since_jet = 0
            if progress_fn is not None:
                progress_fn(len(new_jets))
    return Shard(constituents, mask, jets, num_events)


def check_output_path(out_path: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Raise `OutputPathError` if ``out_path`` exists and ``overwrite`` is False, is a directory, or
    lies in a directory that cannot be written (created if missing, then probed with a temporary file)."""
    out_path = os.path.abspath(out_path)
    if os.path.isdir(out_path):
        raise OutputPathError(f"{out_path}: is a directory, give a file path")
    if os.path.exists(out_path) and not overwrite:
        raise OutputPathError(f"{out_path}: exists; pass --overwrite (overwrite=True) to replace it")
    directory = os.path.dirname(out_path)
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise OutputPathError(f"{out_path}: the output directory {directory} is not writable ({error})") from error


def generate_jets(
    config: GenerationConfig, out_path: str | os.PathLike[str] | None = None, progress: bool = True,
    overwrite: bool = False,
) -> JetSample:
    """Generate ``config.num_jets`` jets over ``config.num_workers`` processes.

    Returns the sample (and writes it atomically to ``out_path`` if given; `check_output_path` runs
    first, so an existing file raises unless ``overwrite``). ``attrs`` records the configuration,
    the worker seeds, the number of events, generator versions and creation time.
    """
    if out_path is not None:
        check_output_path(out_path, overwrite)
    quotas = worker_quotas(config.num_jets, config.num_workers)
    with tqdm(total=config.num_jets, unit="jet", desc=config.process, disable=not progress) as bar:
        if config.num_workers == 1:
            shards = [generate_shard(config, 0, config.num_jets, bar.update)]
        else:
            shards = _run_workers(config, quotas, bar.update)
    sample = JetSample(
        constituents=np.concatenate([shard.constituents for shard in shards]),
        mask=np.concatenate([shard.mask for shard in shards]),
        jets=np.concatenate([shard.jets for shard in shards]),
        labels=None,
        attrs=_provenance(config, sum(shard.num_events for shard in shards)),
    )
    if out_path is not None:
        write_jets(out_path, sample)
    return sample


def _run_workers(config: GenerationConfig, quotas: tuple[int, ...], progress_fn: Callable[[int], Any]) -> list[Shard]:
    """Run one spawned process per quota; return their shards in worker order."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    workers = [
        context.Process(target=_worker_main, args=(config, index, quota, messages, os.getpid()), daemon=True)
        for index, quota in enumerate(quotas)
    ]
    for worker in workers:
        worker.start()
    shards: dict[int, Shard] = {}
    try:
        while len(shards) < len(workers):
            try:
                kind, index, payload = messages.get(timeout=1.0)
            except queue.Empty:
                crashed = [(i, w.exitcode) for i, w in enumerate(workers) if w.exitcode not in (None, 0)]
                if crashed:
                    raise RuntimeError(f"generation worker {crashed[0][0]} died with exit code {crashed[0][1]}")
                continue
            if kind == "error":
                raise RuntimeError(f"generation worker {index} failed:\n{payload}")
            if kind == "progress":
                progress_fn(payload)
            else:
                shards[index] = payload
    finally:
        for worker in workers:
            if worker.is_alive() and len(shards) < len(workers):
                worker.terminate()
            worker.join()
    return [shards[index] for index in range(len(workers))]


def _worker_main(config: GenerationConfig, worker_index: int, num_jets: int, messages: Any, parent_pid: int) -> None:
    """Process entry point: send progress, then the shard (or the traceback) to ``messages``; exit
    when the process ``parent_pid`` that started this one dies."""
    _exit_with_parent(parent_pid)
    try:
        shard = generate_shard(config, worker_index, num_jets, lambda n: messages.put(("progress", worker_index, n)))
        messages.put(("shard", worker_index, shard))
    except Exception:  # noqa: BLE001 - the parent re-raises it with the worker's traceback
        messages.put(("error", worker_index, traceback.format_exc()))


def _exit_with_parent(parent_pid: int) -> None:
    """End this process when its parent ``parent_pid`` dies, even by SIGKILL (``daemon=True`` does not).

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); on every
    platform a daemon thread also polls the parent pid, which covers a parent that died before the
    ``prctl`` call.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    """Exit the process at once, without cleanup, as soon as ``parent_pid`` is no longer its parent."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)


def _run_settings(config: GenerationConfig) -> tuple[str, ...]:
    """Beams, pTHat range, MPI switch and quiet output, then the process card, then the extras."""
    common = (
        f"Beams:eCM = {config.center_of_mass_energy}",
        f"PhaseSpace:pTHatMin = {config.pt_hat_min}",
        f"PhaseSpace:pTHatMax = {config.pt_hat_max}",
        f"PartonLevel:MPI = {'on' if config.multiparton_interactions else 'off'}",
        "Next:numberCount = 0",
        "Print:quiet = on",
        "Init:showChangedSettings = off",
    )
    return (*common, *PROCESSES[config.process].pythia_settings, *config.extra_pythia_settings)


def _provenance(config: GenerationConfig, num_events: int) -> dict[str, Any]:
    pythia_version = importlib.metadata.version("pythia8mc")
    return {
        **dataclasses.asdict(config),
        "process_description": PROCESSES[config.process].description,
        "match_pdg_ids": PROCESSES[config.process].match_pdg_ids,
        "pythia_settings": _run_settings(config),
        "worker_seeds": tuple(worker_seed(config.seed, w) for w in range(config.num_workers)),
        "num_events": num_events,
        "generator": f"Pythia {pythia_version.rsplit('.', 1)[0]} (pythia8mc {pythia_version})",
        "generator_version": pythia_version,
        "jet_definition": f"anti-kt R={config.jet_radius}, E-scheme, visible final-state particles, fjcore in Pythia",
        "creation_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is in ``--help``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str = "python -m jaxebm.data.generate", epilog: str | None = None) -> argparse.ArgumentParser:
    """The options: one per ``GenerationConfig`` field (help text and default), ``--out``, ``--overwrite``, ``--quiet``."""
    parser = _Parser(prog=prog, description=__doc__.split("\n")[0], epilog=epilog,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output HDF5 path (written atomically; required)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    for field in dataclasses.fields(GenerationConfig):
        flags = [f"--{field.name.replace('_', '-')}", *_CLI_ALIASES.get(field.name, ())]
        default = "none" if field.type == "tuple[str, ...]" else field.default
        kwargs = {"help": f"{_CLI_HELP[field.name]} (default: {default})"}
        if field.type == "bool":
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=field.default, **kwargs)
        elif field.type == "tuple[str, ...]":
            parser.add_argument(*flags, action="append", default=[], **kwargs)
        elif field.name == "process":
            parser.add_argument(*flags, choices=sorted(PROCESSES), default=field.default, **kwargs)
        else:
            parser.add_argument(*flags, type=type(field.default), default=field.default, **kwargs)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> None:
    """Command line (`build_parser`). Bad values and unusable output paths exit with status 2 before any event
    is made; the progress bar shows on a terminal only."""
    parser = parser or build_parser()
    args = vars(parser.parse_args(argv))
    out_path, overwrite, quiet = args.pop("out"), args.pop("overwrite"), args.pop("quiet")
    try:
        config = GenerationConfig(**{**args, "extra_pythia_settings": tuple(args["extra_pythia_settings"])})
        check_output_path(out_path, overwrite)
    except ValueError as error:
        parser.error(str(error))
    progress = not quiet and sys.stderr.isatty()
    sample = generate_jets(config, out_path=out_path, progress=progress, overwrite=overwrite)
    print(f"wrote {len(sample.jets)} {config.process} jets from {sample.attrs['num_events']} events to {out_path}")


if __name__ == "__main__":
    main()
