"""Torch-Pruning's coupled groups, one root layer at a time, with bounds on each traversal.

`DependencyGraph.get_all_groups` can run for minutes and tens of GB:
- on window-attention models (Swin, Swin-V2, MaxViT), shape inference gives a reshape near the
  relative-position bias a flatten index mapping (one head → head_dim channels), and a cycle
  through it multiplies the index list on every pass;
- on ReXNet's partial residuals (a slice of the channels), the slice mappings split a group into
  one-index items that keep multiplying, and every new item is compared with all earlier ones.
No true mapping yields more indices than the widest tensor dimension of the model, and no true
group needs more than a few items per graph node, so a traversal past either bound is stopped at
once and reported as a `Runaway`; the caller freezes its root layer and the rest still prunes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    import torch_pruning as tp

__all__ = ["Runaway", "traced_groups"]


#: a traversal may add this many (layer side, indices) items per graph node before it is stopped;
#: the most any torchvision model needs is 0.55 (ConvNeXt-Base), ReXNet's slices run past 80
ITEMS_PER_NODE = 8


@dataclass(frozen=True)
class Runaway:
    """A root layer whose group traversal was stopped, and why."""

    root: nn.Module
    size: int  # the root's output channels
    reason: str


class _Overflow(Exception):
    """A traversal went past one of the bounds; the message says which."""


def index_limit(model: nn.Module) -> int:
    """The widest dimension of any parameter: no channel index list may be longer."""
    return max((max(p.shape) for p in model.parameters() if p.dim()), default=0)


@contextmanager
def _swapped(module: object, name: str, replacement: type) -> Iterator[None]:
    base = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, base)


@contextmanager
def _bounded_traversal(index_limit: int, item_limit: int) -> Iterator[None]:
    """While active, a Torch-Pruning group traversal raises `_Overflow` once a flatten/reshape
    mapping yields more than `index_limit` indices or the group holds more than `item_limit`
    items.

    Torch-Pruning builds its mapping objects and the group afresh inside every
    `get_pruning_group` call, by the class names in its `index_mapping` and `graph` modules, so
    the bounds are scoped swaps of those two classes (left out where a version lacks them).
    """
    from torch_pruning.dependency import graph, index_mapping

    flatten = getattr(index_mapping, "_FlattenIndexMapping", None)
    group = getattr(graph, "Group", None)
    with ExitStack() as stack:
        if flatten is not None:

            class BoundedMapping(flatten):
                def __call__(self, idxs):  # noqa: ANN001, ANN204 - Torch-Pruning's signature
                    out = super().__call__(idxs)
                    if len(out) > index_limit:
                        raise _Overflow(
                            f"it expanded to {len(out):,} indices, more than the widest "
                            f"dimension of the model, {index_limit:,}"
                        )
                    return out

            stack.enter_context(_swapped(index_mapping, "_FlattenIndexMapping", BoundedMapping))
        if group is not None:

            class BoundedGroup(group):
                def add_dep(self, dep, idxs):  # noqa: ANN001, ANN201 - Torch-Pruning's signature
                    super().add_dep(dep, idxs)
                    if len(self.items) > item_limit:
                        raise _Overflow(f"its traversal passed {item_limit:,} coupled items")

            stack.enter_context(_swapped(graph, "Group", BoundedGroup))
        yield


def traced_groups(
    dg: tp.DependencyGraph, model: nn.Module, roots: tuple[type[nn.Module], ...]
) -> list[tp.dependency.Group | Runaway]:
    """Every coupled group rooted at a layer of a `roots` type, as `get_all_groups` would give
    them (each root's whole output; a layer already pruned by an earlier group is skipped), with
    a `Runaway` in place of a group whose traversal passes a bound."""
    items = ITEMS_PER_NODE * max(len(dg.module2node), 1)
    covered: set[nn.Module] = set(getattr(dg, "IGNORED_LAYERS_IN_TRACING", ()))
    found: list[tp.dependency.Group | Runaway] = []
    with _bounded_traversal(index_limit(model), items):
        for module in list(dg.module2node):
            if not isinstance(module, roots) or module in covered:
                continue
            pruner = dg.get_pruner_of_module(module)
            width = None if pruner is None else pruner.get_out_channels(module)
            if width is None:
                continue
            try:
                group = dg.get_pruning_group(module, pruner.prune_out_channels, list(range(width)))
            except _Overflow as e:
                covered.add(module)
                reason = f"a coupling the dependency graph cannot follow ({e})"
                found.append(Runaway(module, width, reason))
                continue
            covered.update(
                item.dep.target.module
                for item in group.items
                if dg.is_out_channel_pruning_fn(item.dep.handler)
            )
            found.append(group)
    return found
