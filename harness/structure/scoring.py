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

__all__ = ["LayerView", "score_groups"]


@dataclass
class LayerView:
    """One producer layer's output channels that belong to one group.

    `weight` is out-channel-first ([n, ...] rows of this slot's channels, also for transposed
    convs); `grad` is its gradient when the method needs gradients; for BatchNorm layers `weight`
    and `bias` are γ and β.
    """

    name: str
    module: nn.Module
    kind: str  # "conv" | "linear" | "bn" | "prelu"
    channels: Tensor  # [n] indices into the layer's output channels
    weight: Tensor
    bias: Tensor | None
    grad: Tensor | None


def _view(name: str, m: nn.Module, channels: Tensor) -> LayerView:
    if isinstance(m, nn.ConvTranspose2d):
        w, kind = m.weight.transpose(0, 1), "conv"
    elif isinstance(m, nn.Conv2d):
        w, kind = m.weight, "conv"
    elif isinstance(m, nn.Linear):
        w, kind = m.weight, "linear"
    elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        w, kind = m.weight, "bn"
    else:
        w, kind = m.weight, "prelu"
    idx = channels.to(w.device)
    g = w.grad if not isinstance(m, nn.ConvTranspose2d) or w.grad is None else m.weight.grad
    if isinstance(m, nn.ConvTranspose2d) and g is not None:
        g = g.transpose(0, 1)
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
    model: nn.Module, structure: Structure, score: Callable[[LayerView], Tensor | None]
) -> dict[str, Tensor]:
    """Group name → [size] unit scores (higher = keep) for every prunable group.

    Groups where no layer gave a score are left out (so never pruned by this method).
    """
    modules = dict(model.named_modules())
    out: dict[str, Tensor] = {}
    for g in structure.prunable:
        total = torch.zeros(g.size, dtype=torch.float64)
        layers = 0
        for slot in g.producers:
            s = score(_view(slot.module, modules[slot.module], slot.channels))
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
