"""Device-resident batches: small datasets live on the device as tensors (airbench habit)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["Batch", "TensorBatches"]

Batch = tuple[Tensor, ...]
Transform = Callable[[Batch, torch.Generator], Batch]


class TensorBatches:
    """Iterate minibatches of equally long tensors, shuffled and transformed on their device.

    The generator is CPU-side and seeded, so two runs with the same seed see the same batches.
    `transform(batch, generator)` does augmentation and normalisation (uint8 → float) per batch.
    """

    def __init__(
        self,
        tensors: Batch,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors of a TensorBatches must have the same length")
        if n == 0:
            raise ValueError("TensorBatches got an empty dataset")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last_requested = drop_last
        self.drop_last = drop_last and n >= batch_size
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return len(self.tensors[0])

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[Batch]:
        n = self.num_samples
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        if order is not None:
            order = order.to(self.device, non_blocking=True)
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min((i + 1) * self.batch_size, n))
            batch = tuple(t[order[sl]] if order is not None else t[sl] for t in self.tensors)
            yield self.transform(batch, self.generator) if self.transform else batch

    def fork(self, seed: int) -> TensorBatches:
        """Same data and transform, own shuffle/augmentation stream: stages that read training
        batches (Taylor's calibration, DHP's search) never shift another stage's batch order."""
        twin = copy.copy(self)
        twin.generator = torch.Generator().manual_seed(seed)
        return twin

    def rebatch(self, batch_size: int) -> TensorBatches:
        """Same data, transform and shuffle stream at another batch size (DHP searches at the
        paper's batch 64 whatever the run's training batch)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        twin = copy.copy(self)
        twin.batch_size = batch_size
        twin.drop_last = self.drop_last_requested and self.num_samples >= batch_size
        return twin

    def to(self, device: torch.device | str) -> TensorBatches:
        """Move the data once; later iteration never copies host → device."""
        self.tensors = tuple(t.to(device) for t in self.tensors)
        return self
