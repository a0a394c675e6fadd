"""The experiment runner shared by every experiment: run directories, provenance, lock, seeds, resume,
extension, data-file checks, and the commands on trained runs (evaluate, sample, report).

  runner   `Experiment` (what an experiment supplies), `RunOptions`, `run_experiment`.
  trained  `evaluate_run`, `sample_run`, `report_runs`, `experiment_of`: commands on existing runs.
  data     `DataFile`: a data file with the HDF5 attributes it must carry and how to make it.
  state    `RunState`: what a run directory already holds. records: config.json / run.json / history.
  lock     `RunLock`: one writer per run directory. errors: `RunRefused` (usage), `RunError` (runtime).
"""
from jaxebm.runs.data import DataFile
from jaxebm.runs.errors import DataFileMismatch, RunError, RunLocked, RunRefused
from jaxebm.runs.lock import RunLock
from jaxebm.runs.runner import Experiment, RunOptions, SeedJob, run_experiment
from jaxebm.runs.state import RunState

__all__ = ["DataFile", "DataFileMismatch", "Experiment", "RunError", "RunLock", "RunLocked", "RunOptions",
           "RunRefused", "RunState", "SeedJob", "run_experiment"]
