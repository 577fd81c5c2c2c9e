"""From the search network to a plain compact CNN: materialise the generated weights, then slice.

Why generate-then-slice is exact: element (i, j) of every tensor in the hypernetwork chain (Z, E,
O) is computed from b_i, a_j and the parameters at (i, j) alone, so output channel i of a generated
weight depends only on z^l_i and input channel j only on z^{l−1}_j. Generating the full weights
once and slicing them (`harness.structure.apply_plan`) therefore equals the paper's route —
index-select the surviving latent entries and hypernetwork slices, then generate the smaller
weights (`generate_sliced`; tests pin the equality). The full route reuses the harness's one
slicing code for conv, BatchNorm, conv bias and Linear layers.

Compaction is not output-preserving: a removed channel's generated filter is not zero (biases)
and its BatchNorm output is not zero. The compact network equals the search network with the
removed channels' activations cut after BatchNorm (their consumers' input slices zeroed), which
is what `harness.structure.masked_copy` builds from the materialised network.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from harness.structure import Plan, Structure, apply_plan
from methods.dhp.hyper import GeneratedWeight
from methods.dhp.latents import Latents, is_depthwise

__all__ = ["SearchNet", "compact", "generate_sliced", "kept_channels", "materialise"]


class SearchNet(nn.Module):
    """The backbone whose conv weights are generated, plus the latent vectors (registered once).

    Its forward is the backbone's, so the harness loop and the task's loss run it unchanged; its
    state_dict holds the backbone (BN, biases, Linear), every hypernetwork and every latent.
    """

    def __init__(self, net: nn.Module, latents: Latents) -> None:
        super().__init__()
        self.net = net
        self.latents = latents

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def generators(self) -> dict[str, GeneratedWeight]:
        """Conv name → its weight parametrization, in model order."""
        out = {}
        for name, m in self.net.named_modules():
            if parametrize.is_parametrized(m, "weight"):
                p = m.parametrizations.weight[0]
                if isinstance(p, GeneratedWeight):
                    out[name] = p
        return out


@torch.no_grad()
def materialise(net: SearchNet) -> nn.Module:
    """Store every generated weight as a plain Parameter, remove the parametrizations (the
    hypernetworks go with them) and return the backbone, a plain CNN of the original widths."""
    backbone = net.net
    for m in list(backbone.modules()):
        if parametrize.is_parametrized(m, "weight"):
            w = m.weight.detach().clone()
            _unparametrize(m)
            m.weight = nn.Parameter(w)
    return backbone


def _unparametrize(m: nn.Module) -> None:
    """Drop every parametrization of `m`, leaving its attributes unset.

    Not `parametrize.remove_parametrizations`: it deletes the property from the module's injected
    class, which a deep copy shares with the original, so materialising a copy would break the
    original search network (torch 2.4–2.15).
    """
    del m._modules["parametrizations"]
    m.__class__ = type(m).__bases__[0]


def compact(net: SearchNet, structure: Structure, plan: Plan) -> nn.Module:
    """Materialise, then physically remove the plan's units from every producer and consumer."""
    return apply_plan(materialise(net), structure, plan)


def kept_channels(
    structure: Structure, removed: Mapping[str, Tensor], layer: str, side: str, total: int
) -> Tensor:
    """Indices of one layer side's channels that survive `removed` (group → [size] bool)."""
    keep = torch.ones(total, dtype=torch.bool)
    for group, slot in structure.slots_of(layer, side):
        mask = removed.get(group.name)
        if mask is not None:
            keep[slot.channels[mask[slot.units]]] = False
    return torch.nonzero(keep).flatten()


@torch.no_grad()
def generate_sliced(net: SearchNet, structure: Structure, plan: Plan, layer: str) -> Tensor:
    """The paper's compaction for one conv: slice the latents and the hypernetwork to the kept
    channels, then generate the smaller weight."""
    gen = net.generators()[layer]
    conv = dict(net.net.named_modules())[layer]
    removed = plan.removed(structure)
    out = kept_channels(structure, removed, layer, "out", conv.out_channels)
    transposed = isinstance(conv, nn.ConvTranspose2d)
    if is_depthwise(conv):
        rows, cols = out, torch.arange(1)
    elif conv.groups > 1:  # grouped convs are frozen by the structure: only their rows can shrink
        inp = kept_channels(structure, removed, layer, "in", conv.in_channels)
        rows, cols = (inp if transposed else out), torch.arange(conv.weight.shape[1])
    else:
        inp = kept_channels(structure, removed, layer, "in", conv.in_channels)
        rows, cols = (inp, out) if transposed else (out, inp)
    device = gen.hyper.b0.device
    rows, cols = rows.to(device), cols.to(device)
    z = gen.wiring(net.latents, rows=rows, cols=cols)
    return gen.hyper.sliced(rows, cols)(z)
