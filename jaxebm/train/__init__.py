"""Training of energy-based models: state, jitted contrastive-divergence step, checkpoints, driver.

Modules:
  state       `TrainState` (params, optimiser, EMA, replay buffer, key, lr scale), `create_train_state`.
  cd          `CDConfig`, `make_cd_step` (Algorithm 1 in one XLA program), `make_noise_fn`.
  checkpoint  `Checkpointer`: Orbax periodic + best checkpoints of the whole state, JSON side entry.
  monitor     `MetricsLogger` (metrics.jsonl), `HealthMonitor` (divergence detection).
  loop        `train_loop`: step + monitor + checkpoints + rollback + resume.
"""
from jaxebm.train import cd, checkpoint, loop, monitor, state
from jaxebm.train.cd import CDConfig, ema_decay_at, make_cd_step, make_noise_fn, multiplicity_distribution
from jaxebm.train.checkpoint import CheckpointError, Checkpointer
from jaxebm.train.loop import LoopConfig, TrainingDiverged, train_loop
from jaxebm.train.monitor import HealthConfig, HealthMonitor, MetricsLogger, read_metrics
from jaxebm.train.state import TrainState, create_train_state, make_optimizer

__all__ = [
    "cd", "checkpoint", "loop", "monitor", "state",
    "CDConfig", "ema_decay_at", "make_cd_step", "make_noise_fn", "multiplicity_distribution",
    "CheckpointError", "Checkpointer",
    "LoopConfig", "TrainingDiverged", "train_loop",
    "HealthConfig", "HealthMonitor", "MetricsLogger", "read_metrics",
    "TrainState", "create_train_state", "make_optimizer",
]
