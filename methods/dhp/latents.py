"""DHP's latent vectors: one per channel group, keyed by group name, and their wiring to the convs.

Li et al. (ECCV 2020) give every prunable layer l a latent vector z^l with one entry per output
channel; a conv's hypernetwork reads b = z^l (its output side) and a = z^{l-1} (the vector of the
layers that produce its input channels). Coupled channels share one vector, which is exactly a
harness `ChannelGroup`, so there is one latent per group (a ParameterDict keyed by the group's
name; never by position), sized in group *units*:

- a conv's `b` is its output slot's units' entries, expanded per channel through `slot.units`
  (a PixelShuffle(s) upsampler owns s² channels per unit, so a unit's entry is repeated s² times);
- its `a` is the concatenation, over its input-side slots (several after a concat), of the source
  groups' entries in channel order (`slot.channels` ← `slot.units`);
- input channels covered by no group (the image) read a learnable vector of their own, N(0, 1),
  weight-decayed, never soft-thresholded;
- a depthwise conv reads its own learnable size-1 input-side vector (never thresholded); its
  output side is the vector of the group it passes through;
- frozen groups (the classifier's/output's, or frozen by configuration) get ordinary latents that
  the search never soft-thresholds;
- a group may be *tied* to another of the same size (`ties`, group → owner): it reads the owner's
  vector instead of one of its own. The paper ties a PixelShuffle upsampler conv's output to the
  trunk vector (EDSR, SRResNet): each trunk feature channel owns its r² sub-pixel channels, so
  removing it from the trunk removes them too (`upsampler_ties`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.structure import Structure

__all__ = [
    "ConvLatents",
    "Latents",
    "VectorSpec",
    "build_latents",
    "is_depthwise",
    "latent_key",
    "upsampler_ties",
    "with_ties",
]


def latent_key(name: str) -> str:
    """ParameterDict key of a group or layer name (parameter names cannot contain dots)."""
    return name.replace(".", "/")


def is_depthwise(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
        and m.groups > 1
        and m.groups == m.in_channels == m.out_channels
    )


@dataclass(frozen=True)
class VectorSpec:
    """How one layer side's per-channel latent vector is assembled: `cat(sources)[index]`.

    `sources` are keys into `Latents.z` ("z", group key) or `Latents.fixed` ("fixed", key).
    `index` is None when the side is exactly one source vector in order (the common case).
    """

    sources: tuple[tuple[str, str], ...]
    index: Tensor | None


class Latents(nn.Module):
    """Every latent vector of one search network.

    `z[latent_key(group)]` is the group's vector ([group.size], one entry per unit); `fixed` holds
    the never-thresholded extra vectors (image input, depthwise input sides).
    """

    def __init__(self) -> None:
        super().__init__()
        self.z = nn.ParameterDict()
        self.fixed = nn.ParameterDict()
        self.group_of: dict[str, str] = {}  # latent key → group name

    def __getitem__(self, group: str) -> nn.Parameter:
        return self.z[latent_key(group)]

    def __contains__(self, group: object) -> bool:
        return isinstance(group, str) and latent_key(group) in self.z

    def groups(self) -> Iterator[str]:
        """Group names in creation (model) order."""
        return iter(self.group_of[k] for k in self.z)

    def vector(self, spec: VectorSpec) -> Tensor:
        parts = [getattr(self, d)[k] for d, k in spec.sources]
        flat = parts[0] if len(parts) == 1 else torch.cat(parts)
        return flat if spec.index is None else flat[spec.index]


class ConvLatents(nn.Module):
    """The latent product Z of one conv, in the weight's (row, col) layout.

    Conv2d weight [n_out, c_in/g, kh, kw]: rows read b (output side), cols read a (input side).
    ConvTranspose2d weight [c_in, n_out/g, kh, kw]: rows read a, cols read b. Grouped convs read,
    for row r, the column slice of r's group (a gather index); depthwise convs read their own
    size-1 input vector. Index tensors are buffers, so they follow the model's device.
    """

    def __init__(
        self, row: VectorSpec, col: VectorSpec, col_gather: Tensor | None, rows: int, cols: int
    ) -> None:
        super().__init__()
        self.row_sources, self.col_sources = row.sources, col.sources
        self.rows, self.cols = rows, cols
        self.register_buffer("row_index", row.index, persistent=False)
        self.register_buffer("col_index", col.index, persistent=False)
        self.register_buffer("col_gather", col_gather, persistent=False)  # [rows, cols] or None

    def forward(
        self, latents: Latents, rows: Tensor | None = None, cols: Tensor | None = None
    ) -> Tensor:
        """Z = row vector ⊗ column vector, optionally for kept `rows`/`cols` only (the vectors
        are sliced before the product, as in the paper's compaction)."""
        r = latents.vector(VectorSpec(self.row_sources, self.row_index))  # [rows]
        c = latents.vector(VectorSpec(self.col_sources, self.col_index))  # [cols·g] or [1]
        if rows is not None:
            r = r[rows]
        if self.col_gather is not None:  # grouped: row r reads its own group's columns
            gather = self.col_gather if rows is None else self.col_gather[rows]
            if cols is not None:
                gather = gather[:, cols]
            return r[:, None] * c[gather]
        if self.cols == 1 and c.numel() == 1:  # depthwise: its own size-1 input vector
            return r[:, None] * c
        if cols is not None:
            c = c[cols]
        return torch.outer(r, c)  # [rows, cols]


def upsampler_ties(structure: Structure) -> dict[str, str]:
    """Group → the group whose latent it shares, for every prunable PixelShuffle upsampler group.

    A group whose producing conv owns several channels per unit (its output feeds a
    PixelShuffle(r): r² sub-pixel channels per feature) is tied to the one group that feeds that
    conv's input when the sizes match (the trunk, or the previous upsampler stage, followed to its
    owner): the paper's shared trunk vector. Anything else is left with its own latent.
    """
    ties: dict[str, str] = {}
    for group in structure:
        if not group.prunable or not any(len(s.channels) > group.size for s in group.producers):
            continue
        producers = {s.module for s in group.producers if len(s.channels) > group.size}
        sources = {
            g.name: g
            for p in producers
            for g, slot in structure.slots_of(p, "in")
            if len(slot.channels) == g.size
        }
        inputs = {g.name for p in producers for g, _ in structure.slots_of(p, "in")}
        if len(sources) != 1 or set(sources) != inputs:
            continue
        (source,) = sources.values()
        if source.size == group.size and source.name != group.name:
            ties[group.name] = source.name

    def owner(name: str) -> str:  # a second upsampler stage → the first → the trunk
        while name in ties:
            name = ties[name]
        return name

    return {g: owner(g) for g in ties}


def with_ties(removed: dict[str, Tensor], ties: Mapping[str, str]) -> dict[str, Tensor]:
    """`removed` (group → [size] bool) extended to the groups tied to its groups."""
    out = dict(removed)
    for group, owner in ties.items():
        if owner in removed:
            out[group] = removed[owner].clone()
    return out


def _side_spec(
    latents: Latents,
    structure: Structure,
    layer: str,
    side: str,
    total: int,
    new: Callable[[int], Tensor],
    ties: Mapping[str, str],
) -> VectorSpec:
    """Wire one layer side to the group latents that own its channels (creating them on first
    use) plus, for channels no group covers, a fixed vector of the layer's own."""
    index = torch.full((total,), -1, dtype=torch.long)
    sources: list[tuple[str, str]] = []
    offset = 0
    # prunable groups first; a frozen group only fills channels nobody else owns, and a frozen
    # group the structure could not map consistently (channels beyond the layer's width: tp's
    # view of a padding shortcut or PixelShuffle) is skipped on this side
    slots = sorted(structure.slots_of(layer, side), key=lambda gs: not gs[0].prunable)
    for group, slot in slots:
        channels, units = slot.channels, slot.units
        if not group.prunable:
            if len(channels) and int(channels.max()) >= total:
                continue
            free = index[channels] < 0
            channels, units = channels[free], units[free]
            if not len(channels):
                continue
        owner = ties.get(group.name, group.name)
        key = latent_key(owner)
        if key not in latents.z:
            latents.z[key] = nn.Parameter(new(structure.groups[owner].size))
            latents.group_of[key] = owner
        index[channels] = offset + units
        sources.append(("z", key))
        offset += group.size
    uncovered = index < 0
    if bool(uncovered.any()):  # e.g. the image channels of the stem
        key = latent_key(f"{side}:{layer}")
        latents.fixed[key] = nn.Parameter(new(int(uncovered.sum())))
        index[uncovered] = offset + torch.arange(int(uncovered.sum()))
        sources.append(("fixed", key))
        offset += int(uncovered.sum())
    identity = len(sources) == 1 and offset == total and bool((index == torch.arange(total)).all())
    return VectorSpec(tuple(sources), None if identity else index)


def build_latents(
    model: nn.Module,
    structure: Structure,
    *,
    generator: torch.Generator,
    ties: Mapping[str, str] | None = None,
) -> tuple[Latents, dict[str, ConvLatents]]:
    """Latents for every group a conv reads or writes, and each conv's wiring, in model order.

    Latents are N(0, 1) drawn from `generator` (CPU), so the same seed gives the same search.
    A group in `ties` reads its owner's latent and has none of its own.
    """
    ties = dict(ties or {})
    latents = Latents()

    def new(n: int) -> Tensor:
        return torch.randn(n, generator=generator)

    wiring: dict[str, ConvLatents] = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            continue
        transposed = isinstance(m, nn.ConvTranspose2d)
        out = _side_spec(latents, structure, name, "out", m.out_channels, new, ties)
        rows, cols = m.weight.shape[:2]
        if is_depthwise(m):
            key = latent_key(f"dw:{name}")
            latents.fixed[key] = nn.Parameter(new(1))
            wiring[name] = ConvLatents(out, VectorSpec((("fixed", key),), None), None, rows, 1)
            continue
        inp = _side_spec(latents, structure, name, "in", m.in_channels, new, ties)
        row, col = (inp, out) if transposed else (out, inp)
        gather = None
        if m.groups > 1:  # row r reads the columns of its own group
            per_row_group = torch.arange(rows) // (rows // m.groups)
            gather = per_row_group[:, None] * cols + torch.arange(cols)[None, :]
        wiring[name] = ConvLatents(row, col, gather, rows, cols)
    return latents, wiring
