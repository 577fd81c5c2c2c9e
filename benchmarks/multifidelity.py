"""Full-budget TPE / NSGA-II studies against successive-halving studies, by hypervolume against
the training images each study spent.

    PYTHONPATH=. python benchmarks/multifidelity.py [--methods l1 taylor] [--seeds 0 1 2]
        [--full-trials 9] [--halving-trials 3] [--out results/multifidelity.md]
        [--outputs DIR] [--kinds full-tpe full-nsga2 halving-tpe] [overrides ...]

For every method and seed it runs three fresh studies in `--outputs` (one shared baseline per
seed, from the cache; not counted as spent): `full-tpe` and `full-nsga2` with `--full-trials`
full-budget trials, and `halving-tpe` (`study.fidelity.mode=halving`) run until
`--halving-trials` of its trials reached the full budget (its study.n_trials). The studies keep
their names in `--outputs`, so a rerun resumes them (finished ones are only read), and
`--kinds` runs some kinds first (no report until all three are asked for). Spent compute = the
`cost_train_images` of every trial (pruning/search and the fine-tuning epochs each trial
actually ran; stopped trials included). After each finished trial (by finish time) the
hypervolume of the study's full-budget validation front is recomputed against the fixed
reference of the task and data (`compare`'s), giving a curve per study.
The report: per kind and method, mean ± std over seeds of the spent images, the final
hypervolume (validation front; its test quality), and the full-budget kinds' hypervolume at the
compute the halving study spent (equal spent compute), the halving study's hypervolume at a
third of what each full-budget study spent, and whether the goal is met (below); and a PNG
of the curves.

The goal (issue 25): the same hypervolume within the seeds' spread at ≤ 1/3 of the compute,
read here as: per method and full-budget kind, the halving study's mean validation
hypervolume at one third of that kind's spent images (per seed) is at least the full-budget
kind's final mean minus its standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from harness.cli.main import compose
from harness.report.compare import reference_point
from harness.report.pareto import hypervolume_2d
from harness.run.pipeline import ensure_baseline
from harness.runtime.atomic import atomic_write_text
from harness.runtime.provenance import provenance, provenance_lines
from harness.study import run_study
from harness.study.halving import study_cost

KINDS = {
    "full-tpe": ["study.sampler=tpe"],
    "full-nsga2": ["study.sampler=nsga2", "study.population_size=4"],
    "halving-tpe": ["study.sampler=tpe", "study.fidelity.mode=halving"],
}


def curve(study: Any, reference: tuple[float, float]) -> list[tuple[float, float, float]]:
    """(images spent so far, validation HV, test HV of the validation front) after each finished
    trial, in finish order; only full-budget (COMPLETE) trials make the front."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    done.sort(key=lambda t: t.datetime_complete)
    spent, val, test, out = 0.0, [], [], []
    for t in done:
        spent += float(t.user_attrs.get("cost_train_images") or 0.0)
        if t.state == TrialState.COMPLETE:
            val.append((float(t.user_attrs["macs_ratio"]), float(t.user_attrs["val_metric"])))
            test.append((val[-1][0], float(t.user_attrs["test_metric"])))
        out.append((spent, hypervolume_2d(val, reference), _test_hv(val, test, reference)))
    return out


def _test_hv(val: list, test: list, reference: tuple[float, float]) -> float:
    """Test-quality HV of the trials on the validation front (the study's own selection)."""
    from harness.report.pareto import pareto_front

    front = set(pareto_front(val))
    return hypervolume_2d([test[i] for i, p in enumerate(val) if p in front], reference)


def at_spent(points: list[tuple[float, float, float]], budget: float) -> float:
    """The validation HV a study had reached when it had spent at most `budget` images."""
    reached = [hv for spent, hv, _ in points if spent <= budget]
    return reached[-1] if reached else 0.0


def _ms(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    big = max(abs(v) for v in values) >= 1000
    return (
        f"{statistics.mean(values):,.0f} ± {sd:,.0f}"
        if big
        else (f"{statistics.mean(values):.2f} ± {sd:.2f}")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["l1"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--full-trials", type=int, default=9)
    parser.add_argument(
        "--halving-trials", type=int, default=3, help="full-budget trials of the halving study"
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=list(KINDS),
        choices=list(KINDS),
        help="run only these kinds of study (the report needs all of them)",
    )
    parser.add_argument("--outputs", default=None, help="default: a temporary folder")
    parser.add_argument("--out", default=None, help="write the Markdown report (+ .png) here")
    parser.add_argument("overrides", nargs="*", help="config overrides (model=…, data=…)")
    args = parser.parse_args()
    outputs = args.outputs or tempfile.mkdtemp(prefix="prunebench-mf-")
    base = [*args.overrides, f"outputs={outputs}", "tracking.enabled=false"]
    curves: dict[tuple[str, str, int], list] = {}
    spent: dict[tuple[str, str, int], float] = {}
    full: dict[tuple[str, str, int], float] = {}
    took: dict[tuple[str, str, int], float] = {}
    reference = reference_point(compose(base))
    t0 = time.perf_counter()
    for seed in args.seeds:
        ensure_baseline(compose([*base, f"seed={seed}"]))
        for method in args.methods:
            for kind, extra in KINDS.items():
                if kind not in args.kinds:
                    continue
                n = args.halving_trials if kind.startswith("halving") else args.full_trials
                name = f"study.name=mf-{kind}-{method}-s{seed}"
                cfg = compose([*base, f"seed={seed}", f"method={method}", *extra,
                               f"study.n_trials={n}", name])  # fmt: skip
                summary = run_study(cfg)
                study = optuna.load_study(
                    study_name=summary["study_name"], storage=_storage(summary)
                )
                curves[(kind, method, seed)] = curve(study, reference)
                took[(kind, method, seed)] = trials_wall_s(study)
                cost = study_cost(study)
                spent[(kind, method, seed)] = cost["study_train_images"]
                full[(kind, method, seed)] = cost["study_full_trials"]
                print(f"{kind} {method} s{seed}: spent {spent[(kind, method, seed)]:,.0f} images, "
                      f"HV {curves[(kind, method, seed)][-1][1]:.2f}", flush=True)  # fmt: skip
    wall = time.perf_counter() - t0
    if set(args.kinds) != set(KINDS):
        return  # a partial invocation (e.g. the full-budget studies first): no report
    report = _report(args, curves, spent, full, took, reference, wall)
    print(report)
    if args.out:
        out = Path(args.out)
        _plot(curves, out.with_suffix(".png"))
        atomic_write_text(out, report)


def _storage(summary: dict[str, Any]) -> Any:
    from harness.study import resolve_storage

    return resolve_storage(summary["storage"], outputs=".", workers=1).open()


def trials_wall_s(study: Any) -> float:
    """Seconds the study's trials ran, summed (start to finish of each; not the baseline)."""
    return sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.get_trials(deepcopy=False)
        if t.datetime_start is not None and t.datetime_complete is not None
    )


def _report(args, curves, spent, full, took, reference, wall) -> str:
    rows = ["| method | study | trials | full-budget trials | train images spent | HV (val front) "
            "| HV (its test quality) | HV at equal spend | trials' wall min |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for method in args.methods:
        for kind in KINDS:
            keys = [(kind, method, s) for s in args.seeds]
            n = args.halving_trials if kind.startswith("halving") else args.full_trials
            other = "full-tpe" if kind.startswith("halving") else "halving-tpe"
            equal = [at_spent(curves[k], min(spent[k], spent[(other, method, k[2])]))
                     for k in keys]  # fmt: skip
            rows.append(
                f"| {method} | {kind} | {n} | {_ms([full[k] for k in keys])} | "
                f"{_ms([spent[k] for k in keys])} | "
                f"{_ms([curves[k][-1][1] for k in keys])} | "
                f"{_ms([curves[k][-1][2] for k in keys])} | {_ms(equal)} | "
                f"{_ms([took[k] / 60 for k in keys])} |"
            )
    verdict = _verdict(args, curves, spent)
    prov = provenance(seeds=args.seeds)
    png = Path(args.out or "multifidelity.md").with_suffix(".png").name
    return "\n".join([
        "# Multi-fidelity search: successive halving vs full-budget studies", "",
        "Hypervolume of each study's full-budget validation front (MAC ratio vs validation "
        f"quality; reference MAC ratio {reference[0]:g}, quality {reference[1]:.4g}, fixed by "
        "the task and data), and the test quality of that same front, against the training "
        "images the study spent (pruning/search and fine-tuning of every trial, stopped ones "
        "included; the shared baseline is not counted). Mean ± std over the seeds. `trials`: "
        "study.n_trials (for halving: full-budget trials; its stopped trials come on top). "
        "HV at equal spend: each study's hypervolume when it had spent the smaller of its own "
        "total and the other kind's (full-budget rows against the halving study of the same "
        "seed, the halving row against full-tpe). TPE draws its first study.n_startup_trials "
        "(5) trials at random and NSGA-II its first generation (study.population_size=4). "
        "Trials' wall min: the study's trials' run times summed (not the baseline), on a "
        "shared, loaded machine: a rough guide only.",
        "",
        *rows, "",
        "## The goal: the same hypervolume at ≤ 1/3 of the compute", "",
        *verdict, "",
        f"![hypervolume vs spent training images]({png})",
        "",
        f"Wall time of this invocation: {wall / 60:.1f} min (studies that had already met their "
        "budget in `--outputs` are only read; a shared, loaded machine: wall times are not "
        "comparable between runs).", "",
        "## Provenance", "",
        *provenance_lines(prov), "",
    ])  # fmt: skip


def _verdict(args, curves, spent) -> list[str]:
    """Per method and full-budget kind: the halving study's HV at a third of that kind's spend
    against the kind's final HV (mean ± std over seeds), and whether the goal is met."""
    rows = ["| method | against | its final HV | its spent images | halving HV at 1/3 of that "
            "| halving's own total spend (share) | goal met |",
            "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for method in args.methods:
        for kind in ("full-tpe", "full-nsga2"):
            seeds = args.seeds
            final = [curves[(kind, method, s)][-1][1] for s in seeds]
            third = [at_spent(curves[("halving-tpe", method, s)], spent[(kind, method, s)] / 3)
                     for s in seeds]  # fmt: skip
            share = [spent[("halving-tpe", method, s)] / spent[(kind, method, s)] for s in seeds]
            sd = statistics.stdev(final) if len(final) > 1 else 0.0
            met = statistics.mean(third) >= statistics.mean(final) - sd
            theirs = _ms([spent[(kind, method, s)] for s in seeds])
            own = _ms([spent[("halving-tpe", method, s)] for s in seeds])
            rows.append(
                f"| {method} | {kind} | {_ms(final)} | {theirs} | {_ms(third)} | {own} "
                f"({statistics.mean(share):.2f}) | {'yes' if met else 'no'} |"
            )
    return [
        "Met when the halving study's mean hypervolume at one third of the full-budget study's "
        "spent images (per seed, read off its curve) is at least the full-budget study's final "
        "mean minus its standard deviation over the seeds.", "",
        *rows,
    ]  # fmt: skip


def _plot(curves, path: Path) -> None:
    """One panel per method: each study's hypervolume curve, coloured by kind of study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({method for _, method, _ in curves})
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 4.5), squeeze=False)
    colors = {kind: f"C{i}" for i, kind in enumerate(KINDS)}
    styles = {"full-tpe": "-", "full-nsga2": "--", "halving-tpe": "-"}
    for ax, method in zip(axes[0], methods, strict=True):
        labelled = set()
        for (kind, m, _seed), pts in sorted(curves.items()):
            if m != method:
                continue
            label = kind if kind not in labelled else None
            labelled.add(kind)
            ax.step([0.0, *(p[0] for p in pts)], [0.0, *(p[1] for p in pts)], where="post",
                    color=colors[kind], linestyle=styles[kind], alpha=0.8, label=label)  # fmt: skip
        ax.set_title(f"{method} (one line per seed)")
        ax.set_xlabel("training images spent")
        ax.set_ylabel("hypervolume (validation front)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
