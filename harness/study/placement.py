"""Which GPU each study worker uses: `study.workers` spread over the visible devices, at most
`study.workers_per_device` on one (CIFAR-sized trials use a fraction of a modern GPU, so several
share one). Each worker process sees only its device through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from harness.errors import ConfigError

__all__ = ["place_workers", "visible_devices"]


def visible_devices(env: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries.

    CUDA_VISIBLE_DEVICES when set (ids or UUIDs; an empty value means none), otherwise
    `count` devices (default: torch's count without initialising CUDA in this process).
    """
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    if count is None:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [str(i) for i in range(count)]


def place_workers(
    n_workers: int, devices: Sequence[str], per_device: int | None, *, first: int = 0
) -> list[str | None]:
    """Device of each of `n_workers` workers (global indices `first`, `first + 1`, …): round-robin
    over `devices`, so load stays even; None everywhere when there is no GPU.

    `per_device` caps the workers on one device (None: no cap); more workers than
    devices × per_device is refused before anything starts.
    """
    if not devices:
        return [None] * n_workers
    if per_device is not None:
        if per_device < 1:
            raise ConfigError(f"study.workers_per_device={per_device}; use 1 or more (or null)")
        capacity = len(devices) * per_device
        if first + n_workers > capacity:
            raise ConfigError(
                f"study.workers={n_workers} (from worker {first}) exceeds {len(devices)} "
                f"device(s) × study.workers_per_device={per_device}; lower study.workers or "
                "raise study.workers_per_device"
            )
    return [devices[(first + i) % len(devices)] for i in range(n_workers)]
