"""`prunebench show method=dhp`: a method's hyperparameters with their defaults and the search
space a study samples for it (on the configured task), so users need not read the YAML."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["show"]

SKIP = ("name", "search_space", "search_space_by_task")


def show(compose: Callable[[Sequence[str]], DictConfig], overrides: Sequence[str]) -> dict:
    """The composed method (hyperparameters, defaults, space) for `overrides`; printed readably
    to stderr, returned for the JSON line."""
    from harness.registry import METHODS
    from harness.run.pipeline import method_defaults
    from harness.runtime.plugins import load_configured
    from harness.study.space import SearchSpace

    cfg = compose(list(overrides))
    load_configured(cfg)
    method = OmegaConf.to_container(cfg.method, resolve=True)
    hyper = {k: v for k, v in method.items() if k not in SKIP}
    space = SearchSpace.from_config(cfg)
    described = space.describe()
    # null keys take the method's per-model value (slimming's λ, DHP's γ), as a study's trial 0
    resolved = method_defaults(cfg.method, model=cfg.model.name, task=cfg.task.name)
    defaults = space.defaults(cfg, resolved)
    out: dict[str, Any] = {
        "method": cfg.method.name,
        "task": cfg.task.name,
        "model": cfg.model.name,
        "hyperparameters": hyper,
        "search_space": {
            path: {**d, "default": defaults.get(path)} for path, d in described.items()
        },
    }
    # the one-line difference of the default from the paper and the authors' code, if any
    fidelity = getattr(METHODS.get(cfg.method.name), "fidelity", None)
    if fidelity:
        out["fidelity"] = fidelity
    err = sys.stderr
    print(f"method {out['method']} (task {out['task']}, model {out['model']})", file=err)
    if fidelity:
        print(f"differs from the paper by default: {fidelity}", file=err)
    print("hyperparameters (defaults; override as method.<key>=…):", file=err)
    for k, v in hyper.items():
        shown = f"null → {resolved[k]} for this model" if v is None and k in resolved else v
        print(f"  {k:24s} {shown}", file=err)
    print("search space of `prunebench study` (default = trial 0):", file=err)
    for path, d in out["search_space"].items():
        rng = (
            d.get("choices") or f"[{d.get('low')}, {d.get('high')}]{' log' if d.get('log') else ''}"
        )
        when = f" when {d['when']}" if d.get("when") else ""
        print(f"  {path:28s} {d['type']:11s} {rng}  default={d['default']}{when}", file=err)
    return out
