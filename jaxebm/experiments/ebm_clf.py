"""The hybrid EBM-classifier (EBM-CLF, Cheng & Courville 2023, section 3.2, Tables 3 and 6) on our own jets.

One transformer backbone with K = 3 logits g(x) over QCD / W / top (`TransformerConfig.num_classes`),
trained by the CD step of the plain EBM plus kappa times the cross-entropy (`jaxebm.train.cd`): the plain
EBM and the hybrid are one code path with a loss option. A variant is a set of overrides (`VARIANTS`):

  kappa1, kappa0.5, kappa0.1  EBM-CLF with kappa = 1, 0.5, 0.1 (chains on the marginal E(x), as the paper)
  kappa1_cc                   kappa = 1 with class-conditional training chains on E(x, y) (``cd.class_conditional``)
  baseline                    the same backbone trained by cross-entropy alone (``cd.cd_weight = 0``)
  ebm                         CD alone on the same jets (``cd.classifier_weight = 0``): E(x) = -logsumexp g(x)

Each variant is a run of the runner (`jaxebm.runs`) in its own directory; per seed: train (resumable; every
``run.curve_every`` iterations the EMA parameters are scored on the test jets, `curve_point`, and logged as an
``eval`` row of ``metrics.jsonl``: the curves over training), then evaluate the final EMA parameters on the
test jets: top-1 / top-2 accuracy and the confusion matrix, every score of `jaxebm.inference.anomaly_scores`
(AUC, 1/eps_B(0.2) for top and H -> hh -> 4b against QCD, mass sculpting), and generated jets (chains on E(x);
per class from chains on E(x, y) when trained with class-conditional chains: JSDs, observable plots).
`jaxebm.experiments.ebm_clf_report.write_comparison` puts the variants side by side (Tables 3 and 6).

    python -m experiments.ebm_clf --preset cpu --variants kappa1 baseline --seeds 0 1 2
    jaxebm train ebm_clf --preset cpu --set cd.classifier_weight=0.5     # one variant through the CLI

Presets: ``jaxebm/experiments/configs/ebm_clf/{cpu,paper,smoke}.toml`` (kappa = 1).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxebm.config import ConfigError, check_seeds, require_positive
from jaxebm.data.io import JetSample, jet_summary, read_jets
from jaxebm.data.loader import BatchIterator
from jaxebm.data.pipeline import ConstituentPipeline
from jaxebm.evaluation import anomaly_quality, generation_quality
from jaxebm.experiments import ebm_clf_report
from jaxebm.experiments.ebm_clf_data import CLASSES, SIGNALS, DataConfig, data_files as _data_files, read_test_sets
from jaxebm.experiments.reporting import write_data_summary
from jaxebm.inference import GenerationConfig, anomaly_scores, generate, model_outputs_fn
from jaxebm.models.transformer import TransformerConfig, TransformerEnergy
from jaxebm.runs import Experiment, SeedJob
from jaxebm.runs.records import atomic_write_json
from jaxebm.train.cd import CDConfig, make_cd_step, make_noise_fn
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.loop import LoopConfig, train_loop
from jaxebm.train.monitor import read_metrics
from jaxebm.train.state import create_train_state

__all__ = ["EXPERIMENT", "VARIANTS", "ExperimentConfig", "RunConfig", "Trained", "class_logits", "classification",
           "curve_point", "curve_summary", "training_curve", "variant_name"]

CONFIG_DIR = Path(__file__).parent / "configs" / "ebm_clf"
VARIANTS = {
    "kappa1": ("cd.classifier_weight=1.0", "cd.class_conditional=false"),
    "kappa1_cc": ("cd.classifier_weight=1.0", "cd.class_conditional=true"),
    "kappa0.5": ("cd.classifier_weight=0.5", "cd.class_conditional=false"),
    "kappa0.1": ("cd.classifier_weight=0.1", "cd.class_conditional=false"),
    "baseline": ("cd.classifier_weight=1.0", "cd.cd_weight=0.0", "cd.class_conditional=false"),
    "ebm": ("cd.classifier_weight=0.0", "cd.class_conditional=false"),
}


@dataclass(frozen=True)
class RunConfig:
    """Training length (CD iterations), log / checkpoint / curve-point cadence, generated jets per class."""

    num_steps: int = 400
    log_every: int = 25
    checkpoint_every: int = 100
    curve_every: int = 100
    num_generated_jets: int = 500

    def __post_init__(self):
        require_positive("run", self, [f.name for f in dataclasses.fields(self)])


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment: preset name, seeds and the settings of each part (the model has K = 3 logits)."""

    name: str = "cpu"
    seeds: tuple[int, ...] = (0, 1, 2)
    data: DataConfig = field(default_factory=DataConfig)
    model: TransformerConfig = field(default_factory=lambda: TransformerConfig(num_classes=len(CLASSES)))
    cd: CDConfig = field(default_factory=lambda: CDConfig(classifier_weight=1.0))
    run: RunConfig = field(default_factory=RunConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self):
        check_seeds(self.seeds)
        if self.model.num_classes != len(CLASSES):
            raise ValueError(f"model.num_classes must be {len(CLASSES)} ({', '.join(CLASSES)}), "
                             f"got {self.model.num_classes}")


def variant_name(config: ExperimentConfig) -> str:
    """"baseline" (no CD), "ebm" (no cross-entropy) or "kappa<w>" (the hybrid; "kappa<w>_cc" with
    class-conditional training chains)."""
    if config.cd.cd_weight == 0:
        return "baseline"
    if config.cd.classifier_weight == 0:
        return "ebm"
    return f"kappa{config.cd.classifier_weight:g}" + ("_cc" if config.cd.class_conditional else "")


def validate(config: ExperimentConfig) -> None:
    """Refuse, before any work, loop intervals that do not fit and a batch larger than the training jets."""
    try:
        loop_config(config)
    except ValueError as error:
        raise ConfigError(f"run / cd.iterations_per_call: {error}") from None
    if config.cd.batch_size > len(CLASSES) * config.data.num_train_jets:
        raise ConfigError(f"cd.batch_size ({config.cd.batch_size}) is larger than the "
                          f"{len(CLASSES) * config.data.num_train_jets} training jets")
    if config.cd.class_conditional and config.cd.buffer_size % len(CLASSES):
        raise ConfigError(f"cd.buffer_size ({config.cd.buffer_size}) must be a multiple of the {len(CLASSES)} "
                          f"classes for class-conditional chains")


def loop_config(config: ExperimentConfig, progress: bool = True) -> LoopConfig:
    return LoopConfig(num_steps=config.run.num_steps, iterations_per_call=config.cd.iterations_per_call,
                      log_every=config.run.log_every, checkpoint_every=config.run.checkpoint_every,
                      eval_every=config.run.curve_every, progress=progress)


def data_files(config: ExperimentConfig):
    return _data_files(config.data)


def describe_data(out_dir: Path, config: ExperimentConfig, paths: dict[str, Path]) -> None:
    """``data_summary.json`` and ``plots/data_*.png`` of the test samples, once per run directory."""
    if (out_dir / "data_summary.json").exists():
        return
    write_data_summary(out_dir, {"qcd": paths["qcd_test"], "w": paths["w"], "top": paths["top_test"],
                                 "h_hh_4b": paths["h_hh_4b_test"]},
                       num_jets=config.data.num_test_jets, jet_radius=config.data.jet_radius)


class Trained(NamedTuple):
    """A trained seed: module, feature pipeline, chain-start sampler, final EMA parameters and their step."""

    model: TransformerEnergy
    pipeline: ConstituentPipeline
    noise_fn: Any
    params: Any
    step: int


def _setup(config: ExperimentConfig, pipeline: ConstituentPipeline):
    model = TransformerEnergy(config.model)
    return model, make_noise_fn(**pipeline.noise_parameters())


def _template(model, cd_config: CDConfig, pipeline: ConstituentPipeline, noise_fn):
    x = np.zeros((cd_config.batch_size, pipeline.num_constituents, model.config.num_features), np.float32)
    mask = np.ones(x.shape[:2], bool)
    return jax.eval_shape(lambda key: create_train_state(key, model, cd_config, x, mask, noise_fn), jax.random.key(0))


def _restore_checkpoint(run_dir: Path, template, step: int | None = None) -> tuple[Any, int]:
    """The training state of the checkpoint at ``step`` (default the newest) and its step."""
    with Checkpointer(run_dir / "checkpoints") as ckpt:
        state, meta = ckpt.restore(template, step)
    return state, int(meta["step"])


def parameter_set(state, parameters: str):
    """The EMA ("ema") or the optimiser's own ("raw") parameters of a training state."""
    if parameters not in ("ema", "raw"):
        raise ValueError(f"parameters must be 'ema' or 'raw', got {parameters!r}")
    return state.ema_params if parameters == "ema" else state.params


def train_seed(config: ExperimentConfig, job: SeedJob) -> Trained:
    """Train one seed on the labelled QCD / W / top mix (resuming from checkpoints); final EMA parameters."""
    train_sample = read_jets(job.data["train"])
    pipeline = ConstituentPipeline.fit(train_sample, num_constituents=config.data.num_constituents,
                                       padding_mode=config.cd.padding_mode, feature_space=config.data.feature_space)
    atomic_write_json(job.directory / "pipeline.json", pipeline.to_dict(), sort_keys=False)
    cd_config = dataclasses.replace(config.cd, steps_per_epoch=max(1, len(train_sample.jets) // config.cd.batch_size))
    model, noise_fn = _setup(config, pipeline)

    def to_model_inputs(batch: JetSample):
        x, model_mask, _ = pipeline.transform(batch)
        return (x, model_mask, batch.labels) if cd_config.is_hybrid else (x, model_mask)

    batches = BatchIterator(job.data["train"], cd_config.batch_size, seed=job.seed, transform=to_model_inputs)
    example_x, example_mask = to_model_inputs(read_jets(job.data["train"], 0, cd_config.batch_size))[:2]
    state = create_train_state(jax.random.key(job.seed), model, cd_config, example_x, example_mask, noise_fn)
    test_inputs = {p: pipeline.transform(s)[:2] for p, s in read_test_sets(config.data, job.data).items()}

    def eval_fn(s):
        point = curve_point(model, s.ema_params, test_inputs)
        print(f"seed {job.seed}: step {int(s.step)}: E(x) AUC top {point['energy_auc_top']:.3f}, "
              f"H {point['energy_auc_h_hh_4b']:.3f}; top-1 {point['top1']:.3f}", flush=True)
        return point

    state = train_loop(make_cd_step(model, cd_config, noise_fn), state, batches, job.directory,
                       loop_config(config, job.progress), run_config=config, eval_fn=eval_fn)
    return Trained(model, pipeline, noise_fn, state.ema_params, int(state.step))


def curve_point(model: TransformerEnergy, params, inputs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """One point of the curves over training on the test jets ``{process: (x, mask)}`` (`CLASSES` and the
    signals), through the score API as the final evaluation: AUCs against QCD per signal of E(x)
    (``energy_auc_<signal>``) and of -log p(QCD|x) (``class_nll_auc_<signal>``), and the top-1 accuracy."""
    scores = {p: anomaly_scores(model_outputs_fn(model), params, x, mask) for p, (x, mask) in inputs.items()}
    point = {}
    for name in ("energy", "class_nll"):
        quality = anomaly_quality(scores["qcd"][name], {s: scores[s][name] for s in SIGNALS})
        point.update({f"{name}_auc_{s}": quality[f"auc_{s}"] for s in SIGNALS})
    logits = [class_logits(model, params, *inputs[p]) for p in CLASSES]
    labels = np.concatenate([np.full(len(g), i) for i, g in enumerate(logits)])
    point["top1"] = classification(np.concatenate(logits), labels)["top1"]
    return point


def load_training_state(config: ExperimentConfig, job: SeedJob, step: int | None = None) -> tuple[Trained, Any]:
    """A seed's checkpoint at ``step`` (default the newest) without training: the trained model around its EMA
    parameters, and the whole training state (raw parameters, the replay buffer of the training chains' end points)."""
    pipeline = ConstituentPipeline.from_dict(json.loads((job.directory / "pipeline.json").read_text()))
    model, noise_fn = _setup(config, pipeline)
    state, step = _restore_checkpoint(job.directory, _template(model, config.cd, pipeline, noise_fn), step)
    return Trained(model, pipeline, noise_fn, state.ema_params, step), state


def load_seed(config: ExperimentConfig, job: SeedJob, parameters: str = "ema", step: int | None = None) -> Trained:
    """A trained seed from its directory (``pipeline.json``, the checkpoint at ``step``, default the newest), without
    training; ``parameters`` "ema" (what every evaluation scores) or "raw" (the optimiser's own, for the EMA check)."""
    trained, state = load_training_state(config, job, step)
    return trained._replace(params=parameter_set(state, parameters))


@partial(jax.jit, static_argnames=("model",))
def _logits_batch(params, x, mask, *, model: TransformerEnergy):
    return model.apply(params, x, mask, deterministic=True, method="logits")


def class_logits(model: TransformerEnergy, params, x: np.ndarray, mask: np.ndarray, batch_size: int = 1024):
    """Logits ``g(x) (n, K)`` float64 in fixed-size batches (one compilation)."""
    num, pad = len(x), -len(x) % batch_size
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    mask = np.concatenate([mask, np.ones((pad,) + mask.shape[1:], bool)])
    parts = [np.asarray(_logits_batch(params, x[i:i + batch_size], mask[i:i + batch_size], model=model))
             for i in range(0, len(x), batch_size)]
    return np.concatenate(parts).astype(np.float64)[:num]


def classification(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-2 accuracy and the row-normalised confusion matrix ``confusion_<true>_<predicted>``
    (``logits (n, K)``, ``labels (n,)`` in ``[0, K)``; classes named by `CLASSES`)."""
    ranked = np.argsort(-logits, axis=1)
    out = {"top1": float(np.mean(ranked[:, 0] == labels)),
           "top2": float(np.mean(np.any(ranked[:, :2] == labels[:, None], axis=1)))}
    for true, true_name in enumerate(CLASSES):
        rows = labels == true
        for predicted, predicted_name in enumerate(CLASSES):
            out[f"confusion_{true_name}_{predicted_name}"] = float(np.mean(ranked[rows, 0] == predicted))
    return out


def _generated_per_class(config: ExperimentConfig, trained: Trained, job: SeedJob):
    """Generated jets ``{name: (features, mask)}``: one set per class from class-conditional chains when
    the model was trained with them, else one set "all" from chains on E(x)."""
    key = jax.random.key(10_000 + job.seed)
    num = config.run.num_generated_jets
    if not config.cd.class_conditional:
        return {"all": generate(key, trained.model, trained.params, trained.noise_fn, config.generation, num,
                                progress=job.progress)}
    return {name: generate(jax.random.fold_in(key, label), trained.model, trained.params, trained.noise_fn,
                           config.generation, num, progress=job.progress, class_id=label)
            for label, name in enumerate(CLASSES)}


CURVE_KEYS = ("energy_auc_top", "energy_auc_h_hh_4b", "class_nll_auc_top", "class_nll_auc_h_hh_4b", "top1")


def training_curve(rows: list[dict]) -> dict[str, list[float]]:
    """The curves over training from the ``eval`` rows of ``metrics.jsonl``: ``{"step": [...], key: [...]}``
    for every key of `CURVE_KEYS`, by increasing step (a step logged twice keeps its last row)."""
    points = {row["step"]: row for row in rows if row.get("event") == "eval"}
    steps = sorted(points)
    return {"step": steps, **{key: [float(points[s][key]) for s in steps] for key in CURVE_KEYS}}


def curve_summary(curve: dict[str, list[float]]) -> dict[str, float]:
    """Per curve key: its largest value over training (``<key>_max``) and how far the last point lies below
    it (``<key>_drop``; a turnaround shows as a drop well above the seed-to-seed noise)."""
    out = {}
    for key in CURVE_KEYS:
        if curve[key]:
            out[f"{key}_max"] = max(curve[key])
            out[f"{key}_drop"] = max(curve[key]) - curve[key][-1]
    return out


def evaluate_seed(config: ExperimentConfig, job: SeedJob, trained: Trained) -> dict:
    """Classification (when trained with a cross-entropy), every anomaly score, sculpting, generated jets per
    class (when trained with chains); plots and a seed report."""
    model, pipeline, params = trained.model, trained.pipeline, trained.params
    tests = read_test_sets(config.data, job.data)
    inputs = {p: pipeline.transform(s) for p, s in tests.items()}
    scores = {p: anomaly_scores(model_outputs_fn(model), params, x, mask, coordinate_scale=pipeline.raw_scale)
              for p, (x, mask, _) in inputs.items()}
    results: dict[str, Any] = {"seed": job.seed, "variant": variant_name(config), "step": trained.step}
    rows = read_metrics(job.directory / "metrics.jsonl")
    curve = training_curve(rows)
    results["training_curve"] = curve_summary(curve)
    logits = {p: class_logits(model, params, *inputs[p][:2]) for p in CLASSES}
    labels = np.concatenate([np.full(len(logits[p]), i) for i, p in enumerate(CLASSES)])
    if config.cd.classifier_weight > 0:
        results["classification"] = classification(np.concatenate([logits[p] for p in CLASSES]), labels)
    qcd_mass = tests["qcd"].jets[:, 3]
    for name in scores["qcd"]:
        results[f"anomaly_{name}"] = anomaly_quality(scores["qcd"][name], {s: scores[s][name] for s in SIGNALS},
                                                     background_mass=qcd_mass)
    generated = _generated_per_class(config, trained, job) if config.cd.cd_weight > 0 else {}
    real = {name: pipeline.jets_as_model_sees(tests[name]) if name != "all" else
            pipeline.jets_as_model_sees(_concat([tests[p] for p in CLASSES]))
            for name in generated}
    gen_p4 = {name: pipeline.to_four_vectors(x, mask) for name, (x, mask) in generated.items()}
    for name, (x, mask) in generated.items():
        results[f"generated_{name}"] = generation_quality(*real[name], gen_p4[name], mask, with_jetnet=False)
    ebm_clf_report.write_seed_report(
        job.directory, results, rows=rows, curve=curve, scores=scores, masses={p: t.jets[:, 3] for p, t in tests.items()},
        logits=logits, real=real, generated={n: (gen_p4[n], generated[n][1]) for n in generated})
    return results


def _concat(samples: list[JetSample]) -> JetSample:
    return JetSample(*(np.concatenate([getattr(s, f) for s in samples]) for f in ("constituents", "mask", "jets")),
                     None, {})


def sample(config: ExperimentConfig, trained: Trained, num_jets: int, seed: int, progress: bool = True) -> JetSample:
    """``num_jets`` jets from chains on E(x) (``config.generation``) as four-vectors in the jet frame."""
    x, mask = generate(jax.random.key(seed), trained.model, trained.params, trained.noise_fn, config.generation,
                       num_jets, progress=progress)
    p4 = trained.pipeline.to_four_vectors(x, mask).astype(np.float32)
    attrs = {"model": "ebm_clf", "seed": seed, "step": trained.step, "chain_steps": config.generation.num_steps}
    return JetSample(p4, mask, jet_summary(p4, mask, mask.sum(axis=1)), None, attrs)


EXPERIMENT = Experiment(
    name="ebm_clf", config_class=ExperimentConfig, presets=CONFIG_DIR, validate=validate, data_files=data_files,
    describe_data=describe_data, train_seed=train_seed, load_seed=load_seed, evaluate_seed=evaluate_seed,
    write_summary=ebm_clf_report.write_summary, write_report=ebm_clf_report.write_report, sample=sample)
