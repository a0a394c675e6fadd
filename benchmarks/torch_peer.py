"""Independent PyTorch peer of the transformer energy, its Langevin chain and its CD step.

Written for `benchmarks.bench_ebm` to compare against on the same machine and inputs. The network
follows the structure in /work/shared/REFERENCE.md section 1 and `jaxebm.models.transformer` (same
`TransformerConfig`): linear embedding, blocks of masked multi-head self-attention (heads of width
d_model / num_heads, scores scaled by 1/sqrt(head width), padded keys masked) and a ReLU
feed-forward, both residual with dropout and no normalisation, sum pooling over real constituents,
and a Swish MLP projector to one number. It does the same matrix products as the JAX model, so the
analytic FLOP counts of `benchmarks.ebm_costs` hold for both; the weights are PyTorch's own default
initialisation, not copies of the JAX ones.

The chain and the CD step are in the style of the paper's public code: eager PyTorch, a Python loop
over the Langevin steps with the model frozen (``requires_grad`` False on the parameters, the chain
position with ``requires_grad`` True, one ``torch.autograd.grad`` per step), then the CD loss with
dropout on, global-norm clipping and Adam, and the chain ends written back to the replay buffer.
`compile_model` wraps the same module in ``torch.compile`` for the compiled variant.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from jaxebm.models.transformer import TransformerConfig
from jaxebm.train.cd import CDConfig

__all__ = ["TorchEnergy", "build_model", "pick_device", "sync", "release_memory", "set_frozen", "compile_model",
           "langevin_chain", "TorchCD", "matmul_rate"]

_ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU}
_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"the torch peer supports activations {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


class MaskedSelfAttention(nn.Module):
    """``h (B, N, d)``, ``mask (B, N)`` bool -> ``(B, N, d)``; weights on padded keys are zero."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.d_model // config.num_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, num, width = h.shape
        qkv = self.qkv(h).view(batch, num, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)                                   # (B, H, N, head_dim)
        scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)   # (B, H, N, N)
        is_real_key = mask[:, None, None, :]
        scores = scores.masked_fill(~is_real_key, torch.finfo(scores.dtype).min)
        weights = self.dropout(torch.softmax(scores, dim=-1) * is_real_key)
        attended = (weights @ value).transpose(1, 2).reshape(batch, num, width)
        return self.out(attended)


class SelfAttentionBlock(nn.Module):
    """Residual masked attention, then residual feed-forward (no normalisation layers)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.attention = MaskedSelfAttention(config)
        self.ff_in = nn.Linear(config.d_model, config.ff_dim)
        self.ff_out = nn.Linear(config.ff_dim, config.d_model)
        self.activation = _activation(config.ff_activation)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = h + self.dropout(self.attention(h, mask))
        hidden = self.dropout(self.activation(self.ff_in(h)))
        return h + self.dropout(self.ff_out(hidden))


class TorchEnergy(nn.Module):
    """Energy ``E(x)``: ``x (B, N, F)``, ``mask (B, N)`` bool -> ``(B,)`` (lower = more probable).

    The chain position may be float32 while the module is bfloat16: ``x`` is cast to the module's
    dtype at the input and the energy is returned as float32.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if config.norm != "none":
            raise ValueError("the torch peer implements the paper's network (norm='none') only")
        self.embed = nn.Linear(config.num_features, config.d_model)
        self.blocks = nn.ModuleList(SelfAttentionBlock(config) for _ in range(config.num_layers))
        widths = (config.d_model,) + tuple(config.projector_sizes)
        layers = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), _activation(config.projector_activation)]
        self.projector = nn.Sequential(*layers, nn.Linear(widths[-1], 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        is_real = mask[..., None]
        x = torch.where(is_real, x, 0.0).to(self.embed.weight.dtype)
        h = self.embed(x)
        for block in self.blocks:
            h = block(h, mask)
        pooled = torch.where(is_real, h, 0.0).sum(dim=1)
        return self.projector(pooled)[:, 0].float()


def pick_device(jax_platform: str) -> torch.device:
    """CUDA when the JAX run is on a GPU and torch sees one, else the CPU."""
    if jax_platform == "gpu" and torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32, as XLA's default for float32 on GPU
        return torch.device("cuda")
    return torch.device("cpu")


def sync(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    """Return the caching allocator's free blocks to the device (JAX shares it in the same process)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build_model(config: TransformerConfig, device: torch.device, precision: str = "f32",
                seed: int = 0) -> TorchEnergy:
    """A freshly initialised `TorchEnergy` on ``device`` with parameters in ``precision`` ('f32'/'bf16')."""
    torch.manual_seed(seed)
    return TorchEnergy(config).to(device=device, dtype=_DTYPES[precision])


def set_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (``requires_grad`` False, eval mode: dropout off) or unfreeze (train mode) the model."""
    for parameter in model.parameters():
        parameter.requires_grad_(not frozen)
    model.train(not frozen)


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile`` of ``model`` (compilation happens at the first call; it may raise there)."""
    return torch.compile(model)


def langevin_chain(energy: nn.Module, x0: torch.Tensor, mask: torch.Tensor, num_steps: int,
                   step_size: float, noise_scale: float) -> torch.Tensor:
    """``num_steps`` steps ``x <- x - step_size * grad_x E(x) + noise_scale * eps`` from ``x0 (B, N, F)``.

    The caller freezes the parameters (`set_frozen`); the chain state stays float32.
    """
    x = x0
    for _ in range(num_steps):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x, mask).sum(), x)
        x = x - step_size * grad + noise_scale * torch.randn_like(x)
    return x.detach()


class TorchCD:
    """CD iterations (Algorithm 1) with a replay buffer on the device, paper style.

    ``energy`` is the module called (the model itself or its ``torch.compile`` wrapper); ``model`` is
    the module whose parameters are trained. "zeros" padding: every slot is a real constituent.
    """

    def __init__(self, model: nn.Module, energy: nn.Module, config: CDConfig, num_constituents: int,
                 noise_mean: tuple[float, ...], noise_std: tuple[float, ...], device: torch.device):
        self.model, self.energy, self.config, self.device = model, energy, config, device
        self.mean = torch.tensor(noise_mean, device=device)
        self.std = torch.tensor(noise_std, device=device)
        self.num_constituents = num_constituents
        self.buffer = self._noise(config.buffer_size)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                          betas=(config.adam_b1, config.adam_b2))

    def _noise(self, num: int) -> torch.Tensor:
        """Chain starts ``(num, N, F)``: each feature ~ N(mean, std^2)."""
        shape = (num, self.num_constituents, self.mean.shape[0])
        return self.mean + self.std * torch.randn(shape, device=self.device)

    def _starts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffer slots ``(B,)`` and chain starts: buffer samples, each restarted from noise w.p. restart_prob."""
        c = self.config
        slots = torch.randint(0, c.buffer_size, (c.batch_size,), device=self.device)
        restart = torch.rand(c.batch_size, device=self.device) < c.restart_prob
        starts = torch.where(restart[:, None, None], self._noise(c.batch_size), self.buffer[slots])
        return slots, starts

    def step(self, x_pos: torch.Tensor) -> torch.Tensor:
        """One iteration on data ``x_pos (B, N, F)``; returns the loss (a 0-d tensor)."""
        c = self.config
        slots, starts = self._starts()
        mask = torch.ones(starts.shape[:2], dtype=torch.bool, device=self.device)
        set_frozen(self.model, True)
        x_neg = langevin_chain(self.energy, starts, mask, c.num_langevin_steps, c.step_size, c.noise_scale)
        set_frozen(self.model, False)
        x_pos = x_pos + c.data_noise * torch.randn_like(x_pos)
        energies = self.energy(torch.cat([x_pos, x_neg]), torch.cat([mask, mask]))
        e_pos, e_neg = energies.chunk(2)
        loss = e_pos.mean() - e_neg.mean() + c.alpha * (e_pos.square() + e_neg.square()).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip_norm)
        self.optimizer.step()
        self.buffer[slots] = x_neg
        return loss.detach()


def matmul_rate(size: int, device: torch.device, repeats: int, dtype: str = "f32") -> float:
    """Median FLOP/s of a ``size x size`` by ``size x size`` product on random data (one warm-up)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator, device=device, dtype=_DTYPES[dtype]) for _ in range(2))
    times = []
    for index in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        if index:
            times.append(time.perf_counter() - start)
    return 2 * size ** 3 / float(np.median(times))
