"""The settings that give a study's trials their meaning, and the check that a resume keeps them.

A trial's number means something only with its training budgets, data, baseline, pruning and
method settings; resuming a study with other values would mix incomparable trials on one front.
The values the study itself samples (its search space) vary per trial and are left out, as is
where things live (paths, tracking, device).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.tracking import flatten

__all__ = ["MEANING_SECTIONS", "differing_keys", "trial_settings"]

#: config sections (or top-level keys) that change what a trial computes
MEANING_SECTIONS = ("task", "data", "model", "method", "train", "finetune", "prune", "eval",
                    "measure", "amp", "target")  # fmt: skip
#: keys inside those sections that say where data lives, or describe the search space
LOCATION_KEYS = ("data.root", "data.path", "data.download", "method.search_space",
                 "method.search_space_by_task")  # fmt: skip


def trial_settings(cfg: DictConfig, sampled: Iterable[str]) -> dict[str, str]:
    """Flat {config path: JSON value} of MEANING_SECTIONS, without the sampled paths."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    picked = {k: tree[k] for k in MEANING_SECTIONS if k in tree}
    skip = set(sampled) | set(LOCATION_KEYS)
    return {
        k: json.dumps(v, sort_keys=True, default=str)
        for k, v in sorted(flatten(picked).items())
        if k not in skip and not any(k.startswith(f"{s}.") for s in skip)
    }


def differing_keys(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ (or exist on one side only), sorted."""
    return sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))
