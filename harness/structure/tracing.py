"""Torch-Pruning's coupled groups, one root layer at a time, with a bound on index growth.

`DependencyGraph.get_all_groups` can run for minutes and tens of GB on window-attention models
(Swin, Swin-V2, MaxViT): shape inference gives a reshape near the relative-position bias a
flatten index mapping (one head → head_dim channels), and a cycle through that reshape
multiplies the index list on every pass. No true mapping yields more indices than the widest
tensor dimension of the model, so a group whose mapping does is stopped at once and reported as
a `Runaway`; the caller freezes its root layer and the rest of the model still prunes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    import torch_pruning as tp

__all__ = ["Runaway", "traced_groups"]


@dataclass(frozen=True)
class Runaway:
    """A root layer whose group traversal produced more channel indices than the model has."""

    root: nn.Module
    size: int  # the root's output channels
    indices: int  # how many indices one mapping produced
    limit: int

    @property
    def reason(self) -> str:
        return (
            "a reshape whose channel mapping the dependency graph cannot follow "
            f"(it expanded {self.size} channels to {self.indices:,} indices, more than the "
            f"widest dimension of the model, {self.limit:,})"
        )


class _IndexOverflow(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


def index_limit(model: nn.Module) -> int:
    """The widest dimension of any parameter: no channel index list may be longer."""
    return max((max(p.shape) for p in model.parameters() if p.dim()), default=0)


@contextmanager
def _bounded_flatten_mappings(limit: int) -> Iterator[None]:
    """While active, Torch-Pruning's flatten/reshape mappings raise once they exceed `limit`.

    Torch-Pruning builds these mapping objects afresh inside every `get_pruning_group` call, by
    the class name in its `index_mapping` module, so the bound is a scoped swap of that class.
    """
    from torch_pruning.dependency import index_mapping

    base = getattr(index_mapping, "_FlattenIndexMapping", None)
    if base is None:  # a Torch-Pruning without this class: nothing to bound
        yield
        return

    class Bounded(base):
        def __call__(self, idxs):  # noqa: ANN001, ANN204 - Torch-Pruning's signature
            out = super().__call__(idxs)
            if len(out) > limit:
                raise _IndexOverflow(len(out))
            return out

    index_mapping._FlattenIndexMapping = Bounded
    try:
        yield
    finally:
        index_mapping._FlattenIndexMapping = base


def traced_groups(
    dg: tp.DependencyGraph, model: nn.Module, roots: tuple[type[nn.Module], ...]
) -> list[tp.dependency.Group | Runaway]:
    """Every coupled group rooted at a layer of a `roots` type, as `get_all_groups` would give
    them (each root's whole output; a layer already pruned by an earlier group is skipped), with
    a `Runaway` in place of a group whose index mapping blows up."""
    limit = index_limit(model)
    covered: set[nn.Module] = set(getattr(dg, "IGNORED_LAYERS_IN_TRACING", ()))
    found: list[tp.dependency.Group | Runaway] = []
    with _bounded_flatten_mappings(limit):
        for module in list(dg.module2node):
            if not isinstance(module, roots) or module in covered:
                continue
            pruner = dg.get_pruner_of_module(module)
            width = None if pruner is None else pruner.get_out_channels(module)
            if width is None:
                continue
            try:
                group = dg.get_pruning_group(module, pruner.prune_out_channels, list(range(width)))
            except _IndexOverflow as e:
                covered.add(module)
                found.append(Runaway(module, width, e.count, limit))
                continue
            covered.update(
                item.dep.target.module
                for item in group.items
                if dg.is_out_channel_pruning_fn(item.dep.handler)
            )
            found.append(group)
    return found
