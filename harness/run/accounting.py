"""What one run cost: the training it did beyond the shared baseline, and the baseline itself.

Reported beside quality so "the same trial budget" cannot hide that one method's trial includes a
30-epoch search while another's is a few fine-tuning epochs. Keys start with `cost_`; the study
copies them onto each Optuna trial and `prunebench compare` averages them per method.
"""

from __future__ import annotations

__all__ = ["COST_PREFIX", "run_cost"]

COST_PREFIX = "cost_"


def run_cost(
    *,
    search_epochs: float,
    finetune_epochs: float,
    train_images: int,
    wall_s: float,
    baseline_epochs: int,
    baseline_wall_s: float,
    on_gpu: bool,
) -> dict[str, float | None]:
    """`search_epochs`: epochs a search or train-time method trained (0 for one-shot pruning);
    `finetune_epochs`: fine-tuning epochs (between pruning steps included); `train_images`: size
    of the training split; `wall_s`: pruning + fine-tuning seconds; the baseline's epochs and
    training seconds are its original ones, also when it was loaded from the cache."""
    epochs = float(search_epochs) + float(finetune_epochs)
    return {
        "cost_search_epochs": float(search_epochs),
        "cost_finetune_epochs": float(finetune_epochs),
        "cost_train_images": epochs * int(train_images),
        "cost_wall_s": float(wall_s),
        "cost_device_hours": wall_s / 3600.0 if on_gpu else None,
        "cost_baseline_epochs": float(baseline_epochs),
        "cost_baseline_wall_s": float(baseline_wall_s),
    }
