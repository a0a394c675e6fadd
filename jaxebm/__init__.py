"""jaxebm: energy-based models of particle jets in JAX.

Subpackages:
  data      Pythia 8 + FastJet generation, HDF5 schema, preprocessing, images, observables, loaders.
  sampling  Langevin / MALA / HMC kernels, replay buffers, sphere chains, AIS (pure, jittable).
  metrics   JSD, W1, JetNet metrics (W1M/W1P/W1EFP/FPD/KPD), tagging, mass sculpting, two-sample test.
  models    Flax energy networks.
  train     Train states and jitted steps, checkpoints, health monitor, training driver.
  parallel  1-D device mesh: data-parallel CD steps, generation and scoring; multi-host setup.
  runs         the experiment runner: run directories, provenance, lock, seeds, resume, extension, reports.
  experiments  the experiments the runner knows (ebm) and their TOML presets.
Modules: inference (generation chains, anomaly scores), evaluation (metric bundles), plots, config,
cli (the ``jaxebm`` command).
"""

__version__ = "0.1.0"
