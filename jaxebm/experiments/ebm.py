"""The EBM for jets (Cheng & Courville, NeurIPS 2023) end to end on our own Pythia jets.

For each seed: train the masked-transformer energy on QCD jets by contrastive divergence (Algorithm 1),
select the checkpoint whose validation chains come closest to the validation QCD jets (EMA parameters,
unbinned W1 distance of jet pT, mass and M/pT, `jaxebm.evaluation.selection_distance`), generate jets
with the paper's long annealed chains, score QCD / top / H -> hh -> 4b test jets by energy and score
norm, and write a run directory; then a summary over seeds with the paper's Tables 2-3 side by side,
each number in the paper's own convention. The run directory, seeds, resumption and reports are the
runner's (`jaxebm.runs`); this module supplies the `EXPERIMENT` it runs:

    jaxebm train ebm --preset cpu                                # 3 seeds, ~23 min each on 2 cores
    python -m experiments.ebm_jets --preset cpu --seeds 0 --set run.num_steps=200

Presets: ``jaxebm/experiments/configs/ebm/{cpu,paper,smoke}.toml``. ``<out>/data_summary.json`` and
``<out>/plots/data_*.png`` describe the jet samples. Seed directory ``<out>/seed_<s>/``: config.json,
pipeline.json, checkpoints/, metrics.jsonl, samples.h5, results.json, report.md, plots/*.png.
``<out>/summary.json`` and ``<out>/report.md`` collect the seeds.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxebm.config import ConfigError, check_seeds, require_positive
from jaxebm.data.io import JetSample, jet_summary, read_jets, write_jets
from jaxebm.data.loader import BatchIterator, split_indices
from jaxebm.data.pipeline import FEATURE_SPACES, ConstituentPipeline
from jaxebm.evaluation import anomaly_quality, generation_quality, selection_distance
from jaxebm.experiments.jet_samples import TEST_PROCESSES, sample_files
from jaxebm.experiments.ebm_report import write_report, write_seed_report, write_summary
from jaxebm.experiments.reporting import write_data_summary
from jaxebm.inference import GenerationConfig, anomaly_scores, generate, model_outputs_fn
from jaxebm.models.transformer import TransformerConfig, TransformerEnergy
from jaxebm.runs import DataFile, Experiment, SeedJob
from jaxebm.runs.records import atomic_write_json
from jaxebm.train.cd import CDConfig, make_cd_step, make_noise_fn
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.loop import LoopConfig, train_loop
from jaxebm.train.state import create_train_state

__all__ = ["BEST_METRIC", "EXPERIMENT", "DataConfig", "ExperimentConfig", "RunConfig", "Trained", "data_files",
           "train_val_rows", "validate"]

CONFIG_DIR = Path(__file__).parent / "configs" / "ebm"
SIGNALS = ("top", "h_hh_4b")
BEST_METRIC = "val_distance"
@dataclass(frozen=True)
class DataConfig:
    """Jet samples (generated once into ``data_dir`` and reused by every seed).

    jet_radius: anti-kT R (paper: 1.0). num_train_jets: QCD jets for training + validation.
    num_test_jets: jets per test set (QCD, top, H). val_fraction: share of the training file held out.
    train_fraction: share of the remaining jets trained on (learning curves over data size; the
    validation jets do not change with it).
    num_constituents: N slots per jet. generator_seed, num_workers: Pythia seeding and processes.
    feature_space: "raw" (the paper's) or "standardized": where chains, data noise, chain starts and
    the model live (`jaxebm.data.pipeline`).
    """

    data_dir: str = "runs/data/ebm_r10"
    jet_radius: float = 1.0
    num_train_jets: int = 30_000
    num_test_jets: int = 5_000
    val_fraction: float = 0.1
    train_fraction: float = 1.0
    num_constituents: int = 40
    generator_seed: int = 101
    num_workers: int = 2
    feature_space: str = "raw"

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"data.train_fraction must be in (0, 1], got {self.train_fraction}")
        require_positive("data", self, ("jet_radius", "num_train_jets", "num_test_jets", "num_constituents",
                                         "num_workers"))
        if self.feature_space not in FEATURE_SPACES:
            raise ValueError(f"data.feature_space must be one of {FEATURE_SPACES}, got {self.feature_space!r}")


@dataclass(frozen=True)
class RunConfig:
    """Training length, evaluation and checkpoint cadence (in CD iterations) and evaluation sizes;
    ``keep_checkpoints`` periodic checkpoints are kept (the best one apart from them)."""

    num_steps: int = 1000
    log_every: int = 25
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    eval_every: int = 250
    num_val_jets: int = 512
    val_chain_steps: int = 128
    num_generated_jets: int = 5_000

    def __post_init__(self):
        require_positive("run", self, [f.name for f in dataclasses.fields(self)])


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment: preset name, seeds (one run per seed) and the settings of each part."""

    name: str = "cpu"
    seeds: tuple[int, ...] = (0, 1, 2)
    data: DataConfig = field(default_factory=DataConfig)
    model: TransformerConfig = field(default_factory=TransformerConfig)
    cd: CDConfig = field(default_factory=CDConfig)
    run: RunConfig = field(default_factory=RunConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self):
        check_seeds(self.seeds)


def validate(config: ExperimentConfig) -> None:
    """Refuse, before any work, values the config classes do not check themselves (their ranges are
    checked when they are built), naming the key: loop intervals, and a batch larger than the training
    jets. Raises `jaxebm.config.ConfigError`."""
    try:
        loop_config(config)
    except ValueError as error:
        raise ConfigError(f"run / cd.iterations_per_call: {error}") from None
    num_train = len(train_val_rows(config.data.num_train_jets, config.data, seed=0)[0])
    if config.cd.batch_size > num_train:
        raise ConfigError(f"cd.batch_size ({config.cd.batch_size}) is larger than the {num_train} training jets "
                          f"(data.num_train_jets = {config.data.num_train_jets} less data.val_fraction = "
                          f"{config.data.val_fraction}, times data.train_fraction = {config.data.train_fraction})")


def loop_config(config: ExperimentConfig, progress: bool = True) -> LoopConfig:
    """The training driver's settings (checkpoint ranking by the validation distance)."""
    return LoopConfig(num_steps=config.run.num_steps, iterations_per_call=config.cd.iterations_per_call,
                      log_every=config.run.log_every, checkpoint_every=config.run.checkpoint_every,
                      max_to_keep=config.run.keep_checkpoints, eval_every=config.run.eval_every,
                      best_metric=BEST_METRIC, best_mode="min", progress=progress)


def data_files(config: ExperimentConfig) -> dict[str, DataFile]:
    """The QCD training file and a test file per process (`jaxebm.experiments.jet_samples`)."""
    data = config.data
    return sample_files(data.data_dir, num_train_jets=data.num_train_jets, num_test_jets=data.num_test_jets,
                        generator_seed=data.generator_seed, jet_radius=data.jet_radius, num_workers=data.num_workers)


def describe_data(out_dir: Path, config: ExperimentConfig, paths: dict[str, Path]) -> None:
    """``data_summary.json`` and ``plots/data_*.png`` of the samples, once per run directory."""
    if (out_dir / "data_summary.json").exists():
        return
    summary = write_data_summary(out_dir, paths, num_jets=config.data.num_test_jets, jet_radius=config.data.jet_radius)
    print("data:", json.dumps({name: s["mass_q16_50_84"] for name, s in summary.items()}), "(jet mass quantiles, GeV)")


def train_val_rows(num_jets: int, config: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and validation row indices of the training file (a random split by ``seed``).

    Training keeps a random ``train_fraction`` of its share (at least one jet); validation is the
    same for every fraction.
    """
    train_rows, val_rows = split_indices(num_jets, (1 - config.val_fraction, config.val_fraction), seed=seed)
    num_kept = max(1, round(config.train_fraction * len(train_rows)))
    kept = np.random.default_rng(seed).permutation(len(train_rows))[:num_kept]
    return train_rows[np.sort(kept)], val_rows


def _subset(sample: JetSample, rows: np.ndarray) -> JetSample:
    labels = None if sample.labels is None else sample.labels[rows]
    return JetSample(sample.constituents[rows], sample.mask[rows], sample.jets[rows], labels, {})


class Trained(NamedTuple):
    """A trained seed: the energy module, the feature pipeline, the chain-start sampler, the selected
    checkpoint's EMA parameters and its step."""

    model: TransformerEnergy
    pipeline: ConstituentPipeline
    noise_fn: Any
    params: Any
    best_step: int


def make_validation_fn(model, pipeline, noise_fn, val_sample: JetSample, config: ExperimentConfig, say=None):
    """``eval_fn(state)``: validation-length chains (EMA params) vs validation QCD jets: the selection
    distance (``val_distance`` and its bootstrap error ``val_distance_err``) and the JSDs. ``say``: a
    plain status line per evaluation (when progress bars are off)."""
    real_p4, real_mask = pipeline.jets_as_model_sees(val_sample)
    gen_config = dataclasses.replace(config.generation, num_steps=config.run.val_chain_steps,
                                     batch_size=min(config.generation.batch_size, config.run.num_val_jets))

    def eval_fn(state) -> dict[str, float]:
        key = jax.random.fold_in(jax.random.key(12345), int(state.step))
        x, mask = generate(key, model, state.ema_params, noise_fn, gen_config, config.run.num_val_jets,
                           progress=False)
        gen_p4 = pipeline.to_four_vectors(x, mask)
        quality = generation_quality(real_p4, real_mask, gen_p4, mask, with_jetnet=False)
        distance, error = selection_distance(real_p4, real_mask, gen_p4, mask, seed=int(state.step))
        if say is not None:
            say(f"  step {int(state.step)}/{config.run.num_steps}: validation distance {distance:.4g} ± {error:.2g}")
        return {f"val_{k}": v for k, v in quality.items()} | {"val_distance": distance, "val_distance_err": error}

    return eval_fn


def _template(model, cd_config: CDConfig, pipeline: ConstituentPipeline, noise_fn):
    """Shapes and dtypes of the seed's `TrainState` (nothing computed)."""
    x = np.zeros((cd_config.batch_size, pipeline.num_constituents, model.config.num_features), np.float32)
    mask = np.ones(x.shape[:2], bool)
    return jax.eval_shape(lambda key: create_train_state(key, model, cd_config, x, mask, noise_fn), jax.random.key(0))


def _restore_selected(run_dir: Path, template) -> tuple[Any, int]:
    """EMA parameters and step of the best checkpoint by the validation distance (else the newest)."""
    with Checkpointer(run_dir / "checkpoints", best_metric=BEST_METRIC, best_mode="min") as ckpt:
        state, meta = ckpt.restore(template, best=bool(ckpt.steps(best=True)))
    return state.ema_params, int(meta["step"])


def train_seed(config: ExperimentConfig, job: SeedJob) -> Trained:
    """Train one seed (resuming if checkpoints exist); returns it at its selected checkpoint."""
    train_file = read_jets(job.data["train"])
    train_rows, val_rows = train_val_rows(len(train_file.jets), config.data, job.seed)
    pipeline = ConstituentPipeline.fit(_subset(train_file, train_rows), num_constituents=config.data.num_constituents,
                                       padding_mode=config.cd.padding_mode, feature_space=config.data.feature_space)
    atomic_write_json(job.directory / "pipeline.json", pipeline.to_dict(), sort_keys=False)
    cd_config = dataclasses.replace(config.cd, steps_per_epoch=max(1, len(train_rows) // config.cd.batch_size))
    model = TransformerEnergy(config.model)
    noise_fn = make_noise_fn(**pipeline.noise_parameters())

    def to_model_inputs(batch: JetSample):
        x, model_mask, _ = pipeline.transform(batch)
        return x, model_mask

    batches = BatchIterator(job.data["train"], cd_config.batch_size, indices=train_rows, seed=job.seed,
                            transform=to_model_inputs)
    example_x, example_mask = to_model_inputs(_subset(train_file, train_rows[: cd_config.batch_size]))
    state = create_train_state(jax.random.key(job.seed), model, cd_config, example_x, example_mask, noise_fn)
    eval_fn = make_validation_fn(model, pipeline, noise_fn, _subset(train_file, val_rows), config,
                                 say=None if job.progress else print)
    step_fn = make_cd_step(model, cd_config, noise_fn)
    state = train_loop(step_fn, state, batches, job.directory, loop_config(config, job.progress), eval_fn=eval_fn,
                       run_config=config)
    template = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), state)
    params, best_step = _restore_selected(job.directory, template)
    return Trained(model, pipeline, noise_fn, params, best_step)


def load_seed(config: ExperimentConfig, job: SeedJob) -> Trained:
    """A trained seed from its directory (``pipeline.json`` and checkpoints), without training."""
    pipeline = ConstituentPipeline.from_dict(json.loads((job.directory / "pipeline.json").read_text()))
    model = TransformerEnergy(config.model)
    noise_fn = make_noise_fn(**pipeline.noise_parameters())
    params, best_step = _restore_selected(job.directory, _template(model, config.cd, pipeline, noise_fn))
    return Trained(model, pipeline, noise_fn, params, best_step)


def _scores(trained: Trained, inputs: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per process: energy and score norms (raw coordinates; with standardised features also the model's)."""
    pipeline = trained.pipeline
    spaces = {"score_norm": pipeline.raw_scale}
    if pipeline.feature_space != "raw":
        spaces["score_norm_model"] = None
    scores = {}
    for process, (x, model_mask, _) in inputs.items():
        norms = {name: anomaly_scores(model_outputs_fn(trained.model), trained.params, x, model_mask,
                                      coordinate_scale=scale)
                 for name, scale in spaces.items()}
        scores[process] = {"energy": norms["score_norm"]["energy"],
                           **{name: norm["score_norm"] for name, norm in norms.items()}}
    return scores


def evaluate_seed(config: ExperimentConfig, job: SeedJob, trained: Trained) -> dict:
    """Generation quality, anomaly scores and sculpting on the test sets; writes samples.h5 and plots.

    Score norms: ``anomaly_score_norm`` in the paper's raw (log pT, eta, phi) coordinates; with
    standardised features also ``anomaly_score_norm_model`` in the model's space. The truth-vs-truth
    floor compares as many training-file jets with the test QCD jets as there are generated jets.
    """
    model, pipeline, noise_fn, params = trained.model, trained.pipeline, trained.noise_fn, trained.params
    seed = job.seed
    tests = {p: read_jets(job.data[p], 0, config.data.num_test_jets) for p in TEST_PROCESSES}
    inputs = {p: pipeline.transform(s) for p, s in tests.items()}
    scores = _scores(trained, inputs)
    key_gen, key_noise = jax.random.split(jax.random.key(10_000 + seed))
    gen_x, gen_mask = generate(key_gen, model, params, noise_fn, config.generation, config.run.num_generated_jets,
                               progress=job.progress)
    noise = noise_fn(key_noise, config.run.num_generated_jets)
    noise_x, noise_mask = (noise if isinstance(noise, tuple) else (noise, np.ones(noise.shape[:2], bool)))
    noise_x, noise_mask = np.asarray(noise_x), np.asarray(noise_mask)
    noise_energy = anomaly_scores(model_outputs_fn(model), params, noise_x, noise_mask)["energy"]

    real_p4, real_mask = pipeline.jets_as_model_sees(tests["qcd"])
    gen_p4 = pipeline.to_four_vectors(gen_x, gen_mask)
    truth_p4, truth_mask = pipeline.jets_as_model_sees(read_jets(job.data["train"], 0, config.run.num_generated_jets))
    noise_p4 = pipeline.to_four_vectors(noise_x, noise_mask)
    results = {
        "seed": seed,
        "feature_space": pipeline.feature_space,
        "generated": generation_quality(real_p4, real_mask, gen_p4, gen_mask, seed=seed),
        "noise_init": generation_quality(real_p4, real_mask, noise_p4, noise_mask, with_jetnet=False),
        "truth_vs_truth": generation_quality(real_p4, real_mask, truth_p4, truth_mask, seed=seed),
    }
    for section, (p4, mask) in (("generated", (gen_p4, gen_mask)), ("noise_init", (noise_p4, noise_mask)),
                                ("truth_vs_truth", (truth_p4, truth_mask))):
        distance, error = selection_distance(real_p4, real_mask, p4, mask, seed=seed)
        results[section] |= {"distance": distance, "distance_err": error}
    qcd_mass = tests["qcd"].jets[:, 3]
    for score_name in scores["qcd"]:
        results[f"anomaly_{score_name}"] = anomaly_quality(
            scores["qcd"][score_name], {p: scores[p][score_name] for p in SIGNALS}, background_mass=qcd_mass)
    gen_p4 = gen_p4.astype(np.float32)
    write_jets(job.directory / "samples.h5", JetSample(
        gen_p4, gen_mask, jet_summary(gen_p4, gen_mask, gen_mask.sum(axis=1)), None,
        {"model": "ebm", "seed": seed, "space": "centred and rotated jet frame (eta, phi relative to the axis)"}))
    write_seed_report(job.directory, results, tests=tests, scores=scores, noise_energy=noise_energy,
                      real=(real_p4, real_mask, pipeline.to_raw_features(*inputs["qcd"][:2])),
                      generated=(gen_p4, gen_mask, pipeline.to_raw_features(gen_x, gen_mask)))
    results["best_step"] = trained.best_step
    return results


def sample(config: ExperimentConfig, trained: Trained, num_jets: int, seed: int, progress: bool = True) -> JetSample:
    """``num_jets`` jets from the trained model's generation chains (``config.generation``), as four-vectors
    in the centred, rotated jet frame with their jet summaries (schema file content)."""
    x, mask = generate(jax.random.key(seed), trained.model, trained.params, trained.noise_fn, config.generation,
                       num_jets, progress=progress)
    p4 = trained.pipeline.to_four_vectors(x, mask).astype(np.float32)
    attrs = {"model": "ebm", "seed": seed, "selected_step": trained.best_step,
             "chain_steps": config.generation.num_steps,
             "space": "centred and rotated jet frame (eta, phi relative to the axis)"}
    return JetSample(p4, mask, jet_summary(p4, mask, mask.sum(axis=1)), None, attrs)


EXPERIMENT = Experiment(
    name="ebm", config_class=ExperimentConfig, presets=CONFIG_DIR, validate=validate, data_files=data_files,
    describe_data=describe_data, train_seed=train_seed, load_seed=load_seed, evaluate_seed=evaluate_seed,
    write_summary=write_summary, write_report=write_report, sample=sample)
