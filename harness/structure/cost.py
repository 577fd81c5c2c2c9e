"""Analytic MAC and parameter cost of any plan, in microseconds, without touching the model.

Convention: multiply-accumulates of conv, transposed conv and linear layers (fvcore's "flop"
count of those ops); BatchNorm, activations, pooling and adds are excluded. Tests pin it to fvcore
on the physically pruned model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from harness.structure.groups import LayerGeometry, Structure

__all__ = ["CostModel"]

Removed = Mapping[str, Tensor]  # group name → [size] bool, True = unit removed


class CostModel:
    """MACs of the network a plan leaves, built once per (model, input shape)."""

    def __init__(self, structure: Structure) -> None:
        self.structure = structure
        self.layers: dict[str, LayerGeometry] = structure.layers
        # (layer, side) → [(group, channels per unit)] for the layers the cost depends on
        self._sides: dict[tuple[str, str], list[tuple[str, Tensor]]] = {}
        for g in structure.groups.values():
            for s in g.slots:
                if s.module in self.layers:
                    cpu = s.channels_per_unit(g.size)
                    self._sides.setdefault((s.module, s.side), []).append((g.name, cpu))
        self.base_macs = self.macs()

    def channels(self, removed: Removed | None = None) -> dict[str, tuple[int, int]]:
        """Layer → (in, out) channel counts after removing the marked units."""
        out: dict[str, tuple[int, int]] = {}
        for name, geo in self.layers.items():
            counts = []
            for side, base in (("in", geo.in_channels), ("out", geo.out_channels)):
                gone = 0
                if removed:
                    for group, cpu in self._sides.get((name, side), ()):
                        mask = removed.get(group)
                        if mask is not None:
                            gone += int(cpu[mask].sum())
                counts.append(base - gone)
            out[name] = (counts[0], counts[1])
        return out

    def layer_macs(self, name: str, in_ch: int, out_ch: int) -> int:
        geo = self.layers[name]
        if geo.kind == "linear":
            return in_ch * out_ch * geo.positions
        groups = in_ch if geo.is_depthwise else geo.groups
        if geo.kind == "convT":
            return in_ch * (out_ch // groups) * geo.kernel * geo.positions
        return out_ch * (in_ch // groups) * geo.kernel * geo.positions

    def macs(self, removed: Removed | None = None) -> int:
        """Conv + linear MACs of the network left when the marked units are removed."""
        return sum(self.layer_macs(n, i, o) for n, (i, o) in self.channels(removed).items())

    def ratio(self, removed: Removed | None = None) -> float:
        return self.macs(removed) / self.base_macs

    def removal_cost(self, group: str) -> int:
        """MACs saved by removing one average unit of `group` from the full network (a ranking
        aid for allocation, not an exact delta)."""
        g = self.structure.groups[group]
        mask = torch.zeros(g.size, dtype=torch.bool)
        mask[0] = True
        return self.base_macs - self.macs({group: mask})
