"""`prunebench compare`: the studies of several methods on one (task, data, model) in one report.

Per method and seed: the study's trials, its Pareto front (selected on validation, as the
study's objectives are), the hypervolume of that front against a reference fixed by (task, data)
alone, and at each MAC target t the test score of the trial the study would pick there (the
best on validation among trials whose MAC ratio is at most t; see `pareto.at_target`). Over
seeds: mean ± std, how many seeds reached each target, and a paired test against the best
method (report/significance.py). Beside quality: what each method's trials cost. For every pair
of methods the coverage C(A, B). `compare.target_kind=latency` selects, ranks and draws against
each trial's measured latency ratio (`latency_ratio_batch`) instead of its MAC ratio. Writes
CSV + Markdown + one combined Pareto plot, each stamped with its provenance, logs them to
MLflow (one run per comparison, replaced when rerun), and copies them to `compare.results_dir`
when set.
"""

from __future__ import annotations

import logging
import math
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness.config import model_label, parse_method_label
from harness.errors import ConfigError
from harness.report.pareto import Point, Trained, at_target, coverage, hypervolume_2d, pareto_front
from harness.report.significance import (
    MARKS,
    NOT_BETTER,
    POWER,
    TEST_NAME,
    Mark,
    paired_t,
    rank_family,
)
from harness.runtime.atomic import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

    from harness.tracking import Tracker

__all__ = [
    "COST_KEYS",
    "StudyPoints",
    "collect",
    "compare_tables",
    "compare_target_kind",
    "reference_point",
    "run_compare",
]

log = logging.getLogger(__name__)

QUALITY_SPLITS = ("test", "val")
#: cost of one trial (pipeline record keys, also Optuna user attributes) → column label
COST_KEYS = {
    "cost_search_epochs": "search/extra epochs",
    "cost_finetune_epochs": "fine-tune epochs",
    "cost_train_images": "train images seen",
    "cost_wall_s": "wall s",
    "cost_device_hours": "GPU device-hours",
    "cost_baseline_epochs": "baseline epochs",
    "cost_baseline_wall_s": "baseline wall s",
}
#: measured latency of a trial over its unpruned model's (same process, measure.latency_batch)
SPEED_KEY = "latency_ratio_batch"
#: `compare.target_kind` → what a target and the front's x-axis are: (short label, axis label)
AXES = {
    "macs": ("MACs", "MAC ratio (kept / unpruned, conv + linear)"),
    "latency": ("latency", "latency ratio (pruned / unpruned, measured at measure.latency_batch)"),
}  # fmt: skip
#: what one whole study spent (harness/study/halving.py: `study_cost`) → label
STUDY_COST_KEYS = {
    "study_train_images": "train images spent per study (every trial, stopped ones included)",
    "study_full_trials": "full-budget trials per study",
    "study_stopped_trials": "trials stopped at a rung per study",
}


@dataclass
class StudyPoints:
    """The finished, feasible trials of one study."""

    method: str
    seed: int
    study: str
    trials: list[int]
    macs: list[float]
    val: list[float]
    test: list[float]
    costs: list[dict[str, float]] = field(default_factory=list)
    #: split → the task's no-op score on that split (restoration: noisy input, bicubic)
    noop: dict[str, float] = field(default_factory=dict)
    budgets: list[str] = field(default_factory=list)  # per trial: "equal 15" / "paper" (budget.py)
    sources: list[int | None] = field(default_factory=list)  # a control's source trial, per trial
    #: what the whole study spent (STUDY_COST_KEYS), stopped and failed trials included
    spent: dict[str, float] = field(default_factory=dict)
    #: the x coordinate of fronts and targets (AXES): MAC ratio, or measured latency ratio
    axis: str = "macs"

    @property
    def x(self) -> list[float]:
        """Per trial: its MAC ratio, or (axis `latency`) its measured latency ratio, NaN where
        the trial measured none (it then reaches no target and is on no front)."""
        if self.axis == "macs":
            return self.macs
        costs = self.costs + [{}] * (len(self.trials) - len(self.costs))
        return [float(c.get(SPEED_KEY, math.nan)) for c in costs[: len(self.trials)]]

    def points(self, split: str) -> list[Point]:
        return list(zip(self.x, self.val if split == "val" else self.test, strict=True))

    def trained(self) -> list[Trained]:
        return list(zip(self.x, self.val, self.test, strict=True))

    def front_index(self) -> list[int]:
        """Indices of the trials on the validation front (the study's own selection)."""
        pts = self.points("val")
        front = set(pareto_front(p for p in pts if not math.isnan(p[0])))
        return [i for i, p in enumerate(pts) if not math.isnan(p[0]) and p in front]

    def front(self, split: str) -> list[Point]:
        pts = self.points(split)
        return [pts[i] for i in self.front_index()]


def _study_cfg(cfg: DictConfig, method: str, seed: int) -> DictConfig:
    """The study config of `method` (a label: `scratch_b@l1` is scratch_b with source l1)."""
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    sub.method = parse_method_label(method)
    sub.seed = seed
    sub.study.name = None
    return sub


def compare_seeds(cfg: DictConfig) -> list[int]:
    """`compare.seeds`, or the run seed alone."""
    return [int(s) for s in (cfg.compare.get("seeds") or [cfg.seed])]


def collect(cfg: DictConfig) -> list[StudyPoints]:
    """Load every (method, seed) study of `cfg.compare` from the study storage, on the axis
    `compare.target_kind` names."""
    import optuna
    from optuna.trial import TrialState

    from harness.study.halving import study_cost
    from harness.study.opening import load_existing_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for method in [*cfg.compare.methods, *(cfg.compare.get("controls") or [])]:
        for seed in compare_seeds(cfg):
            study, settings = load_existing_study(
                _study_cfg(cfg, str(method), int(seed)),
                f"; run `prunebench study method={method} seed={seed} …` first "
                "(same task/data/model/outputs)",
            )
            sp = StudyPoints(str(method), int(seed), settings.name, [], [], [], [],
                             axis=compare_target_kind(cfg.compare))  # fmt: skip
            sp.spent = study_cost(study)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if any(v > 0 for k, v in t.user_attrs.items() if k.startswith("constraint.")):
                    continue  # infeasible trials are not part of any front
                sp.trials.append(t.number)
                sp.macs.append(float(t.user_attrs.get("macs_ratio", t.values[1])))
                sp.val.append(float(t.user_attrs.get("val_metric", t.values[0])))
                sp.test.append(float(t.user_attrs.get("test_metric", math.nan)))
                sp.costs.append({k: float(t.user_attrs[k]) for k in (*COST_KEYS, SPEED_KEY)
                                 if t.user_attrs.get(k) is not None})  # fmt: skip
                sp.noop.update({s: float(t.user_attrs[f"{s}_metric_noop"]) for s in QUALITY_SPLITS
                                if t.user_attrs.get(f"{s}_metric_noop") is not None})  # fmt: skip
                sp.budgets.append(budget_label(t.user_attrs))
                source = t.user_attrs.get("search_source_trial")
                sp.sources.append(None if source is None else int(source))
            if not sp.trials:
                log.warning("study %s has no complete feasible trial", settings.name)
            out.append(sp)
    return out


def budget_label(record: Mapping[str, Any]) -> str:
    """How a trial's training budget was set: `equal <epochs>`, `paper`, or `unrecorded` for a
    trial from before budgets were recorded."""
    mode = record.get("budget_mode")
    if mode is None:
        return "unrecorded"
    epochs = record.get("budget_epochs")
    return f"{mode} {float(epochs):g} ep" if mode == "equal" and epochs is not None else str(mode)


def reference_point(cfg: DictConfig) -> tuple[float, float]:
    """The hypervolume reference: fixed by (task, data), never by the methods compared.

    MAC ratio `compare.reference.macs_ratio` (1.0: the unpruned model). Quality, first found:
    `compare.reference.quality`, `data.reference_quality` (declared per dataset, e.g. the PSNR
    of the degraded input), chance accuracy 100 / `data.num_classes` for classification.
    """
    ref = cfg.compare.get("reference") or {}
    macs = 1.0 if ref.get("macs_ratio") is None else float(ref.macs_ratio)
    for quality in (ref.get("quality"), cfg.data.get("reference_quality")):
        if quality is not None:
            return macs, float(quality)
    if str(cfg.task.name) == "classification" and cfg.data.get("num_classes"):
        return macs, 100.0 / int(cfg.data.num_classes)
    raise ConfigError(
        f"no hypervolume reference quality for task={cfg.task.name} data={cfg.data.name}; "
        "set data.reference_quality (e.g. the PSNR of the degraded input) or "
        "compare.reference.quality"
    )


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.mean(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.stdev(values) if len(values) > 1 else math.nan


def compare_tables(
    studies: Sequence[StudyPoints],
    *,
    split: str,
    targets: Sequence[float],
    reference: tuple[float, float],
    granularity: float = 0.0,
    alpha: float = 0.05,
    correction: str = "holm",
    controls: Sequence[str] = (),
    target_kind: str = "macs",
) -> dict[str, pd.DataFrame]:
    """points (every trial), summary (one typed row per method), dominance (C(row, column)),
    tests (one row per paired test against a column's best, or of a method against its own
    Scratch-B control), ties (picks a tie-break decided).

    `target_kind`: `macs` (targets, fronts and hypervolume on the MAC ratio) or `latency` (on
    each trial's measured latency ratio; a trial that measured none reaches no target).

    `controls`: the studies (labels, e.g. `scratch_b@l1`, `uniform`) that are controls: their
    summary rows (`control` true) are never ranked; a control with a source method shows, at
    each target, the trial that mirrors the method's pick (the same architecture); each method
    with a `scratch_b@<method>` control is tested against it at every column (same family as the
    ranking tests): `q@t_scratch` is "better" or "not better".

    Summary columns per target t: `q@t_mean`, `q@t_std` (over the seeds that reached t),
    `q@t_reached` of `seeds`, `q@t_macs` (mean MAC ratio of the picked trials), `q@t_mark`
    (significance.MARKS), `q@t_p` (paired test against the best, corrected over the table's
    tests by `correction`) and `q@t_p_raw` (uncorrected); the same for hypervolume.
    """
    import pandas as pd

    if split not in QUALITY_SPLITS:
        raise ConfigError(f"compare.quality={split}; known: {', '.join(QUALITY_SPLITS)}")
    if granularity < 0:
        raise ConfigError(f"compare.granularity={granularity}; use 0 or a small positive slack")
    pick = 2 if split == "test" else 1
    studies = [replace(sp, axis=target_kind) for sp in studies]
    points = pd.DataFrame(_point_rows(studies))
    rows = list(dict.fromkeys(sp.method for sp in studies))
    methods = [m for m in rows if m not in controls]
    seeds = sorted({sp.seed for sp in studies})
    by = {(sp.method, sp.seed): sp for sp in studies}
    # method → seed → value, for each column that is compared over seeds
    columns: dict[str, dict[str, dict[int, float]]] = {"hypervolume": {}}
    picked_macs: dict[str, dict[str, list[float]]] = {}
    ties: list[dict[str, Any]] = []
    picked_speedup: dict[str, dict[str, list[float]]] = {}
    for m in rows:
        mine = {s: by[(m, s)] for s in seeds if (m, s) in by}
        columns["hypervolume"][m] = {
            s: hypervolume_2d(sp.front(split), reference) for s, sp in mine.items()
        }
        source = parse_method_label(m).get("source") if m in controls else None
        for t in targets:
            col = f"q@{t:g}"
            got = {s: _pick(sp, by.get((source, s)), t, granularity) for s, sp in mine.items()}
            columns.setdefault(col, {})[m] = {
                s: (math.nan if p is None else p[pick]) for s, p in got.items()
            }
            picked_macs.setdefault(col, {})[m] = [
                _picked(mine[s], p, mine[s].macs) for s, p in got.items() if p is not None
            ]
            ties += [] if m in controls else _tie_rows(m, t, granularity, mine)
            picked_speedup.setdefault(col, {})[m] = [
                _speedup(mine[s], p) for s, p in got.items() if p is not None
            ]
    ranked = {col: {m: v for m, v in vals.items() if m in methods}
              for col, vals in columns.items()}  # fmt: skip
    vs_scratch = {(col, m): paired_t(vals[m], vals[f"scratch_b@{m}"])
                  for col, vals in columns.items() for m in methods
                  if f"scratch_b@{m}" in vals}  # fmt: skip
    marks, scratch = rank_family(ranked, seeds, alpha, correction, vs_scratch)
    for col in columns:
        marks[col].update({c: Mark("control", math.nan, 0) for c in rows if c in controls})
    summary = [_summary_row(m, studies, columns, marks, picked_macs, scratch) for m in rows]
    for row in summary:  # beside each target's MAC ratio: the picked trials' measured speed-up
        for col, by_method in picked_speedup.items():
            row[f"{col}_speedup"] = _mean([v for v in by_method[row["method"]]
                                           if not math.isnan(v)])  # fmt: skip
    pooled = {m: pareto_front(p for sp in studies if sp.method == m for p in sp.front(split))
              for m in rows}  # fmt: skip
    methods = rows
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
        "reference": pd.DataFrame([{"macs_ratio": reference[0], "quality": reference[1]}]),
        "noop": pd.DataFrame(
            [{"quality": _mean([sp.noop[split] for sp in studies if split in sp.noop])}]
        ),
        "tests": pd.DataFrame(_test_rows(marks, alpha, scratch), columns=TEST_COLUMNS),
        "ties": pd.DataFrame(ties, columns=TIE_COLUMNS),
    }


#: columns of the `tests` table: one paired test of a method against its column's best
TEST_COLUMNS = ["column", "method", "vs", "n", "diff", "ci_low", "ci_high", "dz", "p_raw", "p",
                "mark", "seeds_needed"]  # fmt: skip
#: columns of the `ties` table: a pick at a target that a tie on validation decided
TIE_COLUMNS = ["method", "seed", "target", "trial", "val_quality", "tied_trials", "decided_by"]


def _test_rows(marks: Mapping[str, Mapping[str, Mark]], alpha: float,
               scratch: Mapping[tuple[str, str], Mark]) -> list[dict[str, Any]]:  # fmt: skip
    """Each paired test of a table: best − method (or method − its Scratch-B control) with its
    95 % CI over seeds, d_z, p before and after the correction, and the seeds the observed
    spread would need (80 % power)."""
    from harness.report.significance import seeds_needed

    def row(col: str, m: str, vs: str | None, mk: Mark) -> dict[str, Any]:
        low, high = mk.test.ci()
        return {"column": col, "method": m, "vs": vs, "n": mk.n, "diff": mk.test.mean_diff,
                "ci_low": low, "ci_high": high, "dz": mk.test.dz, "p_raw": mk.p_raw, "p": mk.p,
                "mark": mk.kind, "seeds_needed": seeds_needed(mk.test.dz, alpha)}  # fmt: skip

    rows = []
    for col, col_marks in marks.items():
        best = next((m for m, mk in col_marks.items() if mk.kind == "best"), None)
        rows += [row(col, m, best, mk) for m, mk in col_marks.items() if mk.test is not None]
    rows += [row(col, m, f"scratch_b@{m}", mk) for (col, m), mk in scratch.items()]
    return rows


def _pick(sp: StudyPoints, source: StudyPoints | None, target: float,
          granularity: float) -> Trained | None:  # fmt: skip
    """The trial a study shows at `target`: its own pick, or, for a control whose source
    method's study is in the comparison, the control trial that mirrors the source's pick (the
    same architecture; None when the control has no such trial)."""
    if source is None:
        return at_target(sp.trained(), target, granularity)
    pick = at_target(source.trained(), target, granularity)
    if pick is None:
        return None
    number = source.trials[source.trained().index(pick)]
    mirror = [i for i, k in enumerate(sp.sources) if k == number]
    return sp.trained()[mirror[0]] if mirror else None


def _tie_rows(method: str, target: float, granularity: float,
              mine: Mapping[int, StudyPoints]) -> list[dict[str, Any]]:  # fmt: skip
    """The picks at `target` where another reached trial has the same validation score: the
    tie-break (fewer MACs, or lower latency, then the lower trial number) decided them (see
    `pareto.at_target`)."""
    rows = []
    for seed, sp in mine.items():
        pick = at_target(sp.trained(), target, granularity)
        if pick is None:
            continue
        reached = [i for i, (m, v, _) in enumerate(sp.trained())
                   if m <= target + granularity and v == pick[1]]  # fmt: skip
        if len(reached) < 2:
            continue
        chosen = next(i for i in reached if sp.trained()[i] == pick)
        fewer = min(sp.x[i] for i in reached) < max(sp.x[i] for i in reached)
        by = "fewer MACs" if sp.axis == "macs" else "lower latency"
        rows.append({"method": method, "seed": seed, "target": target,
                     "trial": sp.trials[chosen], "val_quality": pick[1],
                     "tied_trials": len(reached),
                     "decided_by": by if fewer else "lower trial number"})  # fmt: skip
    return rows


def _speedup(sp: StudyPoints, picked: Trained) -> float:
    """Unpruned / pruned latency of a picked trial; NaN when it was not measured."""
    i = sp.trained().index(picked)
    ratio = sp.costs[i].get(SPEED_KEY) if i < len(sp.costs) else None
    return 1.0 / ratio if ratio else math.nan


def _picked(sp: StudyPoints, picked: Trained, values: Sequence[float]) -> float:
    """`values` (one per trial, e.g. MAC ratios) at the picked trial."""
    return float(values[sp.trained().index(picked)])


def _point_rows(studies: Sequence[StudyPoints]) -> list[dict[str, Any]]:
    """One row per trial: where it landed, on both splits, whether it is on its study's front,
    and what it cost."""
    rows = []
    for sp in studies:
        on_front = set(sp.front_index())
        for i, trial in enumerate(sp.trials):
            rows.append({
                "method": sp.method, "seed": sp.seed, "trial": trial, "macs_ratio": sp.macs[i],
                "val_quality": sp.val[i], "test_quality": sp.test[i], "on_front": i in on_front,
                SPEED_KEY: (sp.costs[i] if i < len(sp.costs) else {}).get(SPEED_KEY, math.nan),
                "budget": sp.budgets[i] if i < len(sp.budgets) else "unrecorded",
                **{k: (sp.costs[i] if i < len(sp.costs) else {}).get(k, math.nan)
                   for k in COST_KEYS},
            })  # fmt: skip
    return rows


def _summary_row(
    method: str,
    studies: Sequence[StudyPoints],
    columns: Mapping[str, Mapping[str, Mapping[int, float]]],
    marks: Mapping[str, Mapping[str, Mark]],
    picked_macs: Mapping[str, Mapping[str, list[float]]],
    scratch: Mapping[tuple[str, str], Mark] | None = None,
) -> dict[str, Any]:
    """One method's summary row: per compared column its mean, std, seeds reached, mean MAC
    ratio of the picked trials, significance mark and p; then its mean cost per trial."""
    mine = [sp for sp in studies if sp.method == method]
    costs = [c for sp in mine for c in sp.costs]
    budgets = sorted({b for sp in mine for b in sp.budgets})
    row: dict[str, Any] = {
        "method": method,
        "control": marks and next(iter(marks.values()))[method].kind == "control",
        "budget": ", ".join(budgets) if budgets else "unrecorded",
        "seeds": len(mine),
        "trials": sum(len(sp.trials) for sp in mine),
        "front_mean": _mean([float(len(sp.front_index())) for sp in mine]),
    }
    for col, vals in columns.items():
        v = list(vals[method].values())
        mark: Mark = marks[col][method]
        row[f"{col}_mean"] = _mean(v)
        row[f"{col}_std"] = _std(v)
        row[f"{col}_reached"] = sum(not math.isnan(x) for x in v)
        if col in picked_macs:
            row[f"{col}_macs"] = (
                _mean(picked_macs[col][method]) if picked_macs[col][method] else math.nan
            )
        row[f"{col}_mark"] = mark.kind
        row[f"{col}_p"] = mark.p
        row[f"{col}_p_raw"] = mark.p_raw
        vs = (scratch or {}).get((col, method))
        row[f"{col}_scratch"] = vs.kind if vs else ""
        row[f"{col}_scratch_p"] = vs.p if vs else math.nan
    for key in COST_KEYS:  # per trial, mean over the method's trials
        row[key] = _mean([c[key] for c in costs if key in c]) if costs else math.nan
    for key in STUDY_COST_KEYS:  # per study, mean over the method's seeds
        row[key] = _mean([sp.spent[key] for sp in mine if key in sp.spent])
    return row


def format_cell(row: Mapping[str, Any], col: str, digits: int = 2) -> str:
    """`91.80 ± 0.60 (3/3) ★`: mean ± std, seeds that reached it, significance mark."""
    n, k = int(row["seeds"]), int(row[f"{col}_reached"])
    if k == 0:
        return f"not reached (0/{n})"
    mean, std = row[f"{col}_mean"], row[f"{col}_std"]
    text = f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")
    symbol = MARKS[row[f"{col}_mark"]]
    if row.get(f"{col}_scratch") == "not better":
        symbol = f"{symbol} {NOT_BETTER}".strip()
    return f"{text} ({k}/{n})" + (f" {symbol}" if symbol else "")


#: how each task metric reads on an axis
METRIC_LABELS = {"top1": "top-1 accuracy (%)", "psnr": "PSNR (dB)"}


def _plot(studies: Sequence[StudyPoints], split: str, targets: Sequence[float], title: str,
          metric: str, path: Path, target_kind: str = "macs") -> None:  # fmt: skip
    import matplotlib.pyplot as plt

    fig = pareto_figure(studies, split, targets, title, metric, target_kind)
    fig.savefig(path)
    plt.close(fig)


def pareto_figure(studies: Sequence[StudyPoints], split: str, targets: Sequence[float],
                  title: str, metric: str, target_kind: str = "macs") -> Any:  # fmt: skip
    """Every method's trials (faint) and validation-selected front, pooled over seeds, against
    the MAC ratio or (`target_kind=latency`) the measured latency ratio; the targets dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = [replace(sp, axis=target_kind) for sp in studies]
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    methods = list(dict.fromkeys(sp.method for sp in studies))
    for i, m in enumerate(methods):
        pts = [p for sp in studies if sp.method == m for p in sp.points(split)
               if not math.isnan(p[0])]  # fmt: skip
        front = pareto_front(p for sp in studies if sp.method == m for p in sp.front(split))
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=12, alpha=0.35, color=f"C{i}")
        if front:
            ax.plot(*zip(*front, strict=True), "o-", color=f"C{i}", drawstyle="steps-post",
                    label=m)  # fmt: skip
    for t in targets:
        ax.axvline(t, color="0.8", lw=0.8, ls=":")
    ax.set_xlabel(AXES[target_kind][1])
    ax.set_ylabel(f"{split} {METRIC_LABELS.get(metric, metric)}")
    ax.set_title(f"{title}\nfronts selected on val (pooled over seeds), shown on {split}; "
                 "faint: every trial", fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _markdown(tables: dict[str, pd.DataFrame], *, title: str, split: str,
              targets: Sequence[float], granularity: float, alpha: float,
              provenance: list[str], correction: str = "holm",
              target_kind: str = "macs") -> str:  # fmt: skip
    ref = tables["reference"].iloc[0]
    short = AXES[target_kind][0]
    ratio = "MAC ratio" if target_kind == "macs" else "measured latency ratio"
    summary = tables["summary"]
    seeds = int(summary["seeds"].max()) if len(summary) else 0
    cols = ["hypervolume", *(f"q@{t:g}" for t in targets)]
    header = ["method", "budget", "trials", "front", "hypervolume",
              *(f"q@{t:g} ({short} ≤ {t + granularity:g})" for t in targets),
              *COST_KEYS.values()]  # fmt: skip
    tables_md: dict[bool, list[str]] = {}
    for _, row in summary.iterrows():
        cells = [str(row.method), str(row.budget), str(int(row.trials)), f"{row.front_mean:.1f}",
                 format_cell(row, cols[0], 3), *(format_cell(row, c) for c in cols[1:]),
                 *("—" if math.isnan(row[k]) else f"{row[k]:,.0f}" if row[k] >= 100
                   else f"{row[k]:.1f}" for k in COST_KEYS)]  # fmt: skip
        tables_md.setdefault(bool(row.get("control", False)), [
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header)
        ]).append("| " + " | ".join(cells) + " |")  # fmt: skip
    noop = float(tables["noop"].iloc[0].quality) if "noop" in tables else math.nan
    if not math.isnan(noop):  # the restoration floor as a control row: gain = row − control
        tables_md.setdefault(True, ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
        cells = ["no-op", *["—"] * 4, *[f"{noop:.2f}"] * len(targets), *["—"] * len(COST_KEYS)]
        tables_md[True].append("| " + " | ".join(cells) + " |")
    lines = tables_md.get(False, [])
    if tables_md.get(True):
        lines += ["", "### Controls", "",
                  "Not pruning methods, never ranked: `scratch_e@m` / `scratch_b@m`: method m's "
                  "architecture re-initialised and trained from scratch for the baseline's epochs "
                  "/ its compute (Liu et al., ICLR 2019), shown at each target for the trial that "
                  "mirrors m's pick; `uniform`: the network width-scaled uniformly to the target, "
                  "trained from scratch; `random_widths@m`: m's per-group widths with random "
                  "channels, fine-tuned as a one-shot method (under equal budgets that includes "
                  "the epochs m spent in its own phase, so at a small budget its lead over m can "
                  f"be extra fine-tuning rather than better channels). {NOT_BETTER} on a "
                  "method's cell: its advantage over its "
                  "own Scratch-B control there is not significant (same test and correction)."
                  + (" `no-op`: the task's do-nothing output (noisy input; MATLAB-bicubic "
                     "upsampling) on the same images, the floor every method's gain is read "
                     "against." if not math.isnan(noop) else ""),
                  "", *tables_md[True]]  # fmt: skip
    speed = _speed_lines(summary, targets, granularity, target_kind)
    dom = tables["dominance"].map(lambda v: "—" if math.isnan(v) else f"{v:.2f}")
    return "\n".join([
        f"# {title}", "",
        f"Each cell: mean ± std over the seeds that reached the column, then (seeds reached / "
        f"seeds run). `q@t`: {split} quality of the trial each study picks at "
        f"{'MAC' if target_kind == 'macs' else short} target t: "
        f"the best on validation among its trials whose {ratio} is ≤ t"
        + (f" + {granularity:g} (channel granularity)" if granularity else " (no tolerance)")
        + "; never interpolated, a trial above the target never counts. "
        f"Hypervolume: area of each study's validation-selected front ({split} quality) against "
        f"the fixed reference ({ratio} {ref.macs_ratio:g}, quality {ref.quality:.4g}), set by "
        "the task and data alone."
        + ("" if target_kind == "macs" else f" {ratio.capitalize()}: `{SPEED_KEY}` of each "
           "trial (unpruned / pruned, timed interleaved in its process); trials that measured "
           "none are left out."), "",
        "Selection rule: at each target a study's pick is its best trial on validation among "
        "those that reach the target; a tie on validation goes to the trial with "
        + ("fewer MACs" if target_kind == "macs" else "lower latency")
        + ", then to the lower trial number. " + _tie_line(tables["ties"]), "",
        f"Significance: {TEST_NAME} (n = {seeds} seeds; pairs share baseline, splits and batch "
        f"order), α = {alpha:g}, "
        + (f"Holm-corrected over this table's {len(tables['tests'])} paired tests "
           "(the uncorrected p is listed beside it below)" if correction == "holm"
           else "uncorrected (compare.correction=none)")
        + ". ★ best mean among methods that reached the target in every "
        "seed; ≈ not significantly different from ★ (or fewer than 2 pairs); no mark: "
        "significantly worse; † reached in fewer seeds than were run: not ranked. Cost columns: "
        "mean per trial; the baseline is trained once per seed and shared by every method.", "",
        _budget_line(summary), "",
        *lines, "",
        *_tests_markdown(tables["tests"], alpha, correction),
        *_spent_lines(summary),
        "Coverage C(row, column): fraction of the column method's front (pooled over seeds) "
        "that the row method's front weakly dominates.", "",
        dom.to_markdown(), "",
        *speed,
        "## Provenance", "",
        *provenance, "",
    ])  # fmt: skip


def _budget_line(summary: pd.DataFrame) -> str:
    """Which budget mode produced the trials (run/budget.py), and a warning when they mix."""
    if "control" in summary:
        summary = summary[~summary["control"].astype(bool)]  # controls keep their own budget
    labels = sorted({b.strip() for v in summary.get("budget", []) for b in str(v).split(",")})
    text = ("Budget (`budget.mode`): equal: every trial of a method that starts from the baseline "
            "trained the same epochs (its own phase + fine-tuning; a from-scratch search counts "
            "against the baseline's epochs); paper: each method's own schedule plus the same "
            "fine-tuning. This table: " + (", ".join(labels) or "none") + ".")  # fmt: skip
    modes = {label.split()[0] for label in labels}
    if len(labels) > 1 and modes - {"unrecorded"}:
        text += " **The trials mix budgets: differences may come from training, not pruning.**"
    return text


def _tie_line(ties: pd.DataFrame) -> str:
    """How many picks the tie-break decided (they would change under another tie-break)."""
    if ties.empty:
        return "No pick in this table was decided by a tie."
    by = ", ".join(f"{m} {n}" for m, n in ties.groupby("method").size().items())
    return (f"{len(ties)} picks were decided by such a tie ({by}); another tie-break could "
            "change them (`ties.csv` lists each).")  # fmt: skip


def _tests_markdown(tests: pd.DataFrame, alpha: float, correction: str) -> list[str]:
    """The paired tests: effect with its CI over seeds, p before and after the correction, and
    the seeds the observed spread would need; then the one-line power summary."""
    if tests.empty:
        return []

    def num(v: float, fmt: str = ".2f") -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:{fmt}}"

    def need(v: Any) -> str:
        from harness.report.significance import MAX_SEEDS

        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        return f"> {MAX_SEEDS}" if int(v) > MAX_SEEDS else str(int(v))

    p_label = "p (Holm)" if correction == "holm" else "p"
    lines = ["| column | method | vs | n | difference [95 % CI] | d_z | p uncorrected | "
             f"{p_label} | seeds for {POWER:.0%} power |", "|" + "---|" * 9]  # fmt: skip
    for _, r in tests.iterrows():
        effect = f"{num(r['diff'], '.3f')} [{num(r.ci_low, '.3f')}, {num(r.ci_high, '.3f')}]"
        lines.append(f"| {r.column} | {r.method} | {r.vs} | {int(r.n)} | {effect} | "
                     f"{num(r.dz)} | {num(r.p_raw, '.3g')} | {num(r.p, '.3g')} | "
                     f"{need(r.seeds_needed)} |")  # fmt: skip
    undecided = tests[tests["mark"].isin(["tied", "not better"])]
    needs = sorted(int(v) for v in undecided["seeds_needed"] if v is not None and not math.isnan(v))
    if needs:
        n = int(tests["n"].max())
        spread = need(float(needs[0])) if needs[0] == needs[-1] else (
            f"{need(float(needs[0]))}–{need(float(needs[-1]))} (median "
            f"{need(float(statistics.median_low(needs)))})")  # fmt: skip
        summary = (f"Power: for the {len(needs)} differences not significant here, detecting "
                   f"the observed difference with the observed spread (two-sided, α = {alpha:g} "
                   f"uncorrected, {POWER:.0%} power) would need {spread} seeds; this table "
                   f"has {n}.")  # fmt: skip
    else:
        summary = "Power: every tested difference is significant, or there is none to detect."
    return ["## Paired tests against each column's best", "",
            "Effect: the mean paired difference over seeds with its t 95 % confidence interval, "
            "and Cohen's d_z (that mean over the differences' standard deviation). Against a "
            "column's best the difference is best − method; against a method's own Scratch-B "
            "control (vs `scratch_b@…`) it is method − control: ‡ unless it is significantly "
            "positive.", "", *lines, "", summary, ""]  # fmt: skip


def _speed_lines(summary: pd.DataFrame, targets: Sequence[float], granularity: float,
                 target_kind: str = "macs") -> list[str]:  # fmt: skip
    """Speed-up beside MAC ratio of the trials picked at each target (absent when no trial
    measured latency)."""
    cols = [f"q@{t:g}" for t in targets]
    if not any(f"{c}_speedup" in summary and summary[f"{c}_speedup"].notna().any() for c in cols):
        return []
    short = AXES[target_kind][0]
    lines = ["| method | " + " | ".join(f"{short} ≤ {t + granularity:g}" for t in targets) + " |",
             "|" + "---|" * (len(targets) + 1)]  # fmt: skip
    for _, row in summary.iterrows():
        cells = [
            "—" if math.isnan(row.get(f"{c}_speedup", math.nan))
            else f"×{row[f'{c}_speedup']:.2f} (MACs {row[f'{c}_macs']:.3f})"
            for c in cols
        ]  # fmt: skip
        lines.append(f"| {row.method} | " + " | ".join(cells) + " |")
    return [
        "Measured speed-up of the picked trials: unpruned latency / pruned latency at "
        "`measure.latency_batch`, both timed in the trial's process (mean over seeds), beside "
        "their mean MAC ratio.", "", *lines, "",
    ]  # fmt: skip


def _spent_lines(summary: pd.DataFrame) -> list[str]:
    """The compute each method's studies spent in all (a successive-halving study stops most
    trials early; compare at equal spent compute, not at equal trial counts)."""
    if not len(summary) or summary.reindex(columns=list(STUDY_COST_KEYS)).isna().all().all():
        return []  # hand-made points, or studies of a harness that did not count
    header = ["method", *STUDY_COST_KEYS.values()]
    lines = ["Spent per study (mean over seeds):", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]  # fmt: skip
    for _, row in summary.iterrows():
        cells = ["—" if math.isnan(row[k]) else f"{row[k]:,.0f}" for k in STUDY_COST_KEYS]
        lines.append("| " + " | ".join([str(row.method), *cells]) + " |")
    return [*lines, ""]


def run_compare(cfg: DictConfig) -> dict[str, Any]:
    """Collect, tabulate, plot, write and log the comparison; returns where everything went."""
    from harness.runtime.provenance import provenance

    c = cfg.compare
    split = str(c.get("quality", "test"))
    targets = _check_compare(c)
    kind = compare_target_kind(c)
    granularity = float(c.get("granularity") or 0.0)
    alpha = float(c.get("alpha", 0.05))
    if not 0 < alpha < 1:
        raise ConfigError(f"compare.alpha={alpha}; use a significance level in (0, 1), e.g. 0.05")
    correction = str(c.get("correction") or "holm")
    reference = reference_point(cfg)
    studies = collect(cfg)
    controls = [str(label) for label in (c.get("controls") or [])]
    tables = compare_tables(studies, split=split, targets=targets, reference=reference,
                            granularity=granularity, alpha=alpha, correction=correction,
                            controls=controls, target_kind=kind)  # fmt: skip
    seeds = sorted({sp.seed for sp in studies})
    prov = provenance(seeds)
    stem = f"{cfg.task.name}-{cfg.data.name}-{model_label(cfg.model)}"
    title = f"{stem}: {', '.join([*c.methods, *controls])} (seeds {seeds})"
    out = Path(cfg.outputs) / "compare" / stem
    result, md = _write_report(cfg, tables, studies, out=out, title=title, split=split,
                               targets=targets, granularity=granularity, alpha=alpha,
                               prov=prov, correction=correction, target_kind=kind)  # fmt: skip
    tracker, hv = _log_compare(cfg, studies, out, stem=stem, split=split, reference=reference,
                               prov=prov)  # fmt: skip
    log.info("comparison written to %s (Pareto plot %s)\n%s", out, result["plot"], md)
    result.update(
        hypervolume=hv,
        run_id=tracker.run_id,
        tracking_uri=tracker.uri if tracker.enabled else None,
        studies=[sp.study for sp in studies],
    )
    return result


def compare_target_kind(c: DictConfig) -> str:
    """`compare.target_kind` (AXES): what the targets and the front's x-axis are."""
    kind = str(c.get("target_kind") or "macs")
    if kind not in AXES:
        raise ConfigError(f"compare.target_kind={kind}; known: {', '.join(AXES)}")
    return kind


def _check_compare(c: DictConfig) -> list[float]:
    """`compare.methods` names at least one method, `compare.target_kind` is known and
    `compare.targets` are ratios in (0, 1]; returns the targets. Checked before any study is
    read or any file written."""
    methods = c.get("methods")
    if not methods or isinstance(methods, str):
        raise ConfigError(
            f"compare.methods={methods!r} names no methods; give a list such as "
            "compare.methods=[dhp,l1,random]"
        )
    kind = compare_target_kind(c)
    targets = []
    for t in c.get("targets") or []:
        try:
            value = float(t)
        except (TypeError, ValueError):
            value = math.nan
        if not 0 < value <= 1:
            raise ConfigError(
                f"compare.targets holds {t!r}; give {'MAC' if kind == 'macs' else 'latency'} "
                "ratios in (0, 1], e.g. [0.7,0.5,0.3]"
            )
        targets.append(value)
    return targets


def _keep_fuller_report(out: Path, studies: Sequence[StudyPoints]) -> None:
    """A report about to be replaced by one covering fewer (method, seed) studies is moved to
    `<out>/previous-<time>/` first, and the move is logged: nothing is silently lost."""
    import pandas as pd

    summary = out / "summary.csv"
    if not summary.exists():
        return
    try:
        old_methods = set(pd.read_csv(summary)["method"].astype(str))
    except Exception:  # noqa: BLE001 - an unreadable old summary: keep it, to be safe
        old_methods = {"?"}
    missing = old_methods - {sp.method for sp in studies}
    if not missing:
        return
    keep = out / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("pareto_points.csv", "summary.csv", "compare.md", "pareto.png"):
        if (out / name).exists():
            shutil.copy2(out / name, keep / name)
    log.warning(
        "the report in %s covered %s, which this comparison does not; the previous report is "
        "kept in %s", out, ", ".join(sorted(missing)), keep,
    )  # fmt: skip


def _write_report(
    cfg: DictConfig,
    tables: dict[str, pd.DataFrame],
    studies: Sequence[StudyPoints],
    *,
    out: Path,
    title: str,
    split: str,
    targets: Sequence[float],
    granularity: float,
    alpha: float,
    prov: dict[str, Any],
    correction: str = "holm",
    target_kind: str = "macs",
) -> tuple[dict[str, Any], str]:
    """The CSVs (each stamped with its provenance), the Markdown and the Pareto plot under
    `out`, copied to `compare.results_dir` when set; returns where each went, and the
    Markdown."""
    from harness.registry import TASKS
    from harness.runtime.provenance import provenance_lines

    out.mkdir(parents=True, exist_ok=True)
    _keep_fuller_report(out, studies)
    files = {
        "points_csv": out / "pareto_points.csv",
        "summary_csv": out / "summary.csv",
        "tests_csv": out / "tests.csv",
        "ties_csv": out / "ties.csv",
        "table_md": out / "compare.md",
        "plot": out / "pareto.png",
    }
    stamp = {f"prov_{k}": v for k, v in prov.items()}  # each CSV names where it came from
    summary_csv = tables["summary"].assign(**stamp)
    atomic_write_text(files["points_csv"], tables["points"].assign(**stamp).to_csv(index=False))
    atomic_write_text(files["summary_csv"], summary_csv.to_csv(index=False))
    for key in ("tests", "ties"):
        atomic_write_text(files[f"{key}_csv"], tables[key].assign(**stamp).to_csv(index=False))
    md = _markdown(tables, title=title, split=split, targets=targets, granularity=granularity,
                   alpha=alpha, provenance=provenance_lines(prov),
                   correction=correction, target_kind=target_kind)  # fmt: skip
    atomic_write_text(files["table_md"], md)
    metric = TASKS.get(cfg.task.name).metric
    _plot(studies, split, targets, title, metric, files["plot"], target_kind)
    result: dict[str, Any] = {k: str(v) for k, v in files.items()}
    if cfg.compare.get("results_dir"):
        dest = Path(cfg.compare.results_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for path in files.values():
            shutil.copyfile(path, dest / path.name)
        result["results_dir"] = str(dest)
    return result, md


def _log_compare(
    cfg: DictConfig,
    studies: Sequence[StudyPoints],
    out: Path,
    *,
    stem: str,
    split: str,
    reference: tuple[float, float],
    prov: dict[str, Any],
) -> tuple[Tracker, dict[str, float]]:
    """One MLflow run per comparison (a rerun replaces it): the settings, the report files and
    each study's hypervolume; returns the tracker and the mean hypervolume per method."""
    from harness.tracking import Tracker

    c = cfg.compare
    run_name = f"compare-{stem}"
    tracker = Tracker(
        cfg.tracking.uri, cfg.tracking.experiment, outputs=cfg.outputs, run_name=run_name,
        enabled=cfg.tracking.enabled,
        tags={"kind": "compare", "task": str(cfg.task.name), "model": model_label(cfg.model),
              "data": str(cfg.data.name), "methods": ",".join(c.methods),
              "seeds": prov["seeds"], "git_sha": prov["git_sha"],
              "git_dirty": str(prov["git_dirty"])},
    )  # fmt: skip
    hv_by_study = {
        (sp.method, sp.seed): hypervolume_2d(sp.front(split), reference) for sp in studies
    }
    hv = {
        m: statistics.mean(v for (m2, _), v in hv_by_study.items() if m2 == m)
        for m in dict.fromkeys(sp.method for sp in studies)
    }
    if tracker.enabled:
        _drop_previous_runs(tracker, run_name, tracker.tags)
    with tracker:
        tracker.log_params({"compare": OmegaConf.to_container(c, resolve=True)})
        tracker.log_artifacts(out, "compare")
        # MLflow refuses '@' in a metric name: a control's label `scratch_b@l1` → `scratch_b:l1`
        tracker.log_metrics(
            {f"hypervolume.{m.replace('@', ':')}.s{s}": v for (m, s), v in hv_by_study.items()}
        )
    return tracker, hv


def _drop_previous_runs(tracker: Any, run_name: str, tags: Mapping[str, str]) -> None:
    """A rerun replaces the comparison run of the same methods on the same task/data/model
    (the report is regenerated from the studies, so the old run holds nothing else)."""
    from harness.tracking import mlflow_client

    client = mlflow_client(tracker.uri)
    exp = client.get_experiment_by_name(tracker.experiment)
    if exp is None:
        return
    quoted = run_name.replace("'", "")
    for run in client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.runName` = '{quoted}'"
    ):
        if all(run.data.tags.get(k) == tags[k] for k in ("kind", "methods", "seeds")):
            client.delete_run(run.info.run_id)
            log.info("replaced the previous comparison run %s", run.info.run_id)
