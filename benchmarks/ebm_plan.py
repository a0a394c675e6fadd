"""The EBM benchmark suite's plan: model sizes, precisions, device peaks and what each platform measures."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from benchmarks import ebm_costs
from jaxebm.inference import GenerationConfig
from jaxebm.models.transformer import TransformerConfig
from jaxebm.sampling.langevin import LangevinConfig
from jaxebm.train.cd import CDConfig


SIZES = {
    "paper": TransformerConfig(),                                                    # 8 x 128, 16 heads, ff 1024
    "small": TransformerConfig(num_layers=2, d_model=64, num_heads=8, ff_dim=256),
    "tiny": TransformerConfig(num_layers=1, d_model=32, num_heads=4, ff_dim=64),    # --quick only
}
N = ebm_costs.NUM_CONSTITUENTS
CD_DEFAULTS = CDConfig()
CHAIN = LangevinConfig(step_size=CD_DEFAULTS.step_size, noise_scale=CD_DEFAULTS.noise_scale)
NOISE_MEAN, NOISE_STD = (2.0, 0.0, 0.0), (1.0, 0.1, 0.2)   # paper's chain starts (log pT, eta, phi)
GENERATION_STEPS = GenerationConfig().num_steps
SECTIONS = ("langevin", "cost", "train", "generation")

PRECISIONS = {
    "f32": "float32 parameters and activations (XLA's default precision: TF32 products on a GPU)",
    "bf16": "parameters and chain input cast to bfloat16 inside the energy; chain state, update, noise float32",
    "f32_bf16dot": "float32 arrays, products with the BF16_BF16_F32 dot algorithm (jax.default_matmul_precision)",
}
BYTES_PER_ELEMENT = {"f32": 4, "bf16": 2, "f32_bf16dot": 4}
PEAK_CLASS = {"f32": "tf32", "bf16": "bf16", "f32_bf16dot": "bf16"}
TORCH_PRECISIONS = ("f32", "bf16")

# Datasheet dense peaks (no sparsity), FLOP/s, and memory bandwidth, bytes/s; first match of device_kind.
DEVICE_PEAKS = (
    ("H200", {"tf32": 494e12, "bf16": 989e12}, 4.8e12),
    ("H100 PCIe", {"tf32": 378e12, "bf16": 756e12}, 2.0e12),
    ("H100", {"tf32": 494e12, "bf16": 989e12}, 3.35e12),
)


@dataclass(frozen=True)
class LangevinCase:
    """One chain configuration: model size name, chains (batch) and Langevin steps per timed call."""

    size: str
    batch: int
    steps: int


@dataclass(frozen=True)
class Plan:
    """What a run measures; `make_plan` picks it from the platform and --quick.

    repeats: timed calls per Langevin case (train_repeats for the CD iteration; generation uses
    repeats). warmup: untimed calls after the first (compiling) call, for Langevin cases and the
    ceilings; heavy_warmup: the same for the CD iteration and generation, which last seconds on a CPU.
    """

    langevin: tuple[LangevinCase, ...]
    precisions: tuple[str, ...]
    repeats: int
    warmup: int
    heavy_warmup: int
    matmul_size: int
    copy_mib: int
    train_size: str
    train_config: CDConfig
    train_repeats: int
    generation_size: str
    generation_batch: int
    generation_steps: int
    notes: tuple[str, ...] = field(default=())


def make_plan(platform: str, quick: bool) -> Plan:
    """Sizes and repetitions: --quick (seconds, tiny model); CPU (estimated 10-15 minutes on 2 quiet cores
    with the peer, the CD iterations taking about half); GPU (run in parts: benchmarks/gpu_suite.sh)."""
    gpu = platform == "gpu"
    precisions = ("f32", "bf16", "f32_bf16dot") if gpu else ("f32",)
    if quick:
        return Plan(langevin=(LangevinCase("tiny", 16, 2), LangevinCase("tiny", 64, 2)), precisions=precisions,
                    repeats=1, warmup=1, heavy_warmup=1, matmul_size=512, copy_mib=16, train_size="tiny",
                    train_config=CDConfig(num_langevin_steps=2, buffer_size=64, batch_size=16),
                    train_repeats=1, generation_size="tiny", generation_batch=32, generation_steps=2,
                    notes=("--quick: tiny model and sizes, 1 repetition; validates the suite, not a result",))
    if gpu:
        cases = tuple(LangevinCase(size, batch, steps) for size in ("paper", "small")
                      for batch, steps in ((128, 50), (1024, 20), (8192, 5 if size == "paper" else 20)))
        return Plan(langevin=cases, precisions=precisions, repeats=5, warmup=2, heavy_warmup=2,
                    matmul_size=8192, copy_mib=2048, train_size="paper", train_config=CD_DEFAULTS, train_repeats=5,
                    generation_size="paper", generation_batch=10_000, generation_steps=GENERATION_STEPS,
                    notes=("GPU: f32 means XLA's default precision, TF32 products (torch set to match)",))
    cases = (LangevinCase("paper", 128, 2), LangevinCase("small", 128, 10), LangevinCase("small", 1024, 3),
             LangevinCase("small", 8192, 1))
    return Plan(langevin=cases, precisions=precisions, repeats=3, warmup=1, heavy_warmup=0,
                matmul_size=4096, copy_mib=256, train_size="paper", train_config=CD_DEFAULTS, train_repeats=2,
                generation_size="paper", generation_batch=1024, generation_steps=2,
                notes=("CPU: paper size at batch 128 only (batch 1024 costs ~5 s per step here)",
                       "CPU generation: batch 1024 and 2 steps measured, scaled linearly to 200 steps "
                       "(batch 10k would need ~40 GB for the input gradient's activations)"))


def select(plan: Plan, sizes: list[str] | None, precisions: list[str] | None) -> Plan:
    """``plan`` restricted to the Langevin sizes and the precisions asked for (None: all)."""
    cases = tuple(c for c in plan.langevin if sizes is None or c.size in sizes)
    kept = tuple(p for p in plan.precisions if precisions is None or p in precisions)
    return dataclasses.replace(plan, langevin=cases, precisions=kept)


def device_peak(device_kind: str) -> dict | None:
    """Datasheet peaks for ``device_kind``: {"flops": {class: FLOP/s}, "bandwidth": bytes/s, "match": ...}."""
    for name, flops, bandwidth in DEVICE_PEAKS:
        if name.lower() in device_kind.lower():
            return {"match": name, "flops": flops, "bandwidth": bandwidth}
    return None
