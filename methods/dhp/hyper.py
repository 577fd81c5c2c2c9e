"""DHP's per-layer hypernetwork: latent vectors → conv weight (Li et al., ECCV 2020, §3.2).

For a conv with n output and c input channels (per group) and a kh×kw kernel, every weight element
(output i, input j) is generated from the latent product z_ij = b_i·a_j (b = the layer's own latent,
a = the vector of the layers producing its input) by a chain with no nonlinearity, m = 8:

    1. latent layer  Z = a bᵀ + B0                          [c, n]
    2. embedding     E[j, i, :] = Z[j, i]·W1[j, i, :] + B1[j, i, :]     [c, n, m]
    3. explicit      O[j, i, :] = W2[j, i] (k²×m) · E[j, i, :] + B2[j, i, :]   [c, n, k²]
    4. reshape to [c, n, kh, kw], permute to the weight layout.

Every parameter is per (input, output) element. Init: W1 ~ U(−√3, √3), W2 ~ U(−β, β) with
β = √(3/(m·c·k²)), biases 0, so Var(w) = m·(β²/3)·E[Z²]·E[W1²] = E[Z²]/(c·k²) = 1/(c·k²) for N(0, 1)
latents (c = input channels per group; for a transposed conv, its input channels too).

Storage order is an implementation detail: the tensors are kept in the weight's own (row, col)
order (rows = weight dim 0: output channels of a Conv2d, input channels of a ConvTranspose2d) with
m and k² leading (W2 is [m, k², rows, cols]), so each op of the chain is one contiguous elementwise
op instead of a batched k²×m matmul per element, and element-wise identical. The generated weight
is the conv's `weight` on every forward, through `torch.nn.utils.parametrize` (`GeneratedWeight`);
BatchNorm, conv biases and Linear layers stay ordinary parameters.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

if TYPE_CHECKING:
    from methods.dhp.latents import ConvLatents, Latents

__all__ = ["ConvHyper", "GeneratedWeight", "attach_hypernetworks", "hyper_parameter_count"]


class ConvHyper(nn.Module):
    """The hypernetwork of one conv weight of shape [rows, cols, kh, kw]."""

    def __init__(
        self,
        rows: int,
        cols: int,
        kernel: tuple[int, int],
        *,
        fan_in_channels: int,
        m: int = 8,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        kh, kw = kernel
        k2 = kh * kw
        self.rows, self.cols, self.kernel, self.m = rows, cols, (kh, kw), m
        bound = math.sqrt(3.0 / (m * fan_in_channels * k2))
        self.b0 = nn.Parameter(torch.zeros(rows, cols))  # latent-layer bias
        self.w1 = nn.Parameter(_uniform((m, rows, cols), math.sqrt(3.0), generator))
        self.b1 = nn.Parameter(torch.zeros(m, rows, cols))
        self.w2 = nn.Parameter(_uniform((m, k2, rows, cols), bound, generator))
        self.b2 = nn.Parameter(torch.zeros(k2, rows, cols))

    def forward(self, z: Tensor) -> Tensor:
        """[rows, cols] latent products (a·bᵀ in weight order) → [rows, cols, kh, kw] weight."""
        z = z + self.b0  # step 1
        e = torch.addcmul(self.b1, self.w1, z)  # step 2: [m, rows, cols]
        o = (self.w2 * e.unsqueeze(1)).sum(0) + self.b2  # step 3: [k², rows, cols]
        return o.permute(1, 2, 0).reshape(self.rows, self.cols, *self.kernel)  # step 4

    def sliced(self, rows: Tensor, cols: Tensor) -> ConvHyper:
        """The hypernetwork of the kept (rows, cols) only: element (i, j) depends on its own
        parameters alone, so slicing the parameters equals slicing the generated weight."""
        out = ConvHyper.__new__(ConvHyper)
        nn.Module.__init__(out)
        out.rows, out.cols, out.kernel, out.m = len(rows), len(cols), self.kernel, self.m
        for name, p in self.named_parameters(recurse=False):
            t = p.detach().index_select(-2, rows.to(p.device)).index_select(-1, cols.to(p.device))
            setattr(out, name, nn.Parameter(t.clone()))
        return out


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator | None) -> Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class GeneratedWeight(nn.Module):
    """Parametrization of a conv's `weight`: returns the hypernetwork's output.

    The stored tensor is replaced by an empty one (`right_inverse`), so the search holds no dead
    copy of the weights. The latents are shared by every conv and registered once, on the search
    network; this module keeps a plain reference to them (not a submodule).
    """

    def __init__(self, hyper: ConvHyper, wiring: ConvLatents, latents: Latents) -> None:
        super().__init__()
        self.hyper = hyper
        self.wiring = wiring
        object.__setattr__(self, "_latents", latents)
        self.channels_last = False

    def forward(self, stored: Tensor) -> Tensor:
        w = self.hyper(self.wiring(self._latents))
        if self.channels_last:
            w = w.contiguous(memory_format=torch.channels_last)
        return w

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight.new_empty(0)


def attach_hypernetworks(
    model: nn.Module,
    latents: Latents,
    wiring: dict[str, ConvLatents],
    *,
    m: int = 8,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> dict[str, GeneratedWeight]:
    """Make every wired conv's `weight` hypernetwork-generated (in place), in model order."""
    modules = dict(model.named_modules())
    out: dict[str, GeneratedWeight] = {}
    for name, w in wiring.items():
        conv = modules[name]
        rows, cols, kh, kw = conv.weight.shape
        fan_in = conv.in_channels // conv.groups  # c of the init rule, for both conv kinds
        hyper = ConvHyper(rows, cols, (kh, kw), fan_in_channels=fan_in, m=m, generator=generator)
        device = conv.weight.device
        gen = GeneratedWeight(hyper, w, latents).to(device)
        gen.channels_last = channels_last
        parametrize.register_parametrization(conv, "weight", gen, unsafe=True)
        conv.parametrizations.weight.original.requires_grad_(False)  # empty placeholder
        out[name] = gen
    return out


def hyper_parameter_count(model: nn.Module) -> int:
    """Parameters of every hypernetwork in `model` (latents excluded)."""
    return sum(
        p.numel() for m in model.modules() if isinstance(m, ConvHyper) for p in m.parameters()
    )
