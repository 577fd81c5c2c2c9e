"""Harness overhead: training-loop throughput against a bare PyTorch loop, and the latency of a
physically pruned ResNet-56 against its MAC ratio.

    PYTHONPATH=. .venv/bin/python benchmarks/harness_overhead.py [--model resnet20] [--data digits]
        [--batch 128] [--steps 50] [--repeats 5] [--device auto] [--latency-batch 64] [--compiled]

(a) Throughput. `harness.train.fit` with the ClassificationTask, on the device-resident
TensorBatches of `task.build_data`, against a plain for-loop (forward, cross-entropy, backward, SGD
step) on the same model (same init), the same data tensors, batch size and optimizer settings
(`train.*`). The bare loop draws its own permutation with `torch.randperm` on the device,
index-selects the batch and calls the same augmentation object (`train.transform`: crop, flip,
normalise), so data and augmentation cost are the same; both run under the run's autocast and
memory format (off on CPU). What only the harness does: the LambdaLR step per step, the task's
loss dict, the detached on-device loss sum, the hook dispatch (no hooks here), one `.item()` and
one NaN check per epoch, and the per-epoch log line. `fit` runs without validation (the pure loop);
the `fit+val` column adds the per-epoch validation pass every pipeline stage pays. Each timed
repeat is `ceil(steps / batches per epoch)` epochs of each loop, interleaved (the order alternates)
so a change in machine load hits both alike; median of `--repeats` after `--warmup`. With
`--compiled`, `bare-c` (the bare loop on `torch.compile(model)`) and `fit-c` (`fit` with
`compile: true`) join them, compiled in the warm-up, and the overhead is also measured against the
fastest (compiled) loop.

(b) Latency. ResNet-56 (CIFAR, 3×32×32, the conf's projection shortcuts) pruned with l1 at each
`--targets` MAC ratio through build_structure → score_groups → allocate → apply_plan (physical
removal, untrained weights: latency does not depend on their values), beside the unpruned model.
`harness.run.measure.measure_latency` at batch 1 and `--latency-batch`; all models are measured in
`--rounds` interleaved rounds and each cell is the median over rounds. MACs are fvcore conv+linear
(`harness.run.measure.count_macs`).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from harness.registry import METHODS, TASKS
from harness.run.measure import count_macs, count_params, measure_latency
from harness.runtime.device import Runtime, pick_runtime
from harness.runtime.plugins import load_configured
from harness.structure import (
    CostModel,
    allocation_policy,
    apply_plan,
    build_structure,
    score_groups,
)
from harness.task import DataSplits, Task
from harness.train import build_optimizer, build_scheduler, fit

CONF = Path(__file__).resolve().parent.parent / "conf"


def load_cfg(overrides: Sequence[str]) -> DictConfig:
    """The run config the CLI would compose (conf/ + overrides), without importing the CLI."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# ---------------------------------------------------------------- (a) throughput


def bare_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, data: DataSplits, runtime: Runtime
) -> int:
    """One epoch of the plain loop over the training tensors; returns the images seen."""
    train = data.train
    x_all, y_all = train.tensors
    n, b = len(y_all), train.batch_size
    order = torch.randperm(n, device=x_all.device)
    seen = 0
    model.train()
    for i in range(n // b):  # drop_last, as the task's training batches
        idx = order[i * b : (i + 1) * b]
        x, y = train.transform((x_all[idx], y_all[idx]), train.generator)  # same augmentation
        with runtime.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return seen


def throughput(args: argparse.Namespace, runtime: Runtime) -> dict[str, object]:
    cfg = load_cfg([f"data={args.data}", f"model={args.model}", f"task.batch_size={args.batch}"])
    task: Task = TASKS.get(cfg.task.name)(cfg.task)
    data = task.build_data(cfg.data, seed=0).to(runtime.device)
    epochs = max(1, math.ceil(args.steps / len(data.train)))
    images = epochs * len(data.train) * data.train.batch_size

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return runtime.prepare(task.build_model(cfg.model, cfg.data))

    def harness_run(val: bool, rt: Runtime = runtime) -> Callable[[], int]:
        model = fresh()
        opt = build_optimizer(model.parameters(), cfg.train)

        def run() -> int:
            sched = build_scheduler(opt, cfg.train, epochs=epochs, steps_per_epoch=len(data.train))
            fit(
                model, task, data.train, epochs=epochs, optimizer=opt, runtime=rt,
                scheduler=sched, val=data.val if val else None, select_best=False,
            )  # fmt: skip
            return images

        return run

    def bare_run(compiled: bool = False) -> Callable[[], int]:
        model = fresh()
        t = cfg.train
        opt = torch.optim.SGD(
            model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
            nesterov=t.nesterov,
        )  # fmt: skip
        net = torch.compile(model, dynamic=False) if compiled else model
        return lambda: sum(bare_epoch(net, opt, data, runtime) for _ in range(epochs))

    runs = {"bare": bare_run(), "fit": harness_run(False), "fit+val": harness_run(True)}
    if args.compiled:
        runs["bare-c"] = bare_run(compiled=True)
        runs["fit-c"] = harness_run(False, replace(runtime, compile="on"))
    secs: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(args.warmup + args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:  # alternate who goes first
            runtime.synchronize()
            t0 = time.perf_counter()
            seen = runs[name]()
            runtime.synchronize()  # sync: the clock reads finished device work
            if r >= args.warmup:
                secs[name].append(time.perf_counter() - t0)
            if seen != images:
                raise RuntimeError(f"{name} saw {seen} images, expected {images}")
    ips = {k: images / statistics.median(v) for k, v in secs.items()}
    spread = {k: (images / max(v), images / min(v)) for k, v in secs.items()}
    return {
        "model": args.model, "data": args.data, "batch": data.train.batch_size,
        "steps": epochs * len(data.train), "epochs": epochs, "images": images,
        "ips": ips, "spread": spread,
    }  # fmt: skip


# ---------------------------------------------------------------- (b) latency


def pruned_resnet56(cfg: DictConfig, task: Task, target: float, runtime: Runtime) -> nn.Module:
    """ResNet-56 with l1's plan for `target` applied physically (target 1.0: unpruned)."""
    torch.manual_seed(0)
    model = runtime.prepare(task.build_model(cfg.model, cfg.data))
    if target >= 1.0:
        return model
    method = METHODS.get("l1")()
    example = task.example_input(cfg.data).to(runtime.device)
    structure = build_structure(model, example, frozen=cfg.prune.frozen)
    scores = score_groups(model, structure, method.score)
    plan = allocation_policy(cfg.prune, method, CostModel(structure)).allocate(scores, target)
    return apply_plan(model, structure, plan)


def latency(args: argparse.Namespace, runtime: Runtime) -> list[dict[str, float]]:
    cfg = load_cfg(["data=cifar10", "model=resnet56"])
    task: Task = TASKS.get(cfg.task.name)(cfg.task)
    shape = task.input_shape(cfg.data)
    targets = [1.0, *args.targets]
    models = {t: pruned_resnet56(cfg, task, t, runtime) for t in targets}
    batches = (1, args.latency_batch)
    times: dict[float, dict[int, list[float]]] = {t: {b: [] for b in batches} for t in targets}
    for r in range(args.rounds):
        for t in targets if r % 2 == 0 else targets[::-1]:
            ms = measure_latency(
                models[t], shape, runtime, batch_sizes=batches, repeats=args.latency_repeats
            )
            for b in batches:
                times[t][b].append(ms[b])
    base_macs = count_macs(models[1.0], shape).macs
    base_params = count_params(models[1.0])
    base_ms = {b: statistics.median(times[1.0][b]) for b in batches}
    rows = []
    for t in targets:
        macs = count_macs(models[t], shape).macs
        row = {
            "target": t, "macs": macs, "macs_ratio": macs / base_macs,
            "params_ratio": count_params(models[t]) / base_params,
        }  # fmt: skip
        for b in batches:
            ms = statistics.median(times[t][b])
            row[f"ms_{b}"], row[f"lat_ratio_{b}"] = ms, ms / base_ms[b]
        rows.append(row)
    return rows


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", help="model for the throughput part")
    parser.add_argument("--data", default="digits", help="dataset for the throughput part")
    parser.add_argument("--batch", type=int, default=128, help="training batch (task default)")
    parser.add_argument("--steps", type=int, default=50, help="≈ optimizer steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed repeats first")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.7, 0.5, 0.3])
    parser.add_argument("--latency-batch", type=int, default=64)
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    parser.add_argument(
        "--compiled", action="store_true", help="add compiled bare and fit loops (bare-c, fit-c)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_configured(load_cfg([]))  # builtin_plugins (methods, tasks) + plug-ins, as the CLI
    runtime = pick_runtime(args.device)
    dev = torch.cuda.get_device_name() if runtime.device.type == "cuda" else "cpu"
    print(f"device {dev}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"autocast {runtime.amp_dtype}, channels_last {runtime.channels_last}")  # fmt: skip

    tp = throughput(args, runtime)
    ips, spread = tp["ips"], tp["spread"]
    print(f"\n(a) training throughput, {tp['model']} on {tp['data']}, batch {tp['batch']}, "
          f"{tp['steps']} steps ({tp['epochs']} epochs, {tp['images']} images) per repeat, "
          f"median of {args.repeats} after {args.warmup} warm-up, interleaved")  # fmt: skip
    print(f"{'loop':8} {'images/s':>10} {'min..max':>17} {'ms/step':>8} {'vs bare':>8}")
    for name in ips:
        lo, hi = spread[name]
        ms_step = tp["images"] / ips[name] / tp["steps"] * 1e3
        print(f"{name:8} {ips[name]:10.1f} {lo:8.1f}..{hi:<8.1f} {ms_step:8.2f} "
              f"{ips[name] / ips['bare']:8.3f}")  # fmt: skip
    print(f"harness overhead (bare / fit − 1): {ips['bare'] / ips['fit'] - 1:+.1%}; "
          f"with per-epoch validation: {ips['bare'] / ips['fit+val'] - 1:+.1%}")  # fmt: skip
    if "bare-c" in ips:
        over = ips["bare-c"] / ips["fit-c"] - 1
        print(f"compiled harness overhead (bare-c / fit-c − 1): {over:+.1%}; "
              f"fit-c vs bare (eager): {ips['fit-c'] / ips['bare']:.2f}×")  # fmt: skip

    rows = latency(args, runtime)
    b = args.latency_batch
    print(f"\n(b) ResNet-56 (CIFAR 3×32×32) pruned with l1, latency median of {args.rounds} "
          f"rounds × {args.latency_repeats} repeats; MACs = fvcore conv+linear")  # fmt: skip
    print(f"{'target':>6} {'MACs (M)':>9} {'macs_ratio':>10} {'params_ratio':>12} "
          f"{'b1_ms':>8} {'b1_ratio':>8} {f'b{b}_ms':>9} {f'b{b}_ratio':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['target']:6.2f} {r['macs'] / 1e6:9.2f} {r['macs_ratio']:10.3f} "
              f"{r['params_ratio']:12.3f} {r['ms_1']:8.2f} {r['lat_ratio_1']:8.3f} "
              f"{r[f'ms_{b}']:9.2f} {r[f'lat_ratio_{b}']:9.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
