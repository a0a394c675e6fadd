"""The settings of the generation study: one `Family` per sampler setting and the grid (`study_grid`).

Shared constants: the jet pT range of the textbook JSD (400-800 GeV), the constituent features, the
main metric and the study's seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxebm.evaluation import JSD_RANGES
from jaxebm.sampling.langevin import LangevinConfig
from jaxebm.sampling.schedules import InverseTime, StepDecay

PT_OVERFLOW, PT_UNDERFLOW = JSD_RANGES["pt"][1], JSD_RANGES["pt"][0]  # 800, 400 GeV
FEATURES = ("log_pt", "eta", "phi")
HARD_LOG_PT = math.log(100.0)  # a "hard" slot: constituent pT > 100 GeV
MAIN_METRIC = "distance"
PAPER_FAMILY = "ula_paper"
STUDY_SEED = 2024


@dataclass(frozen=True)
class Family:
    """One sampler setting, run once per jet to ``max(lengths)`` steps and scored at each length.

    sampler: "ula" or "mala". step: float (constant), `StepDecay` or `InverseTime`. noise: float, or
    None for tied ``sqrt(2 * step)``. start: "noise" (`noise_fn`) or "buffer" (the checkpoint's replay
    buffer). floor: the length kept when the time budget is short (while it fits at all; default the
    shortest). extra: longer lengths the same chains are continued to at the end if time is left.
    """

    name: str
    description: str
    sampler: str = "ula"
    step: Any = 0.1
    noise: float | None = 0.001
    temperature: float = 1.0
    start: str = "noise"
    lengths: tuple[int, ...] = (25, 50, 100, 200)
    floor: int | None = None
    extra: tuple[int, ...] = ()

    def __post_init__(self):
        if self.sampler not in ("ula", "mala") or self.start not in ("noise", "buffer"):
            raise ValueError(f"bad family {self}")
        if not self.lengths or min(self.lengths) < 1 or (self.extra and min(self.extra) <= max(self.lengths)):
            raise ValueError(f"family {self.name}: lengths must be positive and extra longer, got {self}")
        if not isinstance(self.step, (float, StepDecay, InverseTime)):
            raise ValueError(f"family {self.name}: step must be a float, StepDecay or InverseTime, got {self.step!r}")

    @property
    def langevin_config(self) -> LangevinConfig:
        """The library config of this setting (the study runs the same chain with the settings as arguments)."""
        return LangevinConfig(step_size=self.step, noise_scale=self.noise, temperature=self.temperature)

    @property
    def guaranteed(self) -> int:
        """The length run first, before any family is lengthened (``floor``, else the shortest)."""
        return min(self.lengths) if self.floor is None else self.floor

    def evaluations(self, num_steps: int) -> int:
        """Energy-gradient evaluations per jet after ``num_steps`` (MALA also evaluates its start)."""
        return num_steps + (1 if self.sampler == "mala" and num_steps > 0 else 0)

    @property
    def generation_config(self) -> dict | None:
        """The setting as `GenerationConfig` fields (without ``num_steps``), or None where `generate` cannot
        run it (MALA, buffer starts, tied noise, inverse-time steps)."""
        if self.sampler != "ula" or self.start != "noise" or self.noise is None:
            return None
        if isinstance(self.step, float):
            decay = {"step_size": self.step, "step_decay": 1.0, "decay_every": 40}
        elif isinstance(self.step, StepDecay):
            decay = {"step_size": self.step.init_value, "step_decay": self.step.factor, "decay_every": self.step.every}
        else:
            return None
        return decay | {"noise_scale": self.noise, "temperature": self.temperature}

    def describe_step(self) -> str:
        """The step schedule as text (``0.1 x 0.8 / 40``, ``0.2 / (1 + 0.02 t)``), noting tied noise."""
        step = self.step
        if isinstance(step, float):
            text = f"{step:g}"
        elif isinstance(step, StepDecay):
            text = f"{step.init_value:g} x {step.factor:g} / {step.every}"
        else:
            text = f"{step.init_value:g} / (1 + {step.rate:g} t)"
        return text + (" (tied noise sqrt(2 step))" if self.noise is None else "")

    def settings(self) -> dict[str, np.ndarray]:
        """The setting as chain arguments: step ``step * factor ** (t // every) / (1 + rate t)``, noise, T."""
        step = self.step
        if isinstance(step, float):
            init, factor, every, rate = step, 1.0, 1, 0.0
        elif isinstance(step, StepDecay):
            init, factor, every, rate = step.init_value, step.factor, step.every, 0.0
        else:
            init, factor, every, rate = step.init_value, 1.0, 1, step.rate
        return {"step": np.float32(init), "factor": np.float32(factor), "every": np.int32(every),
                "rate": np.float32(rate), "noise": np.float32(0.0 if self.noise is None else self.noise),
                "tied": np.bool_(self.noise is None), "temperature": np.float32(self.temperature)}


PAPER_STEP = StepDecay(0.1, 0.8, 40)
TRAIN_T_EFF = 0.005 ** 2 / (2 * 0.1)  # stationary temperature of the training chain (step 0.1, noise 0.005)


def study_grid(quick: bool) -> list[Family]:
    """The settings of the study, in priority order; ``quick``: a tiny grid for tests (seconds on the smoke run)."""
    if quick:
        return [
            Family(PAPER_FAMILY, "paper: ULA, step 0.1 x 0.8 / 40, noise 0.001", step=PAPER_STEP, lengths=(4, 8)),
            Family("mala_tied_train_T", "MALA, tied noise, T = T_eff of training: the exact training chain",
                   sampler="mala", step=0.1 * TRAIN_T_EFF, noise=None, temperature=TRAIN_T_EFF, lengths=(4, 8)),
            Family("buffer_ula_train", "replay buffer, then ULA step 0.1 noise 0.005", noise=0.005, start="buffer",
                   lengths=(4, 8)),
        ]
    short, brief = (25, 50, 100), (25, 50)
    return [
        Family(PAPER_FAMILY, "paper: ULA, step 0.1 x 0.8 / 40, noise 0.001", step=PAPER_STEP, floor=200,
               extra=(400,)),
        Family("ula_const_n0.005", "ULA, constant step 0.1, noise 0.005 (the training chain)", noise=0.005,
               floor=50, extra=(400,)),
        Family("buffer_ula_train", "replay buffer, then ULA step 0.1 noise 0.005 (the training chain continued)",
               noise=0.005, start="buffer", lengths=short),
        Family("mala_tied_train_T", f"MALA, tied noise, step {0.1 * TRAIN_T_EFF:.3g}, T = {TRAIN_T_EFF:.3g} (T_eff of "
               "the training chain): the training chain made exact", sampler="mala", step=0.1 * TRAIN_T_EFF,
               noise=None, temperature=TRAIN_T_EFF, lengths=short),
        Family("mala_paper", "MALA, paper schedule, noise 0.001 (decoupled, T = 1)", sampler="mala",
               step=PAPER_STEP, lengths=brief),
        Family("ula_paper_T0.5", "ULA, paper schedule, noise 0.001, T = 0.5", step=PAPER_STEP, temperature=0.5,
               lengths=short),
        Family("ula_paper_T2", "ULA, paper schedule, noise 0.001, T = 2", step=PAPER_STEP, temperature=2.0,
               lengths=short),
        Family("ula_paper_n0", "ULA, paper schedule, noise 0 (annealed gradient descent)", step=PAPER_STEP,
               noise=0.0, lengths=short),
        Family("ula_paper_n0.005", "ULA, paper schedule, noise 0.005 (training noise)", step=PAPER_STEP,
               noise=0.005, lengths=short),
        Family("ula_const_n0.001", "ULA, constant step 0.1, noise 0.001", lengths=short, extra=(200,)),
        Family("ula_fast_decay", "ULA, step 0.2 x 0.5 / 25, noise 0.001", step=StepDecay(0.2, 0.5, 25),
               lengths=short),
        Family("mala_tied_T1", "MALA, tied noise sqrt(2 step), step 1e-3, T = 1 (the model's own density)",
               sampler="mala", step=1e-3, noise=None, lengths=brief),
        Family("buffer_ula_paper", "replay buffer, then the paper's chain", step=PAPER_STEP, start="buffer",
               lengths=brief),
        Family("ula_inv_time", "ULA, step 0.2 / (1 + t / 50), noise 0.001", step=InverseTime(0.2, 0.02),
               lengths=short),
    ]


def paper_reference(rows: list[dict]) -> str | None:
    """The paper's setting as run: 200 steps, else its longest chain in the study."""
    paper = sorted((r for r in rows if r["family"] == PAPER_FAMILY), key=lambda r: r["steps"])
    if not paper:
        return None
    return next((r["setting"] for r in paper if r["steps"] == 200), paper[-1]["setting"])
