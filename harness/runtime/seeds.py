"""Seeds: the global generators of a run, and the seeds of its named streams.

A run draws from several streams (each training stage's batch order, random_prune's per-layer
scores). Each gets its own seed from (run seed, stream name), so what one stream consumes never
shifts another; a method that must replay a stream the pipeline made (DHP's resumable search)
derives the same seed here instead of copying the formula.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch

__all__ = ["derive_seed", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derive_seed(seed: int, name: str) -> int:
    """The seed of the stream called `name` in a run seeded `seed` (stable across processes)."""
    return seed * 1_000_003 + zlib.crc32(name.encode())
