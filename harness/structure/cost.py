"""Analytic MAC count of the network any plan leaves, computed without touching the model.

Convention: multiply-accumulates of conv, transposed conv and linear layers (fvcore's "flop"
count of those ops); BatchNorm, activations, pooling and adds are excluded. Tests pin it to fvcore
on the physically pruned model.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from harness.structure.groups import LayerGeometry, Structure

__all__ = ["CostModel", "MacTracker"]

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
                    per_unit = s.channels_per_unit(g.size)
                    self._sides.setdefault((s.module, s.side), []).append((g.name, per_unit))
        self.base_macs = self.macs()
        self._touch: dict[str, list[tuple[str, int, list[int]]]] | None = None

    def _touched(self) -> dict[str, list[tuple[str, int, list[int]]]]:
        """group → [(layer, 0 for in / 1 for out, channels each unit owns there)], built once."""
        if self._touch is None:
            self._touch = {}
            for (layer, side), owners in self._sides.items():
                for group, per_unit in owners:
                    entry = (layer, 0 if side == "in" else 1, per_unit.tolist())
                    self._touch.setdefault(group, []).append(entry)
        return self._touch

    def tracker(self, removed: Removed | None = None) -> MacTracker:
        """Exact MACs kept up to date one removed unit at a time (see `MacTracker`)."""
        return MacTracker(self, removed)

    def channels(self, removed: Removed | None = None) -> dict[str, tuple[int, int]]:
        """Layer → (in, out) channel counts after removing the marked units."""
        out: dict[str, tuple[int, int]] = {}
        for name, geo in self.layers.items():
            counts = []
            for side, base in (("in", geo.in_channels), ("out", geo.out_channels)):
                gone = 0
                if removed:
                    for group, per_unit in self._sides.get((name, side), ()):
                        mask = removed.get(group)
                        if mask is not None:
                            gone += int(per_unit[mask].sum())
                counts.append(base - gone)
            out[name] = (counts[0], counts[1])
        return out

    def layer_macs(self, name: str, in_ch: int, out_ch: int) -> int:
        geo = self.layers[name]
        if geo.kind == "linear":
            return in_ch * out_ch * geo.positions
        if geo.kind == "convT":
            groups = in_ch if geo.is_depthwise else geo.groups
            return in_ch * (out_ch // groups) * geo.kernel * geo.positions
        if geo.groups == 1:
            return out_ch * in_ch * geo.kernel * geo.positions
        if geo.is_depthwise:
            return out_ch * geo.kernel * geo.positions
        # grouped convs lose whole groups: the inputs each output sees stay the same
        return out_ch * (geo.in_channels // geo.groups) * geo.kernel * geo.positions

    def macs(self, removed: Removed | None = None) -> int:
        """Conv + linear MACs of the network left when the marked units are removed."""
        return sum(self.layer_macs(n, i, o) for n, (i, o) in self.channels(removed).items())

    def ratio(self, removed: Removed | None = None) -> float:
        return self.macs(removed) / self.base_macs


class MacTracker:
    """The MACs of a plan under construction, updated per removed unit.

    Removing a unit changes the channel counts of only the layers its group touches; each of those
    layers' MACs is recomputed exactly from its new counts (integer arithmetic, grouped-conv
    rounding included), so `macs` always equals `CostModel.macs` of the same removal state.
    """

    def __init__(self, cost: CostModel, removed: Removed | None = None) -> None:
        self._cost = cost
        self._touch = cost._touched()
        self._channels = {n: list(io) for n, io in cost.channels(removed).items()}
        self._layer = {n: cost.layer_macs(n, i, o) for n, (i, o) in self._channels.items()}
        self.macs = sum(self._layer.values())

    def remove(self, group: str, unit: int) -> None:
        """Account for removing `unit` of `group` (the caller removes each unit once)."""
        for layer, side, owned in self._touch.get(group, ()):
            n = owned[unit]
            if n:
                io = self._channels[layer]
                io[side] -= n
                new = self._cost.layer_macs(layer, io[0], io[1])
                self.macs += new - self._layer[layer]
                self._layer[layer] = new
