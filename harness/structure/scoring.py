"""From per-layer method scores to per-unit group scores (the harness's half of the method split).

A method scores the output channels of one layer at a time through a `LayerView`; the harness
gathers those over every producer layer of a group, sums channels that belong to one unit
(PixelShuffle blocks), and averages over the layers that contributed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.structure.groups import Structure

__all__ = ["LayerView", "out_first", "score_groups"]


@dataclass
class LayerView:
    """One producer layer's output channels that belong to one group.

    `weight` is out-channel-first ([n, ...] rows of this slot's channels, also for transposed
    convs); `grad` is its gradient, given only to a method whose `needs` declares grads (None
    otherwise, also when the weight has none); for BatchNorm layers `weight`
    and `bias` are γ and β. Criteria that compare a channel with the whole layer (FPGM) use
    `out_first(view.module)` and index the result with `view.channels`.
    """

    name: str
    module: nn.Module
    kind: str  # "conv" | "linear" | "bn" | "prelu"
    channels: Tensor  # [n] indices into the layer's output channels
    weight: Tensor
    bias: Tensor | None
    grad: Tensor | None


def out_first(m: nn.Module, tensor: Tensor | None = None) -> Tensor | None:
    """`m.weight` (or a same-shaped tensor such as its grad) as [C_out, ...] rows.

    Conv2d/Linear/BN weights already are; a ConvTranspose2d weight is [C_in, C_out/g, kh, kw].
    """
    t = m.weight if tensor is None else tensor
    if t is None or not isinstance(m, nn.ConvTranspose2d):
        return t
    g = m.groups
    c_in, c_out_g, kh, kw = t.shape
    # [g, C_in/g, C_out/g, k, k] → [g, C_out/g, C_in/g, k, k]; out channel = group·C_out/g + j
    t = t.reshape(g, c_in // g, c_out_g, kh, kw).transpose(1, 2)
    return t.reshape(g * c_out_g, c_in // g, kh, kw)


def _view(name: str, m: nn.Module, channels: Tensor, grads: bool) -> LayerView:
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        kind = "conv"
    elif isinstance(m, nn.Linear):
        kind = "linear"
    elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        kind = "bn"
    else:
        kind = "prelu"
    w = out_first(m)
    g = out_first(m, m.weight.grad) if grads else None
    idx = channels.to(w.device)
    bias = getattr(m, "bias", None)
    return LayerView(
        name=name,
        module=m,
        kind=kind,
        channels=channels,
        weight=w.detach()[idx],
        bias=None if bias is None else bias.detach()[idx],
        grad=None if g is None else g.detach()[idx],
    )


@torch.no_grad()
def score_groups(
    model: nn.Module,
    structure: Structure,
    score: Callable[[LayerView], Tensor | None],
    *,
    grads: bool = False,
) -> dict[str, Tensor]:
    """Group name → [size] unit scores (higher = keep) for every prunable group; `grads`: the
    views carry the weights' gradients (for methods whose `needs` declares grads).

    Groups where no layer gave a score are left out (so never pruned by this method).
    """
    modules = dict(model.named_modules())
    out: dict[str, Tensor] = {}
    for g in structure.prunable:
        total = torch.zeros(g.size, dtype=torch.float64)
        layers = 0
        for slot in g.producers:
            s = score(_view(slot.module, modules[slot.module], slot.channels, grads))
            if s is None:
                continue
            s = s.detach().double().cpu().flatten()
            if s.shape != slot.channels.shape:
                raise ValueError(
                    f"score of layer {slot.module} has shape {tuple(s.shape)}, expected "
                    f"{tuple(slot.channels.shape)}"
                )
            total.index_add_(0, slot.units, s)
            layers += 1
        if layers:
            out[g.name] = (total / layers).float()
    return out
