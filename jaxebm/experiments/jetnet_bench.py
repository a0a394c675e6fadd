"""JetNet-style benchmark: ConVAE, ConVAE + normalizing flow, NF only (Orzari et al. 2023, seed 004) and the
project's EBM, trained on the same JetNet-like Pythia jets and measured with the JetNet metrics.

Data: one JetNet-like sample of ``data.jet_type`` jets (`jaxebm.data.jetnet_like`: parton pT ~ 1 TeV,
anti-kT R = 0.8, matched to the initiating parton), stored in the jaxebm schema (the runner's data file)
and in the JetNet layout (``<data_dir>/jetnet_<type>.h5``, read back with `jaxebm.data.io.read_jetnet`);
a fixed 70/15/15 train / validation / test split (the same for every seed).

Models (each trained on the training split, all in one seed directory with its own checkpoints, resumed):

- ``convae``: the generation-tuned ConVAE (paper Table 4 weights), z ~ N(0, 1) -> decoder.
- ``convae_nf``: the reconstruction-tuned ConVAE (Table 5), then a RealNVP on its training jets' latents
  (two steps): ``latent_flow.latent_source = "mean"`` (posterior means) or ``"sample"`` (a fresh draw
  z ~ q(z|x) per jet every epoch); flow sample -> decoder.
- ``nf``: a RealNVP on the flattened 3 x 30 scaled momenta.
- ``ebm``: the masked transformer energy (`jaxebm.models.transformer`, `jaxebm.train.cd`, "mask" padding)
  on the 30 particles in JetNet's coordinates ``(eta_rel, phi_rel, log pT_rel)``, standardised; jets drawn
  with `jaxebm.inference.generate` (multiplicities from the training distribution).
- ``ebm_flow_start``: the seed's ``ebm`` chain started from the jets of its ``ebm_flow_start.proposal`` row and
  run ``ebm_flow_start.num_steps`` steps (`jaxebm.experiments.jetnet_flow_start`), with a trade-off curve.
- ``truth``: as many training jets as there are test jets: the floor of every metric.

Every sample (truth, test and generated) goes through one path to the metrics: four-vectors ->
`jaxebm.metrics.jetnet.jetnet_features` (relative to the sum of the stored <= 30 particles). Metrics:
`jaxebm.experiments.jetnet_bench_eval`; report: `jaxebm.experiments.jetnet_bench_report`.

    jaxebm train jetnet_bench --preset cpu
    python -m experiments.jetnet_bench --preset smoke
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from jaxebm.config import ConfigError, check_seeds, require_positive
from jaxebm.data.io import JetSample, jet_summary, read_jetnet
from jaxebm.data.jetnet_like import JETNET_TYPES
from jaxebm.data.preprocess import Standardizer
from jaxebm.experiments import jetnet_bench_report as report
from jaxebm.experiments import jetnet_flow_start as flow_start
from jaxebm.experiments import jetnet_flow_start_report as flow_start_report
from jaxebm.experiments.jetnet_bench_data import DataConfig, data_files, jetnet_file, split_rows
from jaxebm.experiments.jetnet_bench_eval import evaluate_samples, flow_start_curve, observables
from jaxebm.inference import GenerationConfig
from jaxebm.models.jet_convae import (
    GENERATION, RECONSTRUCTION, ConVAE, ConVAEConfig, ConVAELoss, MinMaxScaler, jets_to_momenta,
    momenta_to_constituents,
)
from jaxebm.models.flows import LATENT_FLOW, PARTICLE_FLOW, RealNVP, RealNVPConfig
from jaxebm.models.transformer import TransformerConfig, TransformerEnergy
from jaxebm.runs import Experiment, SeedJob
from jaxebm.runs.records import atomic_write_json
from jaxebm.train.cd import CDConfig, make_cd_step, make_noise_fn, multiplicity_distribution
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.batches import ArrayBatches
from jaxebm.train.loop import LoopConfig, train_loop
from jaxebm.train.state import create_train_state
from jaxebm.train.vae import (
    StageConfig, encode_posterior, fit_network, flatten_momenta, init_flow_state, init_vae_state, make_convae_sampler,
    make_flow_step, make_particle_flow_sampler, make_vae_step, posterior_samples,
)

__all__ = ["EXPERIMENT", "LATENT_SOURCES", "MODELS", "ExperimentConfig", "LatentFlowSection", "Trained", "ebm_features",
           "latent_flow_data"]

CONFIG_DIR = Path(__file__).parent / "configs" / "jetnet_bench"
MODELS = ("convae", "convae_nf", "nf", "ebm", "ebm_flow_start")
LATENT_SOURCES = ("mean", "sample")


@dataclass(frozen=True)
class ConVAESection:
    """One ConVAE: architecture, loss weights (paper Tables 4-5), training stage."""

    model: ConVAEConfig = field(default_factory=lambda: GENERATION.model)
    loss: ConVAELoss = field(default_factory=lambda: GENERATION.loss)
    stage: StageConfig = field(default_factory=lambda: StageConfig(GENERATION.learning_rate, 100, 1500))


@dataclass(frozen=True)
class FlowSection:
    """One RealNVP (its width follows the data: latent dimension or 3 x P), its training stage and its
    precision policy (`jaxebm.models.precision`)."""

    num_couplings: int = 55
    hidden_sizes: tuple[int, ...] = (400, 350, 400, 400)
    stage: StageConfig = field(default_factory=lambda: StageConfig(LATENT_FLOW.learning_rate, 100, 100))
    compute_dtype: str = "float32"


@dataclass(frozen=True)
class LatentFlowSection(FlowSection):
    """The ConVAE + NF flow, and what it is trained on: ``latent_source = "mean"`` (the training jets'
    posterior means, the paper's) or ``"sample"`` (one draw z ~ q(z|x) per jet, fresh every epoch)."""

    latent_source: str = "mean"

    def __post_init__(self):
        if self.latent_source not in LATENT_SOURCES:
            raise ValueError(f"latent_flow.latent_source must be one of {LATENT_SOURCES}, got {self.latent_source!r}")


@dataclass(frozen=True)
class RunConfig:
    """EBM length (CD iterations, the runner's ``num_steps``), logging, metric sizes, sample model."""

    num_steps: int = 20_000
    log_every: int = 100
    checkpoint_every: int = 1000
    cov_num_batches: int = 10
    cov_batch_size: int = 100
    sample_model: str = "ebm"

    def __post_init__(self):
        require_positive("run", self, ("num_steps", "log_every", "checkpoint_every", "cov_num_batches",
                                       "cov_batch_size"))
        if self.sample_model not in MODELS:
            raise ValueError(f"run.sample_model must be one of {MODELS}, got {self.sample_model!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """The benchmark: seeds, models, data, the three paper networks and the EBM."""

    name: str = "paper"
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = MODELS
    data: DataConfig = field(default_factory=DataConfig)
    convae_gen: ConVAESection = field(default_factory=ConVAESection)
    convae_rec: ConVAESection = field(default_factory=lambda: ConVAESection(
        RECONSTRUCTION.model, RECONSTRUCTION.loss, StageConfig(RECONSTRUCTION.learning_rate, 100, 1500)))
    latent_flow: LatentFlowSection = field(default_factory=LatentFlowSection)
    particle_flow: FlowSection = field(default_factory=lambda: FlowSection(
        PARTICLE_FLOW.config.num_couplings, PARTICLE_FLOW.config.hidden_sizes,
        StageConfig(PARTICLE_FLOW.learning_rate, 100, 100)))
    ebm: TransformerConfig = field(default_factory=TransformerConfig)
    cd: CDConfig = field(default_factory=lambda: CDConfig(padding_mode="mask"))
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    ebm_flow_start: flow_start.FlowStartConfig = field(default_factory=flow_start.FlowStartConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        check_seeds(self.seeds)
        unknown = set(self.models) - set(MODELS)
        if not self.models or unknown:
            raise ValueError(f"models must be a non-empty subset of {MODELS}, got {list(self.models)}")


def validate(config: ExperimentConfig) -> None:
    """Refuse settings that cannot run, naming the key (`ConfigError`)."""
    if config.cd.padding_mode != "mask":
        raise ConfigError("cd.padding_mode must be 'mask': the EBM keeps JetNet's multiplicities by its mask")
    if config.ebm.num_features != 3:
        raise ConfigError(f"ebm.num_features must be 3 (eta_rel, phi_rel, log pT_rel), got {config.ebm.num_features}")
    flow_start.check_flow_start(config.models, config.ebm_flow_start)
    for name in ("convae_gen", "convae_rec"):
        if getattr(config, name).model.num_particles != config.data.num_particles:
            raise ConfigError(f"{name}.model.num_particles must equal data.num_particles ({config.data.num_particles})")
    num_train = len(split_rows(config.data)[0])
    batches = {"cd.batch_size": config.cd.batch_size, **{f"{s}.stage.batch_size": getattr(config, s).stage.batch_size
               for s in ("convae_gen", "convae_rec", "latent_flow", "particle_flow")}}
    for key, size in batches.items():
        if size > num_train:
            raise ConfigError(f"{key} ({size}) is larger than the {num_train} training jets")
    try:
        LoopConfig(num_steps=config.run.num_steps, log_every=config.run.log_every,
                   checkpoint_every=config.run.checkpoint_every, iterations_per_call=config.cd.iterations_per_call)
    except ValueError as error:
        raise ConfigError(f"run / cd.iterations_per_call: {error}") from None


def describe_data(out_dir: Path, config: ExperimentConfig, paths: dict[str, Path]) -> None:
    """``data_summary.json``: sizes, jet pT / mass / multiplicity quantiles, generation rate."""
    if (out_dir / "data_summary.json").exists():
        return
    sample = read_jetnet(jetnet_file(config.data, paths["sample"]))
    timing = paths["sample"].parent / f"pythia_{config.data.jet_type}.timing.json"
    report.write_data_summary(out_dir, sample, split_rows(config.data),
                              json.loads(timing.read_text()) if timing.exists() else None)


# --- networks ------------------------------------------------------------------------------------

def _flow(section: FlowSection, num_features: int) -> RealNVP:
    return RealNVP(RealNVPConfig(num_features, section.num_couplings, section.hidden_sizes,
                                 compute_dtype=section.compute_dtype))


def latent_flow_data(source: str, mean: np.ndarray, logvar: np.ndarray, seed: int) -> Callable[[int], np.ndarray]:
    """The latent flow's training latents ``epoch -> (n, D)`` from the posteriors ``mean, logvar (n, D)`` of
    the training jets: the means every epoch (``"mean"``) or one draw z ~ q(z|x) per jet, fresh every epoch
    and seeded by ``(seed, epoch)`` (``"sample"``)."""
    if source == "mean":
        return lambda epoch: mean
    if source == "sample":
        return lambda epoch: posterior_samples(np.random.default_rng((seed, epoch)), mean, logvar)
    raise ValueError(f"latent source must be one of {LATENT_SOURCES}, got {source!r}")


def _train_network(directory: Path, state, step_fn: Callable | None, data: Callable[[int], np.ndarray],
                   stage: StageConfig, seed: int, progress: bool):
    """`jaxebm.train.vae.fit_network` on ``data(epoch)`` (training examples, the same count every epoch; epoch
    ``e`` shuffled by the numpy seed ``seed * 100_003 + e``), checkpointed after each epoch (resumed from the
    newest); each epoch's row in ``metrics.jsonl`` carries ``epoch`` and ``input_std``, the mean over features
    of the std of its training examples. With ``step_fn=None`` only restores the finished network. Returns
    ``(state, seconds trained now)``."""
    steps_per_epoch = len(data(0)) // stage.batch_size
    with Checkpointer(directory / "checkpoints") as ckpt:
        latest = ckpt.latest_step()
        if step_fn is None and latest is None:
            raise FileNotFoundError(f"{directory} holds no checkpoint: train the seed first")
        if step_fn is None or (latest or 0) >= stage.num_epochs * steps_per_epoch:
            return ckpt.restore(state)[0], 0.0

    def epoch_columns(step: int) -> dict:
        epoch = step // steps_per_epoch
        return {"epoch": epoch, "input_std": float(np.std(data(epoch - 1), axis=0).mean())}

    started = time.perf_counter()
    state = fit_network(step_fn, state, lambda epoch: (np.asarray(data(epoch), np.float32),), directory, stage,
                        order_seed=lambda epoch: seed * 100_003 + epoch, log_fn=epoch_columns, progress=progress)
    return state, time.perf_counter() - started


@dataclass
class Trained:
    """A seed's networks as samplers ``sample_fn(key, n) -> (four-vectors (n, P, 4), mask (n, P))`` by model,
    and the seconds each took to train (0 when restored)."""

    samplers: dict[str, Callable]
    train_seconds: dict[str, float]


def _momenta_sampler(sample_momenta: Callable, *params) -> Callable:
    def sample_fn(key, num_jets: int):
        return momenta_to_constituents(np.asarray(sample_momenta(key, num_jets, *params)))

    return sample_fn


def _announce(network: str, length: str, train: bool) -> None:
    """A status line naming the network a seed trains (or reads back) next."""
    print(f"  {network}: {'training ' + length + ' (resumes from its checkpoint)' if train else 'reading back'}")


def _convae_models(config, job: SeedJob, train_momenta: np.ndarray, train: bool) -> tuple[dict, dict]:
    """ConVAE, ConVAE + NF and NF samplers (only those in ``config.models``) and their training seconds."""
    scaler = MinMaxScaler.fit(train_momenta)
    atomic_write_json(job.directory / "scaler.json", scaler.to_dict(), sort_keys=False)
    scaled = scaler.apply(train_momenta)
    samplers, seconds = {}, {}
    key = jax.random.key(job.seed)

    def vae_stage(name, section: ConVAESection):
        _announce(name, f"{section.stage.num_epochs} epochs", train)
        vae = ConVAE(section.model)
        state = init_vae_state(jax.random.fold_in(key, len(seconds)), vae, section.stage.learning_rate)
        step = make_vae_step(vae, section.loss, scaler, section.stage.learning_rate) if train else None
        state, took = _train_network(job.directory / name, state, step, lambda epoch: scaled, section.stage, job.seed,
                                     job.progress)
        seconds[name] = took
        return vae, state.params

    def flow_stage(name, section: FlowSection, data: Callable[[int], np.ndarray]):
        _announce(name, f"{section.stage.num_epochs} epochs", train)
        flow = _flow(section, data(0).shape[1])
        state = init_flow_state(jax.random.fold_in(key, 10 + len(seconds)), flow, section.stage.learning_rate)
        step = make_flow_step(flow, section.stage.learning_rate) if train else None
        state, took = _train_network(job.directory / name, state, step, data, section.stage, job.seed, job.progress)
        seconds[name] = took
        return flow, state.params

    if "convae" in config.models:
        vae, params = vae_stage("convae_gen", config.convae_gen)
        samplers["convae"] = _momenta_sampler(make_convae_sampler(vae, scaler), params)
    if "convae_nf" in config.models:
        vae, vae_params = vae_stage("convae_rec", config.convae_rec)
        mean, logvar = encode_posterior(vae, vae_params, scaled)
        latents = latent_flow_data(config.latent_flow.latent_source, mean, logvar, job.seed)
        flow, flow_params = flow_stage("latent_flow", config.latent_flow, latents)
        samplers["convae_nf"] = _momenta_sampler(make_convae_sampler(vae, scaler, flow), vae_params, flow_params)
    if "nf" in config.models:
        flat = flatten_momenta(scaled)
        flow, params = flow_stage("particle_flow", config.particle_flow, lambda epoch: flat)
        samplers["nf"] = _momenta_sampler(make_particle_flow_sampler(flow, scaler), params)
    return samplers, seconds


def ebm_features(sample: JetSample, jet_pt: np.ndarray) -> np.ndarray:
    """``(eta_rel, phi_rel, log pT_rel)`` ``(n, P, 3)`` of read-back JetNet jets (padded rows zero)."""
    p4, mask = sample.constituents.astype(np.float64), sample.mask
    pt = np.hypot(p4[..., 1], p4[..., 2])
    eta = np.arcsinh(np.divide(p4[..., 3], pt, out=np.zeros_like(pt), where=pt > 0)) - sample.jets[:, 1, None]
    phi = np.arctan2(p4[..., 2], p4[..., 1])
    log_pt = np.log(np.where(mask, pt, 1.0) / jet_pt[:, None])
    return np.where(mask[..., None], np.stack([eta, phi, log_pt], axis=-1), 0.0).astype(np.float32)


def _ebm_model(config, job: SeedJob, train_sample: JetSample, train: bool) -> tuple[flow_start.EBMGenerator, float]:
    """The EBM sampler (features standardised over real training particles) and its training seconds."""
    features, mask = ebm_features(train_sample, train_sample.jets[:, 0]), train_sample.mask
    standardizer = Standardizer.fit(features, mask)
    atomic_write_json(job.directory / "ebm_standardizer.json", standardizer.to_dict(), sort_keys=False)
    x = np.asarray(standardizer.apply(features, mask), np.float32)
    num_slots = x.shape[1]
    noise_fn = make_noise_fn(np.zeros(3), np.ones(3), num_slots, multiplicity_probs=multiplicity_distribution(mask))
    cd_config = dataclasses.replace(config.cd, steps_per_epoch=max(1, len(x) // config.cd.batch_size))
    model = TransformerEnergy(config.ebm)
    state = create_train_state(jax.random.key(job.seed), model, cd_config, x[:cd_config.batch_size],
                               mask[:cd_config.batch_size], noise_fn)
    loop = LoopConfig(num_steps=config.run.num_steps if train else 0, log_every=config.run.log_every,
                      checkpoint_every=config.run.checkpoint_every, iterations_per_call=cd_config.iterations_per_call,
                      progress=job.progress)
    started = time.perf_counter()
    if train:
        state = train_loop(make_cd_step(model, cd_config, noise_fn), state,
                           ArrayBatches((x, mask), cd_config.batch_size, seed=job.seed), job.directory / "ebm", loop,
                           run_config=config)
    else:
        with Checkpointer(job.directory / "ebm" / "checkpoints") as ckpt:
            state, _ = ckpt.restore(state)
    took = time.perf_counter() - started if train else 0.0
    return flow_start.EBMGenerator(model, state.ema_params, standardizer, noise_fn, config.generation,
                                   flow_start.stored_log_pt_fraction(train_sample)), took


def _splits(config: ExperimentConfig, job: SeedJob) -> dict[str, JetSample]:
    sample = read_jetnet(jetnet_file(config.data, job.data["sample"]))
    return {name: JetSample(sample.constituents[rows], sample.mask[rows], sample.jets[rows], sample.labels[rows], {})
            for name, rows in zip(("train", "val", "test"), split_rows(config.data))}


def _build(config: ExperimentConfig, job: SeedJob, train: bool) -> Trained:
    job.directory.mkdir(parents=True, exist_ok=True)
    train_sample = _splits(config, job)["train"]
    momenta = jets_to_momenta(train_sample.constituents, train_sample.mask, config.data.num_particles)
    samplers, seconds = _convae_models(config, job, momenta, train)
    if "ebm" in config.models:
        _announce("ebm", f"to CD iteration {config.run.num_steps}", train)
        samplers["ebm"], seconds["ebm"] = _ebm_model(config, job, train_sample, train)
    if "ebm_flow_start" in config.models:
        samplers["ebm_flow_start"] = flow_start.FlowStartSampler(
            samplers[config.ebm_flow_start.proposal], samplers["ebm"], config.ebm_flow_start.num_steps)
        seconds["ebm_flow_start"] = 0.0
    return Trained(samplers, seconds)


def train_seed(config: ExperimentConfig, job: SeedJob) -> Trained:
    """Train (or resume) every model of ``config.models`` for one seed."""
    return _build(config, job, train=True)


def load_seed(config: ExperimentConfig, job: SeedJob) -> Trained:
    """Every model of a trained seed from its checkpoints, without training."""
    return _build(config, job, train=False)


def evaluate_seed(config: ExperimentConfig, job: SeedJob, trained: Trained) -> dict:
    """Generate as many jets as the test split holds with each model, time it, and measure every row
    (truth floor included) against the test jets; writes the seed's report, plots and observables."""
    splits = _splits(config, job)
    test, num_jets = splits["test"], len(splits["test"].jets)
    truth = splits["train"]
    samples = {"truth": (truth.constituents[:num_jets].astype(np.float64), truth.mask[:num_jets])}
    generation_seconds = {}
    for index, (name, sample_fn) in enumerate(trained.samplers.items()):
        started = time.perf_counter()
        samples[name] = sample_fn(jax.random.key(1_000 * job.seed + index), num_jets)
        generation_seconds[name] = time.perf_counter() - started
    test_jets = (test.constituents.astype(np.float64), test.mask)
    results = evaluate_samples(test_jets, samples, seed=job.seed, cov_num_batches=config.run.cov_num_batches,
                               cov_batch_size=config.run.cov_batch_size)
    grad_evals = flow_start.grad_evals_per_jet(config.models, config.generation.num_steps,
                                               config.ebm_flow_start.num_steps)
    for name, evals in grad_evals.items():
        results["metrics"][name]["grad_evals_per_jet"] = [float(evals), 0.0]
    if "ebm_flow_start" in trained.samplers:  # the row's key: its own K of the sweep repeats the row
        index = list(trained.samplers).index("ebm_flow_start")
        by_proposal = flow_start.sweep_proposals(trained.samplers, jax.random.key(1_000 * job.seed + index),
                                                 num_jets, config.ebm_flow_start.sweep)
        results["flow_start_curve"] = flow_start_curve(by_proposal, test_jets, results["metrics"], grad_evals,
                                                       seed=job.seed)
        flow_start_report.write_seed_curve(job.directory, results["flow_start_curve"])
    results |= {"seed": job.seed, "num_test_jets": num_jets, "train_seconds": trained.train_seconds,
                "generation_seconds": generation_seconds}
    per_model = {"test": observables(test.constituents, test.mask)} | {n: observables(*s) for n, s in samples.items()}
    report.write_seed_report(job.directory, results, per_model)
    return results


def sample(config: ExperimentConfig, trained: Trained, num_jets: int, seed: int, progress: bool = True) -> JetSample:
    """``num_jets`` jets of ``config.run.sample_model`` as massless four-vectors (JetNet frame: jet at phi = 0);
    ``progress`` is accepted for the runner's interface (the samplers show no bar)."""
    p4, mask = trained.samplers[config.run.sample_model](jax.random.key(seed), num_jets)
    p4 = np.where(mask[..., None], p4, 0.0).astype(np.float32)
    attrs = {"model": config.run.sample_model, "seed": seed, "jetnet_type": JETNET_TYPES[config.data.jet_type]}
    return JetSample(p4, mask, jet_summary(p4, mask, mask.sum(axis=1)), None, attrs)


EXPERIMENT = Experiment(
    name="jetnet_bench", config_class=ExperimentConfig, presets=CONFIG_DIR, validate=validate, data_files=data_files,
    describe_data=describe_data, train_seed=train_seed, load_seed=load_seed, evaluate_seed=evaluate_seed,
    write_summary=report.write_summary, write_report=report.write_report, sample=sample)
