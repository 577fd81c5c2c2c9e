"""Classification metrics: top-k accuracy in percent, kept on the device until the caller syncs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["accuracy", "topk_correct"]


def topk_correct(logits: Tensor, target: Tensor, ks: Sequence[int] = (1,)) -> Tensor:
    """Number of samples whose label is among the top-k logits, for each k: shape [len(ks)].

    Returns a device tensor (no host sync), so an evaluation loop can sum it over batches and
    read it once. A k above the number of classes counts every sample as correct.
    """
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices  # [N, k_max], best first
    hit = top.eq(target[:, None])  # [N, k_max], at most one True per row
    cum = hit.cumsum(dim=1).sum(dim=0)  # [k_max]: correct within the top 1..k_max
    return torch.stack([cum[min(k, k_max) - 1] for k in ks])


def accuracy(logits: Tensor, target: Tensor, k: int = 1) -> Tensor:
    """Top-k accuracy of one batch in percent (a 0-d device tensor)."""
    return topk_correct(logits, target, (k,))[0] * (100.0 / len(target))
