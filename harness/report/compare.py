"""`prunebench compare`: the studies of several methods on one (task, data, model) in one report.

Per method (and seed): the Pareto front of its study (selected on validation, as the study's
objectives are), the hypervolume of that front against one reference point shared by all
methods, the best quality at standard MAC targets (interpolated where no trial lies there,
marked as such), and for every pair of methods the coverage C(A, B) of B's front by A's.
Seeds give mean ± std. Writes CSV + Markdown + one combined Pareto plot, logs them to MLflow,
and copies them to `compare.results_dir` when set.
"""

from __future__ import annotations

import logging
import math
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError, DataNotFoundError
from harness.report.pareto import Point, coverage, hypervolume_2d, pareto_front, quality_at

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["StudyPoints", "collect", "compare_tables", "run_compare"]

log = logging.getLogger(__name__)

QUALITY_SPLITS = ("test", "val")


@dataclass
class StudyPoints:
    """The finished, feasible trials of one study as (macs_ratio, quality) points."""

    method: str
    seed: int
    study: str
    trials: list[int]
    macs: list[float]
    val: list[float]
    test: list[float]

    def points(self, split: str) -> list[Point]:
        return list(zip(self.macs, self.val if split == "val" else self.test, strict=True))

    def front_index(self) -> list[int]:
        """Indices of the trials on the validation front (the study's own selection)."""
        front = set(pareto_front(self.points("val")))
        return [i for i, p in enumerate(self.points("val")) if p in front]

    def front(self, split: str) -> list[Point]:
        pts = self.points(split)
        return [pts[i] for i in self.front_index()]


def _study_cfg(cfg: DictConfig, method: str, seed: int) -> DictConfig:
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    sub.method = {"name": method}
    sub.seed = seed
    sub.study.name = None
    return sub


def collect(cfg: DictConfig) -> list[StudyPoints]:
    """Load every (method, seed) study of `cfg.compare` from the study storage."""
    import optuna
    from optuna.trial import TrialState

    from harness.study.runner import StudySettings, _pick_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = list(cfg.compare.get("seeds") or [cfg.seed])
    out = []
    for method in cfg.compare.methods:
        for seed in seeds:
            sub = _study_cfg(cfg, str(method), int(seed))
            settings = StudySettings.from_cfg(sub)
            spec = _pick_storage(sub, settings)
            try:
                study = optuna.load_study(study_name=settings.name, storage=spec.open())
            except KeyError as e:
                raise DataNotFoundError(
                    f"no study '{settings.name}' in {spec.masked}; run `prunebench study "
                    f"method={method} seed={seed} …` first (same task/data/model/outputs)"
                ) from e
            sp = StudyPoints(str(method), int(seed), settings.name, [], [], [], [])
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if any(v > 0 for k, v in t.user_attrs.items() if k.startswith("constraint.")):
                    continue  # infeasible trials are not part of any front
                sp.trials.append(t.number)
                sp.macs.append(float(t.user_attrs.get("macs_ratio", t.values[1])))
                sp.val.append(float(t.user_attrs.get("val_metric", t.values[0])))
                sp.test.append(float(t.user_attrs.get("test_metric", math.nan)))
            if not sp.trials:
                log.warning("study %s has no complete feasible trial", settings.name)
            out.append(sp)
    return out


def _fmt(values: Sequence[float], digits: int = 2) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def compare_tables(
    studies: Sequence[StudyPoints],
    *,
    split: str,
    targets: Sequence[float],
    reference: tuple[float | None, float | None],
    tol: float = 0.01,
) -> dict[str, pd.DataFrame]:
    """points (every trial), summary (method rows), dominance (C(row, column))."""
    import pandas as pd

    if split not in QUALITY_SPLITS:
        raise ConfigError(f"compare.quality={split}; known: {', '.join(QUALITY_SPLITS)}")
    rows = []
    for sp in studies:
        on_front = set(sp.front_index())
        for i, trial in enumerate(sp.trials):
            rows.append({
                "method": sp.method, "seed": sp.seed, "trial": trial, "macs_ratio": sp.macs[i],
                "val_quality": sp.val[i], "test_quality": sp.test[i], "on_front": i in on_front,
            })  # fmt: skip
    points = pd.DataFrame(rows)
    all_q = [q for sp in studies for _, q in sp.front(split) if not math.isnan(q)]
    ref_m = 1.0 if reference[0] is None else float(reference[0])
    ref_q = reference[1]
    if ref_q is None:
        ref_q = min(all_q) if all_q else 0.0
    methods = list(dict.fromkeys(sp.method for sp in studies))
    summary = []
    for m in methods:
        mine = [sp for sp in studies if sp.method == m]
        row: dict[str, Any] = {
            "method": m,
            "seeds": len(mine),
            "trials": sum(len(sp.trials) for sp in mine),
            "front": _fmt([len(sp.front_index()) for sp in mine], 1),
            "hypervolume": _fmt(
                [hypervolume_2d(sp.front(split), (ref_m, ref_q)) for sp in mine], 3
            ),
        }
        for t in targets:
            got = [quality_at(sp.front(split), t, tol) for sp in mine]
            mark = {"interpolated": "~", "fewer MACs": "≤"}
            marks = "".join(sorted({mark.get(how, "") for _, how in got}))
            row[f"q@{t:g}"] = f"{marks}{_fmt([v for v, _ in got])}"
        summary.append(row)
    pooled = {m: pareto_front(p for sp in studies if sp.method == m for p in sp.front(split))
              for m in methods}  # fmt: skip
    dominance = pd.DataFrame(
        [
            [coverage(pooled[a], pooled[b]) if a != b else math.nan for b in methods]
            for a in methods
        ],
        index=methods,
        columns=methods,
    )
    return {
        "points": points,
        "summary": pd.DataFrame(summary),
        "dominance": dominance,
        "reference": pd.DataFrame([{"macs_ratio": ref_m, "quality": ref_q}]),
    }


def _plot(studies: Sequence[StudyPoints], split: str, targets: Sequence[float], title: str,
          path: Path) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    methods = list(dict.fromkeys(sp.method for sp in studies))
    for i, m in enumerate(methods):
        pts = [p for sp in studies if sp.method == m for p in sp.points(split)]
        front = pareto_front(p for sp in studies if sp.method == m for p in sp.front(split))
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=12, alpha=0.35, color=f"C{i}")
        if front:
            ax.plot(*zip(*front, strict=True), "o-", color=f"C{i}", drawstyle="steps-post",
                    label=m)  # fmt: skip
    for t in targets:
        ax.axvline(t, color="0.8", lw=0.8, ls=":")
    ax.set_xlabel("MAC ratio (kept / unpruned, conv + linear)")
    ax.set_ylabel(f"{split} quality")
    ax.set_title(f"{title}\nfronts selected on val, shown on {split}; faint: every trial",
                 fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _markdown(tables: dict[str, pd.DataFrame], title: str, split: str) -> str:
    ref = tables["reference"].iloc[0]
    dom = tables["dominance"].map(lambda v: "—" if math.isnan(v) else f"{v:.2f}")
    return "\n".join([
        f"# {title}", "",
        f"Fronts are each study's Pareto front on validation; quality shown on **{split}**. "
        f"Hypervolume against the shared reference (MAC ratio {ref.macs_ratio:g}, quality "
        f"{ref.quality:.4g}). `q@t`: best quality at MAC ratio t (`~` interpolated between front "
        "points, `≤` met with fewer MACs, — not reached); mean ± std over seeds.", "",
        tables["summary"].to_markdown(index=False), "",
        "Coverage C(row, column): fraction of the column method's front that the row method's "
        "front weakly dominates.", "",
        dom.to_markdown(), "",
    ])  # fmt: skip


def run_compare(cfg: DictConfig) -> dict[str, Any]:
    """Collect, tabulate, plot, write and log the comparison; returns where everything went."""
    from harness.pipeline import git_sha
    from harness.tracking import Tracker

    c = cfg.compare
    split = str(c.get("quality", "test"))
    targets = [float(t) for t in c.targets]
    ref = c.get("reference") or {}
    studies = collect(cfg)
    tables = compare_tables(
        studies, split=split, targets=targets,
        reference=(ref.get("macs_ratio"), ref.get("quality")), tol=float(c.get("tolerance", 0.01)),
    )  # fmt: skip
    stem = f"{cfg.task.name}-{cfg.data.name}-{cfg.model.name}"
    title = f"{stem}: {', '.join(c.methods)} (seeds {sorted({sp.seed for sp in studies})})"
    out = Path(cfg.outputs) / "compare" / stem
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "points_csv": out / "pareto_points.csv",
        "summary_csv": out / "summary.csv",
        "table_md": out / "compare.md",
        "plot": out / "pareto.png",
    }
    _write_atomic(files["points_csv"], tables["points"].to_csv(index=False))
    _write_atomic(files["summary_csv"], tables["summary"].to_csv(index=False))
    md = _markdown(tables, title, split) + f"\ngit {git_sha()}\n"
    _write_atomic(files["table_md"], md)
    _plot(studies, split, targets, title, files["plot"])
    result: dict[str, Any] = {k: str(v) for k, v in files.items()}
    if c.get("results_dir"):
        dest = Path(c.results_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for path in files.values():
            shutil.copyfile(path, dest / path.name)
        result["results_dir"] = str(dest)
    tracker = Tracker(
        cfg.tracking.uri, cfg.tracking.experiment, outputs=cfg.outputs,
        run_name=f"compare-{stem}", enabled=cfg.tracking.enabled,
        tags={"kind": "compare", "task": str(cfg.task.name), "model": str(cfg.model.name),
              "data": str(cfg.data.name), "methods": ",".join(c.methods)},
    )  # fmt: skip
    r = tables["reference"].iloc[0]
    hv_by_study = {
        (sp.method, sp.seed): hypervolume_2d(
            sp.front(split), (float(r.macs_ratio), float(r.quality))
        )
        for sp in studies
    }
    hv = {
        m: statistics.mean(v for (m2, _), v in hv_by_study.items() if m2 == m)
        for m in dict.fromkeys(sp.method for sp in studies)
    }
    with tracker:
        tracker.log_params({"compare": OmegaConf.to_container(c, resolve=True)})
        tracker.log_artifacts(out, "compare")
        tracker.log_metrics({f"hypervolume.{m}.s{s}": v for (m, s), v in hv_by_study.items()})
    log.info("comparison written to %s\n%s", out, md)
    result.update(
        hypervolume=hv,
        run_id=tracker.run_id,
        tracking_uri=tracker.uri if tracker.enabled else None,
        studies=[sp.study for sp in studies],
    )
    return result


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
