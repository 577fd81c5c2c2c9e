"""The layer types whose channels the structure engine can slice, and their channel counts.

Shared by the graph builder (groups.py) and the slicer (plan.py), which otherwise only meet
through `Structure`.
"""

from __future__ import annotations

from torch import nn

__all__ = ["PRUNABLE_TYPES", "channel_sizes"]

#: layer types whose channels we know how to slice (see harness/structure/plan.py)
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.BatchNorm1d,
    nn.PReLU,
)


def channel_sizes(m: nn.Module) -> tuple[int, int]:
    """(input channels, output channels) of a layer in PRUNABLE_TYPES."""
    if isinstance(m, nn.ConvTranspose2d | nn.Conv2d):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return m.num_features, m.num_features
    if isinstance(m, nn.PReLU):
        return m.num_parameters, m.num_parameters
    raise TypeError(type(m).__name__)
