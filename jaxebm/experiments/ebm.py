"""The EBM for jets (Cheng & Courville, NeurIPS 2023) end to end on our own Pythia jets.

For each seed: train the masked-transformer energy on QCD jets by contrastive divergence (Algorithm 1),
select the checkpoint whose validation chains come closest to the validation QCD jets (EMA parameters,
unbinned W1 distance of jet pT, mass and M/pT, `jaxebm.evaluation.selection_distance`), generate jets
with the paper's long annealed chains, score QCD / top / H -> hh -> 4b test jets by energy and score
norm, and write a run directory; then a summary over seeds with the paper's Tables 2-3 side by side,
each number in the paper's own convention.

    python -m experiments.ebm_jets --preset cpu                      # 3 seeds, <= ~20 min each on 2 cores
    python -m experiments.ebm_jets --preset cpu --seeds 0 --set run.num_steps=200
    python -m experiments.ebm_jets --preset paper                    # Table 4 sizes, 300k jets (GPU)

``<out>/data_summary.json`` and ``<out>/plots/data_*.png`` describe the jet samples. Run directory ``<out>/seed_<s>/``: config.json, pipeline.json, checkpoints/, metrics.jsonl,
samples.h5, results.json, report.md, plots/*.png. ``<out>/summary.json`` and ``<out>/report.md``
collect the seeds. An interrupted run resumes from its checkpoints when started again.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from experiments.ebm_report import write_data_summary, write_seed_report, write_summary
from jaxebm.config import load_config, save_config
from jaxebm.data.generate import GenerationConfig as JetGenerationConfig, generate_jets
from jaxebm.data.io import JetSample, read_jets, write_jets
from jaxebm.data.loader import BatchIterator, split_indices
from jaxebm.data.pipeline import ConstituentPipeline
from jaxebm.evaluation import anomaly_quality, generation_quality, selection_distance
from jaxebm.inference import GenerationConfig, anomaly_scores, generate
from jaxebm.models.transformer import TransformerConfig, TransformerEnergy
from jaxebm.train.cd import CDConfig, make_cd_step, make_noise_fn
from jaxebm.train.checkpoint import Checkpointer
from jaxebm.train.loop import LoopConfig, train_loop
from jaxebm.train.state import create_train_state

CONFIG_DIR = Path(__file__).parent / "configs"
TEST_PROCESSES = ("qcd", "top", "h_hh_4b")
BEST_METRIC = "val_distance"
SIGNALS = ("top", "h_hh_4b")


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


@dataclass(frozen=True)
class RunConfig:
    """Training length, evaluation and checkpoint cadence (in CD iterations) and evaluation sizes."""

    num_steps: int = 1000
    log_every: int = 25
    checkpoint_every: int = 250
    eval_every: int = 250
    num_val_jets: int = 512
    val_chain_steps: int = 128
    num_generated_jets: int = 5_000


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "cpu"
    seeds: tuple[int, ...] = (0, 1, 2)
    data: DataConfig = field(default_factory=DataConfig)
    model: TransformerConfig = field(default_factory=TransformerConfig)
    cd: CDConfig = field(default_factory=CDConfig)
    run: RunConfig = field(default_factory=RunConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


def data_paths(config: DataConfig) -> dict[str, Path]:
    root = Path(config.data_dir)
    return {"train": root / "qcd_train.h5", **{p: root / f"{p}_test.h5" for p in TEST_PROCESSES}}


def ensure_data(config: DataConfig) -> dict[str, Path]:
    """Generate any missing sample file (Pythia 8, pT 550-650 GeV, |eta| < 2) and return the paths."""
    jobs = {"train": ("qcd", config.num_train_jets, 0), **{p: (p, config.num_test_jets, i + 1)
                                                           for i, p in enumerate(TEST_PROCESSES)}}
    paths = data_paths(config)
    for name, (process, num_jets, offset) in jobs.items():
        if not paths[name].exists():
            print(f"generating {num_jets} {process} jets -> {paths[name]}")
            generate_jets(JetGenerationConfig(
                process=process, num_jets=num_jets, seed=config.generator_seed + offset,
                num_workers=config.num_workers, jet_radius=config.jet_radius, max_constituents=100),
                out_path=paths[name])
    return paths


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


def make_validation_fn(model, pipeline, noise_fn, val_sample: JetSample, config: ExperimentConfig):
    """``eval_fn(state)``: validation-length chains (EMA params) vs validation QCD jets: the selection
    distance (``val_distance`` and its bootstrap error ``val_distance_err``) and the JSDs."""
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
        return {f"val_{k}": v for k, v in quality.items()} | {"val_distance": distance, "val_distance_err": error}

    return eval_fn


def train_seed(config: ExperimentConfig, seed: int, run_dir: Path, paths: dict[str, Path]):
    """Train one seed (resuming if checkpoints exist); returns model, pipeline, noise_fn, best EMA params."""
    train_file = read_jets(paths["train"])
    train_rows, val_rows = train_val_rows(len(train_file.jets), config.data, seed)
    pipeline = ConstituentPipeline.fit(_subset(train_file, train_rows), num_constituents=config.data.num_constituents,
                                       padding_mode=config.cd.padding_mode, feature_space=config.data.feature_space)
    (run_dir / "pipeline.json").write_text(json.dumps(pipeline.to_dict(), indent=2))
    cd_config = dataclasses.replace(config.cd, steps_per_epoch=max(1, len(train_rows) // config.cd.batch_size))
    model = TransformerEnergy(config.model)
    noise_fn = make_noise_fn(**pipeline.noise_parameters())

    def to_model_inputs(batch: JetSample):
        x, model_mask, _ = pipeline.transform(batch)
        return x, model_mask

    batches = BatchIterator(paths["train"], cd_config.batch_size, indices=train_rows, seed=seed,
                            transform=to_model_inputs)
    example_x, example_mask = to_model_inputs(_subset(train_file, train_rows[: cd_config.batch_size]))
    state = create_train_state(jax.random.key(seed), model, cd_config, example_x, example_mask, noise_fn)
    loop_config = LoopConfig(num_steps=config.run.num_steps, iterations_per_call=cd_config.iterations_per_call,
                             log_every=config.run.log_every, checkpoint_every=config.run.checkpoint_every,
                             eval_every=config.run.eval_every, best_metric=BEST_METRIC, best_mode="min")
    eval_fn = make_validation_fn(model, pipeline, noise_fn, _subset(train_file, val_rows), config)
    step_fn = make_cd_step(model, cd_config, noise_fn)
    state = train_loop(step_fn, state, batches, run_dir, loop_config, eval_fn=eval_fn, run_config=config)
    with Checkpointer(run_dir / "checkpoints", best_metric=BEST_METRIC, best_mode="min") as ckpt:
        template = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), state)
        has_best = bool(ckpt.steps(best=True))
        best_state, meta = ckpt.restore(template, best=True) if has_best else (state, {"step": int(state.step)})
    return model, pipeline, noise_fn, best_state.ema_params, int(meta["step"])


def evaluate_seed(config: ExperimentConfig, seed: int, run_dir: Path, paths: dict[str, Path], model, pipeline,
                  noise_fn, params) -> dict:
    """Generation quality, anomaly scores and sculpting on the test sets; writes samples.h5 and plots.

    Score norms: ``anomaly_score_norm`` in the paper's raw (log pT, eta, phi) coordinates; with
    standardised features also ``anomaly_score_norm_model`` in the model's space. The truth-vs-truth
    floor compares as many training-file jets with the test QCD jets as there are generated jets.
    """
    tests = {p: read_jets(paths[p], 0, config.data.num_test_jets) for p in TEST_PROCESSES}
    inputs = {p: pipeline.transform(s) for p, s in tests.items()}
    score_spaces = {"score_norm": pipeline.raw_scale}
    if pipeline.feature_space != "raw":
        score_spaces["score_norm_model"] = None
    scores = {}
    for p, (x, model_mask, _) in inputs.items():
        norms = {name: anomaly_scores(model, params, x, model_mask, coordinate_scale=scale)
                 for name, scale in score_spaces.items()}
        scores[p] = {"energy": norms["score_norm"][0], **{name: norm for name, (_, norm) in norms.items()}}

    key_gen, key_noise = jax.random.split(jax.random.key(10_000 + seed))
    gen_x, gen_mask = generate(key_gen, model, params, noise_fn, config.generation, config.run.num_generated_jets)
    noise = noise_fn(key_noise, config.run.num_generated_jets)
    noise_x, noise_mask = (noise if isinstance(noise, tuple) else (noise, np.ones(noise.shape[:2], bool)))
    noise_x, noise_mask = np.asarray(noise_x), np.asarray(noise_mask)
    noise_energy, _ = anomaly_scores(model, params, noise_x, noise_mask)

    real_p4, real_mask = pipeline.jets_as_model_sees(tests["qcd"])
    gen_p4 = pipeline.to_four_vectors(gen_x, gen_mask)
    truth_p4, truth_mask = pipeline.jets_as_model_sees(read_jets(paths["train"], 0, config.run.num_generated_jets))
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
    write_jets(run_dir / "samples.h5", JetSample(
        gen_p4.astype(np.float32), gen_mask, np.zeros((len(gen_p4), 5), np.float32), None,
        {"model": "ebm", "seed": seed, "space": "centred and rotated jet frame (eta, phi relative to the axis)"}))
    write_seed_report(run_dir, results, tests=tests, scores=scores, noise_energy=noise_energy,
                      real=(real_p4, real_mask, pipeline.to_raw_features(*inputs["qcd"][:2])),
                      generated=(gen_p4, gen_mask, pipeline.to_raw_features(gen_x, gen_mask)))
    return results


def run(config: ExperimentConfig, out_dir: Path) -> dict:
    """All seeds, then the summary; returns the summary dict."""
    paths = ensure_data(config.data)
    if not (out_dir / "data_summary.json").exists():
        summary = write_data_summary(out_dir, paths, num_jets=config.data.num_test_jets, jet_radius=config.data.jet_radius)
        print("data:", json.dumps({name: s["mass_q16_50_84"] for name, s in summary.items()}), "(jet mass quantiles, GeV)")
    per_seed = []
    for seed in config.seeds:
        run_dir = out_dir / f"seed_{seed}"
        results_path = run_dir / "results.json"
        if results_path.exists():
            per_seed.append(json.loads(results_path.read_text()))
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.json")
        model, pipeline, noise_fn, params, best_step = train_seed(config, seed, run_dir, paths)
        results = evaluate_seed(config, seed, run_dir, paths, model, pipeline, noise_fn, params)
        results["best_step"] = best_step
        tmp = results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, results_path)
        per_seed.append(results)
    return write_summary(out_dir, config, per_seed)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help="name in experiments/configs/ or a TOML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--out", type=Path, help="output directory (default runs/ebm_jets/<preset name>)")
    args = parser.parse_args(argv)
    preset = Path(args.preset) if args.preset.endswith(".toml") else CONFIG_DIR / f"{args.preset}.toml"
    overrides = list(args.overrides) + ([f"seeds={list(args.seeds)}"] if args.seeds else [])
    config = load_config(ExperimentConfig, preset, overrides)
    summary = run(config, args.out or Path("runs/ebm_jets") / config.name)
    print(json.dumps(summary["mean"], indent=2))


if __name__ == "__main__":
    main()
