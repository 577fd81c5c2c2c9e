"""Channel groups: sets of channels that must be removed together, derived once per model.

Torch-Pruning's DependencyGraph finds the coupling (conv → BN → next conv, residual adds, concat,
depthwise). We translate each of its groups into plain, named data: for every layer side the group
touches, which channel belongs to which *unit* of the group. A unit is one prunable element (one
latent entry for DHP); it may own several channels of a layer (a PixelShuffle(r) upsampler conv
owns r² output channels per unit), so a slot is a list of (unit, channel) pairs.
"""

from __future__ import annotations

import logging
import traceback
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from harness.errors import UnsupportedModelError
from harness.structure.layers import PRUNABLE_TYPES, channel_sizes
from harness.structure.tracing import Runaway, traced_groups

if TYPE_CHECKING:
    import torch_pruning as tp

__all__ = [
    "PRUNABLE_TYPES",
    "ChannelGroup",
    "Slot",
    "Structure",
    "derive_structure",
]

log = logging.getLogger(__name__)

Side = Literal["out", "in"]


@dataclass(frozen=True)
class Slot:
    """The channels of one side of one layer that belong to a group.

    `units[i]` is the group unit that owns channel `channels[i]` of the layer's `side`
    ("out": output channels / BN features; "in": input channels of a consumer).
    """

    module: str
    side: Side
    units: Tensor  # [n] int64
    channels: Tensor  # [n] int64

    def channels_per_unit(self, size: int) -> Tensor:
        """[size] how many of this layer's channels each unit owns (0 where it has none here)."""
        return torch.bincount(self.units, minlength=size)


@dataclass
class ChannelGroup:
    """Coupled channels with a stable name (its root layer), a size and whether it may be pruned."""

    name: str
    size: int
    slots: list[Slot]
    prunable: bool = True
    reason: str = ""  # why not prunable

    @property
    def producers(self) -> list[Slot]:
        return [s for s in self.slots if s.side == "out"]

    @property
    def consumers(self) -> list[Slot]:
        return [s for s in self.slots if s.side == "in"]

    def __repr__(self) -> str:
        flag = "" if self.prunable else f", frozen: {self.reason}"
        layers = ", ".join(f"{s.module}.{s.side}" for s in self.slots)
        return f"ChannelGroup({self.name}, size={self.size}{flag}: {layers})"


@dataclass
class LayerGeometry:
    """What the cost model needs of one conv/linear layer, recorded by one forward pass."""

    kind: Literal["conv", "convT", "linear"]
    in_channels: int
    out_channels: int
    groups: int
    kernel: int  # kh * kw (1 for linear)
    positions: int  # output pixels (conv), input pixels (convT), rows (linear)

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels


@dataclass
class Structure:
    """Channel groups and layer geometry of one model at one input shape."""

    groups: dict[str, ChannelGroup]
    layers: dict[str, LayerGeometry]
    input_shape: tuple[int, ...]
    _by_layer: dict[tuple[str, Side], list[tuple[ChannelGroup, Slot]]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        for g in self.groups.values():
            for s in g.slots:
                self._by_layer.setdefault((s.module, s.side), []).append((g, s))

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups.values() if g.prunable]

    def layer_sides(self) -> list[tuple[str, Side]]:
        """Every (layer, side) some group touches, in the order the groups list them."""
        return list(self._by_layer)

    def slots_of(self, module: str, side: Side) -> list[tuple[ChannelGroup, Slot]]:
        """Every (group, slot) on one side of one layer (several after a concat)."""
        return self._by_layer.get((module, side), [])

    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self.groups.values())


def _record_geometry(
    model: nn.Module, example: Tensor
) -> tuple[dict[str, LayerGeometry], dict[str, int]]:
    """One forward pass: conv/linear geometry, and layer → r for every sliceable layer whose
    output feeds a PixelShuffle(r) directly (Torch-Pruning misreads that coupling)."""
    geometry: dict[str, LayerGeometry] = {}
    shuffles: dict[str, int] = {}
    produced: dict[int, tuple[str, weakref.ref]] = {}  # id(output) → (layer, its output)
    handles = []

    def remember(name: str):
        def fn(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            produced[id(out)] = (name, weakref.ref(out))

        return fn

    def shuffle_input(m: nn.PixelShuffle, inputs: tuple[Tensor, ...]) -> None:
        source = produced.get(id(inputs[0]))
        if source is not None and source[1]() is inputs[0]:  # not a recycled id
            shuffles[source[0]] = m.upscale_factor

    def hook(name: str):
        def fn(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            if isinstance(m, nn.ConvTranspose2d):
                geo = LayerGeometry(
                    "convT",
                    m.in_channels,
                    m.out_channels,
                    m.groups,
                    m.kernel_size[0] * m.kernel_size[1],
                    inputs[0][0, 0].numel(),
                )
            elif isinstance(m, nn.Conv2d):
                geo = LayerGeometry(
                    "conv",
                    m.in_channels,
                    m.out_channels,
                    m.groups,
                    m.kernel_size[0] * m.kernel_size[1],
                    out[0, 0].numel(),
                )
            else:
                geo = LayerGeometry(
                    "linear", m.in_features, m.out_features, 1, 1, out[0].numel() // m.out_features
                )
            geometry[name] = geo

        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            handles.append(m.register_forward_hook(hook(name)))
        if isinstance(m, PRUNABLE_TYPES):
            handles.append(m.register_forward_hook(remember(name)))
        elif isinstance(m, nn.PixelShuffle):
            handles.append(m.register_forward_pre_hook(shuffle_input))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return geometry, shuffles


def _through_pixel_shuffle(
    size: int, slots: list[Slot], r: int, modules: dict[str, nn.Module]
) -> tuple[int, list[Slot]]:
    """Re-map a group whose producer feeds PixelShuffle(r): one unit per channel after the
    shuffle, owning the r² channels before it (c → c // r²). Torch-Pruning maps channel c before
    the shuffle to channel c after it; a slot that is not that 1:1 view is left as it is (the
    consistency check then freezes the group)."""

    r2 = r * r
    if size % r2:
        return size, slots
    post = size // r2
    remapped = []
    for s in slots:
        width = channel_sizes(modules[s.module])[0 if s.side == "in" else 1]
        if width == size:  # before the shuffle: unit u owns channels u·r² … u·r² + r² − 1
            remapped.append(Slot(s.module, s.side, s.units // r2, s.channels))
        elif width == post and torch.equal(s.channels, torch.arange(size)):
            units = torch.arange(post)  # after the shuffle: channel j is unit j
            remapped.append(Slot(s.module, s.side, units, units.clone()))
        else:
            return size, slots
    return post, remapped


def derive_structure(
    model: nn.Module,
    example: Tensor,
    *,
    frozen: Iterable[str] = (),
) -> Structure:
    """Trace `model` once at `example` (a batch of one) and derive its channel groups.

    A group is frozen (never pruned) when it feeds the model output (no consumer layer), when its
    name matches a pattern in `frozen` (fnmatch, e.g. "layer3.*"), when it has < 2 units, or when
    it touches a layer we cannot slice (e.g. a grouped, non-depthwise conv), or when Torch-Pruning's
    traversal of it runs away (window attention, ReXNet: see `harness.structure.tracing`).
    """
    import torch_pruning as tp  # heavy import, only where the graph is built

    was_training = model.training
    model.eval()
    try:
        geometry, shuffles = _record_geometry(model, example)
        try:
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
        except Exception as e:
            raise UnsupportedModelError(
                f"{type(model).__name__} cannot be pruned: {_construct(e)} "
                f"({type(e).__name__} in the dependency graph); prune another model or "
                "report the construct"
            ) from e
    finally:
        model.train(was_training)
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    order = {n: i for i, n in enumerate(names.values())}
    frozen = list(frozen)
    groups: dict[str, ChannelGroup] = {}
    roots = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    runaways = []
    for tp_group in traced_groups(dg, model, roots):
        if isinstance(tp_group, Runaway):
            group = _runaway_group(tp_group, names[tp_group.root])
            runaways.append(group.name)
            groups[group.name] = group
            continue
        group = _group_from_tp(
            tp_group,
            dg,
            model,
            names=names,
            modules=modules,
            geometry=geometry,
            shuffles=shuffles,
            order=order,
            frozen=frozen,
        )
        groups[group.name] = group
    if runaways:
        log.warning(
            "%s: %d groups frozen, their channel mapping runs away in the dependency graph "
            "(first: %s)",
            type(model).__name__,
            len(runaways),
            groups[runaways[0]].reason,
        )
    groups = _merge_grouped_convs(groups, geometry, modules, order)
    _freeze_inconsistent(groups, model)
    return Structure(groups, geometry, tuple(example.shape[1:]))


def _runaway_group(runaway: Runaway, name: str) -> ChannelGroup:
    """A frozen group holding only the root's outputs: the traversal that would have found its
    coupled layers was stopped, so none of them may be pruned through it."""
    channels = torch.arange(runaway.size)
    slot = Slot(name, "out", channels, channels.clone())
    return ChannelGroup(name, runaway.size, [slot], prunable=False, reason=runaway.reason)


def _group_from_tp(
    tp_group: tp.dependency.Group,
    dg: tp.DependencyGraph,
    model: nn.Module,
    *,
    names: dict[nn.Module, str],
    modules: dict[str, nn.Module],
    geometry: dict[str, LayerGeometry],
    shuffles: dict[str, int],
    order: dict[str, int],
    frozen: list[str],
) -> ChannelGroup:
    """One Torch-Pruning group as our ChannelGroup: its (layer, side) slots with the channels each
    unit maps to, its size (PixelShuffle couples r² channels), its name and whether it is frozen.
    """
    pairs: dict[tuple[str, Side], tuple[list[int], list[int]]] = {}
    unsupported: list[str] = []
    for item in tp_group.items:
        module = item.dep.target.module
        if not isinstance(module, nn.Module) or module not in names:
            continue  # tp's virtual ops (elementwise, concat, reshape)
        name = names[module]
        if not isinstance(module, PRUNABLE_TYPES):
            if any(True for _ in module.parameters(recurse=False)):
                unsupported.append(name)
            continue
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            continue
        side: Side = "out" if dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
        units, chans = pairs.setdefault((name, side), ([], []))
        for c, u in zip(item.idxs, item.root_idxs, strict=True):
            if c not in chans:
                units.append(int(u))
                chans.append(int(c))
    slots = [
        Slot(n, side, torch.tensor(u, dtype=torch.long), torch.tensor(c, dtype=torch.long))
        for (n, side), (u, c) in pairs.items()
    ]
    size = len(tp_group[0].idxs)
    for s in slots:
        if s.side == "out" and s.module in shuffles:  # PixelShuffle couples r² channels
            size, slots = _through_pixel_shuffle(size, slots, shuffles[s.module], modules)
            break
    # named after its first producer layer in definition order: stable across tp versions
    root = min(
        (s.module for s in slots if s.side == "out" and s.module in geometry),
        key=order.__getitem__,
        default=names[tp_group[0].dep.target.module],
    )
    group = ChannelGroup(root, size, slots)
    _freeze_if_needed(group, geometry, model, unsupported, frozen)
    return group


#: Torch-Pruning functions that fail on a construct, and the construct in words
_CONSTRUCTS = {
    "update_reshape_index_mapping": "a reshape/view that mixes channels (e.g. a channel shuffle)",
    "update_flatten_index_mapping": "a flatten whose channel mapping it cannot follow",
    "update_concat_index_mapping": "a concatenation whose channel mapping it cannot follow",
    "update_split_index_mapping": "a split/chunk whose channel mapping it cannot follow",
    "update_slice_index_mapping": "a channel slice whose mapping it cannot follow",
}


def _construct(error: Exception) -> str:
    frames = [f.name for f in traceback.extract_tb(error.__traceback__)]
    for name in reversed(frames):
        if name in _CONSTRUCTS:
            return _CONSTRUCTS[name]
    return f"an operation the dependency graph does not support (in {frames[-1]})"


def _grouped_convs(geometry: dict[str, LayerGeometry], modules: dict[str, nn.Module]) -> list[str]:
    """Conv layers with groups > 1 that are not depthwise (ResNeXt, RegNet bottlenecks)."""
    return [
        n
        for n, geo in geometry.items()
        if geo.kind == "conv" and geo.groups > 1 and not geo.is_depthwise
        and isinstance(modules[n], nn.Conv2d)
    ]  # fmt: skip


def _blocks(group: ChannelGroup, layer: str, side: Side, per_block: int) -> Tensor | None:
    """[group.size] which channel block of `layer`'s `side` each unit of `group` lands in, when
    every unit owns exactly one channel there and every block is complete; else None."""
    slot = next((s for s in group.slots if s.module == layer and s.side == side), None)
    if slot is None or len(slot.units) != group.size:
        return None
    blocks = torch.full((group.size,), -1, dtype=torch.long)
    blocks[slot.units] = slot.channels // per_block
    if bool((blocks < 0).any()):
        return None
    counts = torch.bincount(blocks)
    return blocks if bool((counts == per_block).all()) else None


def _merge_grouped_convs(
    groups: dict[str, ChannelGroup],
    geometry: dict[str, LayerGeometry],
    modules: dict[str, nn.Module],
    order: dict[str, int],
) -> dict[str, ChannelGroup]:
    """Prune grouped convolutions by whole channel groups.

    A grouped conv with G groups couples block j of its inputs (a group A of the layer before)
    with block j of its outputs (a group B of the layers after): removing one means removing the
    other. A and B are merged into one group of G units, unit j owning both blocks. A grouped
    conv whose neighbours do not split into whole blocks (or that shares a group with another
    grouped conv) freezes the groups it touches instead.
    """
    merged: set[str] = set()
    grouped = _grouped_convs(geometry, modules)
    for layer in grouped:
        geo = geometry[layer]
        pairs = [
            [
                g
                for g in groups.values()
                if any(s.module == layer and s.side == side for s in g.slots)
            ]
            for side in ("in", "out")
        ]
        if len(pairs[0]) != 1 or len(pairs[1]) != 1 or pairs[0][0] is pairs[1][0]:
            continue
        a, b = pairs[0][0], pairs[1][0]
        others = set(grouped) - {layer}
        if any(s.module in others for g in (a, b) for s in g.slots):
            continue  # two grouped convs would have to agree on the blocks: left frozen
        blocks_a = _blocks(a, layer, "in", geo.in_channels // geo.groups)
        blocks_b = _blocks(b, layer, "out", geo.out_channels // geo.groups)
        if blocks_a is None or blocks_b is None:
            continue
        slots = [Slot(s.module, s.side, blocks_a[s.units], s.channels) for s in a.slots]
        slots += [Slot(s.module, s.side, blocks_b[s.units], s.channels) for s in b.slots]
        name = min(a.name, b.name, key=lambda n: order.get(n, len(order)))
        group = ChannelGroup(name, geo.groups, slots)
        frozen = [g.reason for g in (a, b) if not g.prunable]
        if frozen:
            group.prunable, group.reason = False, frozen[0]
        del groups[a.name], groups[b.name]
        groups[name] = group
        merged.add(name)
    for layer in grouped:
        for g in groups.values():
            if g.name in merged or not g.prunable:
                continue
            if any(s.module == layer for s in g.slots):
                groups_n = modules[layer].groups
                g.prunable = False
                g.reason = f"grouped convolution {layer} (groups={groups_n}) not in whole blocks"
    return groups


def _freeze_inconsistent(groups: dict[str, ChannelGroup], model: nn.Module) -> None:
    """Freeze groups whose channel mapping cannot be right.

    Every output channel of a layer belongs to exactly one group, and no slot may name a channel
    beyond its layer's width. Torch-Pruning breaks this where it treats a shape-changing op as
    elementwise (a zero-padding shortcut, PixelShuffle): such groups are frozen, never mis-pruned.
    """

    modules = dict(model.named_modules())
    covered: dict[str, int] = {}
    for g in groups.values():
        for s in g.producers:
            covered[s.module] = covered.get(s.module, 0) + len(s.channels)
    for g in groups.values():
        for s in g.slots:
            width = channel_sizes(modules[s.module])[0 if s.side == "in" else 1]
            bad = ""
            if len(s.channels) and int(s.channels.max()) >= width:
                bad = f"maps channel {int(s.channels.max())} of {s.module}.{s.side} (width {width})"
            elif s.side == "out" and covered[s.module] != width:
                bad = f"covers {covered[s.module]} of the {width} outputs of {s.module}"
            if bad:
                if g.prunable:  # a group frozen earlier keeps its first reason
                    log.warning(
                        "group %s frozen: inconsistent dependency mapping (%s)", g.name, bad
                    )
                    g.prunable, g.reason = False, f"inconsistent dependency mapping: {bad}"
                break


def _freeze_if_needed(
    group: ChannelGroup,
    geometry: dict[str, LayerGeometry],
    model: nn.Module,
    unsupported: list[str],
    frozen: list[str],
) -> None:
    modules = dict(model.named_modules())
    reason = ""
    if group.size < 2:
        reason = "fewer than 2 channels"
    elif not group.consumers:
        reason = "feeds the model output"
    elif unsupported:
        reason = f"touches layers that cannot be sliced: {', '.join(unsupported)}"
    elif any(fnmatch(group.name, pat) for pat in frozen):
        reason = "frozen by configuration"
    else:
        for s in group.slots:
            m = modules[s.module]
            if isinstance(m, nn.ConvTranspose2d) and m.groups > 1:
                reason = f"grouped transposed convolution {s.module} (groups={m.groups})"
                break
    if reason:
        group.prunable, group.reason = False, reason
