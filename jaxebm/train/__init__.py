"""Training of every system: one driver, the states and the jitted steps it runs.

Modules:
  loop        `train_loop`, the one driver (step + metrics log + health monitor + checkpoints + rollback +
              exact resume; its module doc states the state and batch protocols), `begin_phase` (the next
              phase of a multi-phase fit: AE then NAE, ConVAE then flow), `LoopConfig`, `TrainingDiverged`.
  batches     `ArrayBatches`: shuffled in-memory batches with an exact-resume position.
  guard       `scaled_update`, `keep_if_finite`: the in-step half of the non-finite policy, shared by every step.
  checkpoint  `Checkpointer`: Orbax periodic + best checkpoints of the whole state, JSON side entry.
  monitor     `MetricsLogger` (metrics.jsonl), `HealthMonitor` (non-finite and energy divergence checks).
  state       `TrainState` of the EBM and EBM-CLF (params, optimiser, EMA, replay buffer, key, lr scale).
  cd          `CDConfig`, `make_cd_step` (Algorithm 1 in one XLA program; hybrid loss option), `make_noise_fn`.
  nae         `NAEConfig`, `NAEState`, `make_ae_step`, `make_nae_step`, `start_nae_phase` (the NAE's two phases).
  vae         `ModelState`, `make_vae_step`, `make_flow_step`, `fit_network` (ConVAE, ConVAE + NF, NF only).
"""
from jaxebm.train import batches, cd, checkpoint, guard, loop, monitor, state
from jaxebm.train.batches import ArrayBatches
from jaxebm.train.cd import CDConfig, ema_decay_at, make_cd_step, make_noise_fn, multiplicity_distribution
from jaxebm.train.checkpoint import CheckpointError, Checkpointer
from jaxebm.train.guard import keep_if_finite, scaled_update
from jaxebm.train.loop import LoopConfig, TrainingDiverged, begin_phase, train_loop
from jaxebm.train.monitor import HealthConfig, HealthMonitor, MetricsLogger, read_metrics
from jaxebm.train.state import TrainState, create_train_state, make_optimizer

__all__ = [
    "batches", "cd", "checkpoint", "guard", "loop", "monitor", "state",
    "ArrayBatches",
    "CDConfig", "ema_decay_at", "make_cd_step", "make_noise_fn", "multiplicity_distribution",
    "CheckpointError", "Checkpointer", "keep_if_finite", "scaled_update",
    "LoopConfig", "TrainingDiverged", "begin_phase", "train_loop",
    "HealthConfig", "HealthMonitor", "MetricsLogger", "read_metrics",
    "TrainState", "create_train_state", "make_optimizer",
]
