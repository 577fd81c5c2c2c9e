"""A sweep's `jobs.jsonl`: written by the Hydra launch (cli/launch.py), one line per job, and
read back by `prunebench compare compare.sweep=…` to compare every (task, data, model) the sweep
ran over its methods and seeds."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from harness.errors import ConfigError
from harness.runtime.atomic import atomic_write_text
from harness.runtime.secrets import mask_secrets

__all__ = ["STUDY_IDENTITY", "compare_sweep", "find_sweep", "sweep_groups", "write_manifest"]

log = logging.getLogger(__name__)

#: keys that name a study: a fixed study.name while one of them is swept makes every job fight
#: over one study; each job's line in `jobs.jsonl` carries them
STUDY_IDENTITY = ("task", "data", "model", "method", "seed")


def write_manifest(sweep_dir: Path, command: str, launcher: str, lines: list[dict]) -> None:
    """`jobs.jsonl` of a sweep: one JSON line per job (its record, or its error), masked."""
    text = "".join(
        mask_secrets(json.dumps({"command": command, "launcher": launcher, **record}, default=str))
        + "\n"
        for record in lines
    )
    atomic_write_text(sweep_dir / "jobs.jsonl", text)


def find_sweep(outputs: str | Path, which: str) -> Path:
    """`compare.sweep`: a sweep folder, or `latest` (the newest under <outputs>/multirun)."""
    if which != "latest":
        path = Path(which)
        if not (path / "jobs.jsonl").exists():
            raise ConfigError(
                f"compare.sweep={which}: no jobs.jsonl there; give a folder that `prunebench "
                "study -m …` created (<outputs>/multirun/<date>/<time>) or `latest`"
            )
        return path
    found = sorted(Path(outputs).glob("multirun/*/*/jobs.jsonl"))
    if not found:
        raise ConfigError(
            f"compare.sweep=latest: no sweep under {Path(outputs) / 'multirun'}; run "
            "`prunebench study -m method=l1,random seed=0,1 …` first, or set outputs="
        )
    return found[-1].parent


def sweep_groups(path: Path) -> list[dict[str, Any]]:
    """The sweep's studies grouped by (task, data, model): methods, seeds and the overrides to
    re-compose each group's config with (the first job's, minus method and seed)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for line in (path / "jobs.jsonl").read_text().splitlines():
        rec = json.loads(line)
        job = rec.get("hydra_job", {})
        if rec.get("command") != "study" or "error" in rec or "study_name" not in rec:
            continue
        key = (job.get("task"), job.get("data"), job.get("model"))
        g = groups.setdefault(key, {"methods": [], "seeds": [], "overrides": [
            o for o in job.get("overrides", [])
            if o.split("=", 1)[0].lstrip("+~") not in ("method", "seed")
            and not o.startswith("hydra")
        ]})  # fmt: skip
        if job.get("method") not in g["methods"]:
            g["methods"].append(job.get("method"))
        if job.get("seed") not in g["seeds"]:
            g["seeds"].append(job.get("seed"))
    if not groups:
        raise ConfigError(f"sweep {path} holds no finished `prunebench study` job")
    return list(groups.values())


def compare_sweep(
    cfg: DictConfig, overrides: Sequence[str], compose: Callable[[Sequence[str]], DictConfig]
) -> dict[str, Any]:
    """`prunebench compare compare.sweep=latest|DIR`: compare every (task, data, model) of a
    sweep over the methods and seeds it ran (mean ± std over the seeds)."""
    from harness.report.compare import run_compare

    path = find_sweep(cfg.outputs, str(cfg.compare.sweep))
    own = [o for o in overrides if o.split("=", 1)[0] not in ("compare.sweep", *STUDY_IDENTITY)]
    reports = []
    for group in sweep_groups(path):
        methods = ",".join(str(m) for m in group["methods"])
        seeds = ",".join(str(s) for s in group["seeds"])
        sub = compose([*group["overrides"], *own, f"compare.methods=[{methods}]",
                       f"compare.seeds=[{seeds}]", "compare.sweep=null"])  # fmt: skip
        log.info("comparing %s on %s/%s/%s from sweep %s", methods, sub.task.name,
                 sub.data.name, sub.model.name, path)  # fmt: skip
        reports.append(run_compare(sub))
    return reports[0] if len(reports) == 1 else {"sweep": str(path), "reports": reports}
