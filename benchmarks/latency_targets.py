"""MAC target vs latency target: what each measures on this machine's device.

    PYTHONPATH=. .venv/bin/python benchmarks/latency_targets.py [--models resnet20 resnet56
        torchvision:resnet18]
        [--target 0.5] [--allocations uniform] [--batch 64] [--repeats 10] [--threads 1]
        [--onnx] [--set 'data.shape=[3,224,224]'] [--out results/latency_targets.md]

For each model (built with the conf's settings for `--data`, untrained weights: dense latency
does not depend on their values, and l1 ranks them as it would trained ones) and each allocation:
the run's own path for `target_kind=latency` (`run.speed.plan_latency_target`: the per-device
latency table, the unpruned model and two pruned probes measured, the residual calibrated, the
table checked, floors checked), then l1 scores → `allocate` to the MAC target and to the latency
target (`LatencyTarget.land`: measured and corrected, as in a run), with `prune.round_to`
1 and 8 → `apply_plan`. Every compact model and the unpruned one
are timed interleaved in one `measure_speed` call (median of `--repeats`, IQR kept) at batch 1
and `--batch`; the latency target is set at `--batch`. MACs are fvcore conv+linear. `--onnx`:
each compact model exported (`run/export.py`), checked against PyTorch, and timed in onnxruntime
(CPU) interleaved with the unpruned model's export: the ratio at `--batch`.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch

from harness.config import compose
from harness.errors import ImpossibleTargetError
from harness.registry import TASKS
from harness.run.measure import count_macs, measure_speed
from harness.run.pipeline import build_method
from harness.run.speed import plan_latency_target
from harness.runtime.device import pick_runtime
from harness.runtime.plugins import load_configured
from harness.runtime.provenance import provenance, provenance_lines
from harness.structure import CostModel, allocate, apply_plan, check_prunable, score_groups


def model_overrides(spec: str) -> list[str]:
    """`--models` entry → overrides: a conf model (`resnet56`) or `torchvision:<arch>`."""
    if spec.startswith("torchvision:"):
        return ["model=torchvision", f"model.arch={spec.split(':', 1)[1]}"]
    return [f"model={spec}"]


def load_line(start: tuple[float, ...], end: tuple[float, ...]) -> str:
    """What the machine did beside this run, from the 1-minute load average at start and end."""
    cores = os.cpu_count() or 1
    loads = f"load average {start[0]:.1f} at the start, {end[0]:.1f} at the end, on {cores} cores"
    if max(start[0], end[0]) >= 0.75 * cores:
        return (f"**The machine was shared with other jobs while this ran ({loads}): the timings "
                "are noisy.** Rerun on a quiet machine for numbers to quote.")  # fmt: skip
    return f"The machine was otherwise quiet ({loads}, this run's one thread included)."


def rows_for(model_name: str, args: argparse.Namespace, refused: list[str]) -> list[dict]:
    cfg = compose(
        [
            *model_overrides(model_name),
            f"data={args.data}",
            "method=l1",
            f"target={args.target}",
            "target_kind=latency",
            f"measure.latency_batch={args.batch}",
            f"latency.repeats={args.repeats}",
            f"outputs={args.outputs}",
            *args.overrides,
        ]
    )
    load_configured(cfg)
    task = TASKS.get(cfg.task.name)(cfg.task)
    runtime = pick_runtime(args.device)
    torch.manual_seed(0)
    model = task.build_model(cfg.model, cfg.data).eval()
    example = task.example_input(cfg.data)
    shape = task.input_shape(cfg.data)
    structure = check_prunable(model, example)
    method = build_method(cfg.method, model=cfg.model.name, task=cfg.task.name)
    t0 = time.perf_counter()
    lat = plan_latency_target(cfg, model, structure, runtime, example, shape, method)
    setup_s = time.perf_counter() - t0
    scores = score_groups(model, structure, method.score)
    macs_cost = CostModel(structure)
    base_macs = count_macs(model, shape).macs
    plans, models, tries = {}, {"base": lat.base_model}, {}
    for allocation in args.allocations:
        for rounding in (1, 8):
            for kind in ("MACs", "latency"):
                key = (allocation, rounding, kind)

                def allocate_to(t, kind=kind, allocation=allocation, rounding=rounding):
                    cost = macs_cost if kind == "MACs" else lat.cost
                    return allocate(
                        cost, scores, t, allocation=allocation, floor=cfg.prune.floor,
                        round_to=rounding,
                    )  # fmt: skip

                before = len(lat.landing)
                try:
                    if kind == "MACs":
                        plans[key] = allocate_to(args.target)
                    else:  # the run's path: allocate to the prediction, measure, correct
                        plans[key] = lat.land(
                            allocate_to, lat.allocation_target, lat.base_model, structure, cfg
                        )
                except ImpossibleTargetError as e:  # a run would refuse it before training
                    refused.append(f"- {model_name} {allocation} {kind} round_to={rounding}: {e}")
                    continue
                tries[key] = len(lat.landing) - before
                models[key] = apply_plan(copy.deepcopy(lat.base_model), structure, plans[key])
    times = measure_speed(models, shape, runtime, batch_sizes=(1, args.batch), repeats=args.repeats)
    onnx = {}
    if args.onnx:  # the second runtime: every compact model against the unpruned one
        from harness.run.export import onnx_record

        for key in plans:
            onnx[key] = onnx_record(
                models[key], lat.base_model, shape, batch_sizes=(args.batch,), repeats=args.repeats
            )
    rows = []
    for key, plan in plans.items():
        allocation, rounding, kind = key
        removed = plan.removed(structure)
        pb, bb = times[key][args.batch], times["base"][args.batch]
        ratio = pb.median_ms / bb.median_ms
        predicted = lat.predicted_ratio(removed)
        rows.append(
            {
                "model": model_name,
                "allocation": allocation,
                "target": f"{kind} {args.target:g}",
                "round_to": rounding,
                "macs_ratio": count_macs(models[key].cpu(), shape).macs / base_macs,
                "pred": predicted,
                "measured": ratio,
                "noise": pb.relative_spread + bb.relative_spread,
                "pred_error": abs(predicted - ratio) / ratio,
                "batch1": times[key][1].median_ms / times["base"][1].median_ms,
                "base_ms": bb.median_ms,
                "probe_error": lat.probe_error,
                "setup_s": setup_s,
                "timed": lat.cost.table.timed,
                "tries": tries[key],
                "onnx": onnx.get(key, {}).get(
                    f"onnx_latency_ratio_b{args.batch}", onnx.get(key, {}).get("onnx_skipped")
                ),
            }
        )
        models[key].to(runtime.device)
    return rows


def _cell(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v or "—")


def markdown(
    rows: list[dict], args: argparse.Namespace, wall_s: float, refused: list[str], load: str
) -> str:
    head = (
        "| model | allocation | target | round_to | MAC ratio | predicted latency ratio | "
        f"measured ratio (batch {args.batch}) | noise (IQR/median, both) | prediction error | "
        "measured ratio (batch 1) | unpruned ms | measured tries |"
        + (f" onnxruntime ratio (batch {args.batch}) |" if args.onnx else "")
    )
    lines = [head, "|" + "---|" * (12 + bool(args.onnx))]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['allocation']} | {r['target']} | {r['round_to']} | "
            f"{r['macs_ratio']:.3f} | {r['pred']:.3f} | {r['measured']:.3f} | {r['noise']:.3f} | "
            f"{r['pred_error']:.1%} | {r['batch1']:.3f} | {r['base_ms']:.1f} | {r['tries']} |"
            + (f" {_cell(r['onnx'])} |" if args.onnx else "")
        )
    tables = sorted({(r["model"], r["probe_error"], r["setup_s"], r["timed"]) for r in rows})
    setup = [
        f"- {m}: table check (a probe pruned half-way to the floors) error {e:.1%}; table and "
        f"calibration {s:.0f} s ({n} layer timings; 0 = from the cache)"
        for m, e, s, n in tables
    ]
    return "\n".join(
        [
            "# MAC target vs latency target (CPU)",
            "",
            f"l1 at a MAC target of {args.target:g} and at a latency target of {args.target:g} "
            f"(latency ratio measured at batch {args.batch}, {args.threads} thread(s)), "
            "rounding off (round_to 1) and on (round_to 8). The latency target goes through the "
            "run's own path (`target_kind=latency`): per-device table of every prunable layer, "
            "timed in isolation on a coarse grid of kept-channel counts (multiples of 8) and "
            "interpolated; residual (BatchNorm, activations, dispatch) calibrated on the unpruned "
            "model and one pruned probe; the table checked on a second probe; then the plan "
            "allocated to the prediction is measured and the allocation corrected by the "
            "measured/predicted factor (up to `latency.correct_steps`=2 times; `measured tries` "
            "counts the plans measured). The final measurement below is a fresh one, taken "
            "with every plan interleaved.",
            "",
            f"{load} Measured ratios are medians over interleaved repeats, so load drift hits "
            "pruned and unpruned alike; the noise column is the sum of both models' "
            "interquartile range / median. Untrained weights (dense latency does not depend on "
            "them).",
            "",
            *lines,
            "",
            *setup,
            *refused,
            f"- total wall time {wall_s:.0f} s",
            "",
            "## Provenance",
            "",
            *provenance_lines(provenance(seeds=[0])),
            "",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--data", default="cifar10")
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--allocations", nargs="+", default=["uniform"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--outputs", default="outputs")
    p.add_argument("--out", default=None, help="write the Markdown table here")
    p.add_argument("--onnx", action="store_true", help="also time every model in onnxruntime")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="a config override for every model, e.g. --set 'data.shape=[3,224,224]'",
    )  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t, load_start = time.perf_counter(), os.getloadavg()
    rows, refused = [], []
    for m in args.models:
        try:
            rows.extend(rows_for(m, args, refused))
        except ImpossibleTargetError as e:  # the run would refuse it too: say so, go on
            refused.append(f"- {m}: refused before pruning: {e}")
    load = load_line(load_start, os.getloadavg())
    text = markdown(rows, args, time.perf_counter() - t, refused, load)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
