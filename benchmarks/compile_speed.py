"""Eager vs compiled (`compile: true`) per phase, through the harness's own loop and evaluation.

    PYTHONPATH=. python benchmarks/compile_speed.py [--models resnet20 resnet56 ...]
        [--phases train finetune dhp eval] [--batch 128] [--steps 4] [--rounds 3]
        [--device auto] [--threads 0] [--out results/benchmarks/compile_cpu.txt]

Phases, each on CIFAR-sized inputs (3×32×32, 10 classes; random tensors: speed does not depend
on pixel values, and no augmentation runs in either mode):
- `train`: baseline training, `harness.train.fit` of the unpruned model (SGD, cosine LR);
- `finetune`: the same on the model pruned to 0.5 of its MACs (l1 scores, physical removal);
- `dhp`: DHP's search, `fit` of the search network (hypernetwork-generated weights) with its
  proximal-step hook, at DHP's batch (64);
- `eval`: `harness.train.evaluate` of the unpruned model on batches of 512.

Per phase a fresh model per mode (same init); each mode runs one untimed call first, whose time
less a steady call's is the compile time (the cold inductor cache of a fresh temp folder, unless
TORCHINDUCTOR_CACHE_DIR is set); then `--rounds` timed calls of `--steps` steps each, the modes
alternating (the first mode alternates too) so a change in machine load hits both alike;
images/s is the median. Break-even = compile time / time saved per image, in CIFAR-10 epochs
(45,000 training images; eval: passes over a 5,000-image validation split). The last column says
what `compile: auto` picks for one CIFAR-10 epoch of the phase on this device.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from harness.data import TensorBatches
from harness.registry import METHODS, TASKS
from harness.runtime.device import Runtime, pick_runtime
from harness.runtime.plugins import load_configured
from harness.runtime.provenance import git_state, hardware, versions
from harness.structure import CostModel, allocate, apply_plan, build_structure, score_groups
from harness.task import Task
from harness.train import build_optimizer, build_scheduler, evaluate, fit
from harness.train.compile import wants_compile

CONF = Path(__file__).resolve().parent.parent / "conf"
CIFAR_TRAIN, CIFAR_VAL = 45_000, 5_000
OPTIM = OmegaConf.create(
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"}
)


def build(model: str, runtime: Runtime) -> tuple[Task, nn.Module]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=cifar10", f"model={model}"])
    task: Task = TASKS.get(cfg.task.name)(cfg.task)
    torch.manual_seed(0)
    return task, runtime.prepare(task.build_model(cfg.model, cfg.data))


def pruned(model: nn.Module, runtime: Runtime) -> nn.Module:
    """`model` physically pruned to 0.5 of its MACs by l1 (uniform allocation)."""
    example = torch.randn(1, 3, 32, 32, device=runtime.device)
    structure = build_structure(model, example)
    scores = score_groups(model, structure, METHODS.get("l1")().score)
    plan = allocate(CostModel(structure), scores, 0.5, allocation="uniform", floor=0.05)
    return apply_plan(model, structure, plan)


def phase_runner(
    phase: str, model_name: str, mode: str, batch: int, steps: int, device: str
) -> tuple[Callable[[], int], nn.Module]:
    """A callable that runs one timed unit of `phase` in `mode` (it returns the images it saw),
    and the model it trains or evaluates."""
    runtime = pick_runtime(device, compile=mode)
    task, model = build(model_name, runtime)
    dev = runtime.device
    if phase == "dhp":
        from methods.dhp import build_search_net
        from methods.dhp.search import DHPSearch, GammaController

        batch = 64
        structure = build_structure(model, torch.randn(1, 3, 32, 32, device=dev))
        model = build_search_net(model, structure, seed=0, channels_last=runtime.channels_last)
    elif phase == "finetune":
        model = pruned(model, runtime)
    n = (4 if phase == "eval" else 1) * batch * steps
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g).to(dev)
    y = torch.randint(0, 10, (n,), generator=g).to(dev)
    if phase == "eval":
        batches = TensorBatches((x, y), 512)
        return lambda: (evaluate(task, model, batches, runtime), n)[1], model
    train = TensorBatches((x, y), batch, shuffle=True, drop_last=True, seed=0)
    optimizer = build_optimizer(model.parameters(), OPTIM)

    def run() -> int:
        hooks = []
        if phase == "dhp":
            hooks = [
                DHPSearch(
                    model, [gr.name for gr in structure.prunable], CostModel(structure),
                    GammaController("paper", 1e-4, 0.5), target=0.5, threshold=5e-3,
                    stop_limit=0.01, check_every=10**9,
                )
            ]  # fmt: skip
        scheduler = build_scheduler(optimizer, OPTIM, epochs=1, steps_per_epoch=len(train))
        r = fit(
            model, task, train, epochs=1, optimizer=optimizer, scheduler=scheduler,
            runtime=runtime, hooks=hooks, select_best=False, name=phase,
        )  # fmt: skip
        if r.compiled != (mode == "on"):
            raise RuntimeError(f"{phase} {model_name}: expected compiled={mode == 'on'}")
        return r.steps * batch

    return run, model


def measure(
    phase: str, model_name: str, batch: int, steps: int, rounds: int, device: str
) -> dict[str, float]:
    built = {m: phase_runner(phase, model_name, m, batch, steps, device) for m in ("off", "on")}
    runs = {m: run for m, (run, _) in built.items()}
    first: dict[str, float] = {}
    secs: dict[str, list[float]] = {"off": [], "on": []}
    images = 0
    for r in range(rounds + 1):
        for m in ("off", "on") if r % 2 == 0 else ("on", "off"):
            t = time.perf_counter()
            images = runs[m]()
            dt = time.perf_counter() - t
            (secs[m].append(dt) if r else first.__setitem__(m, dt))
    eager_s, comp_s = statistics.median(secs["off"]), statistics.median(secs["on"])
    compile_s = max(0.0, first["on"] - comp_s)
    saved_per_image = (eager_s - comp_s) / images
    per_epoch = CIFAR_VAL if phase == "eval" else CIFAR_TRAIN
    breakeven = compile_s / saved_per_image / per_epoch if saved_per_image > 0 else float("inf")
    auto = phase != "eval" and wants_compile(
        "auto", pick_runtime(device).device, CIFAR_TRAIN * 3 * 32 * 32, built["off"][1]
    )
    return {
        "eager_ips": images / eager_s,
        "compiled_ips": images / comp_s,
        "speedup": eager_s / comp_s,
        "compile_s": compile_s,
        "breakeven_epochs": breakeven,
        "images": images,
        "auto": auto,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20"])
    parser.add_argument("--phases", nargs="+", default=["train", "finetune", "dhp", "eval"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed call")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per mode")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--out", default=None, help="also write the table here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # cold cache: the compile time a first run pays
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    load_configured(OmegaConf.load(CONF / "config.yaml"))
    sha, dirty = git_state()
    hw = hardware()
    lines = [
        "# PYTHONPATH=. python benchmarks/compile_speed.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v is not None
        ),  # fmt: skip
        f"# git {sha} ({'dirty' if dirty else 'clean'} tree); {hw['cpu']}, {hw['cores']} cores, "
        f"{torch.get_num_threads()} threads; GPU: {hw['gpu']}; torch {versions()['torch']}",
        f"# load average at start (1/5/15 min): {' / '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} CPUs (above the CPU count: shared, absolute images/s low and noisy); "
        "the eager/compiled ratio of each row is measured interleaved in one run",
        f"# batch {args.batch} (dhp: 64), {args.steps} steps per timed call (eval: "
        f"{4 * args.steps * args.batch} images), median of {args.rounds} calls per mode; "
        "compile_s: first call − a steady one (cold inductor cache); break-even in CIFAR-10 "
        "epochs (eval: 5,000-image passes); auto: what `compile: auto` picks for a CIFAR-10 epoch",
        f"{'model':12} {'phase':9} {'eager img/s':>11} {'compiled':>9} {'speedup':>7} "
        f"{'compile_s':>9} {'break-even':>10} {'auto':>5}",
    ]
    print("\n".join(lines), flush=True)
    for model in args.models:
        for phase in args.phases:
            try:
                r = measure(phase, model, args.batch, args.steps, args.rounds, args.device)
            except Exception as e:  # noqa: BLE001 - e.g. DHP cannot search this model: say so
                line = f"{model:12} {phase:9} not measured: {type(e).__name__}: {e}"[:200]
                print(line, flush=True)
                lines.append(line)
                continue
            auto = "-" if phase == "eval" else ("on" if r["auto"] else "off")
            line = (
                f"{model:12} {phase:9} {r['eager_ips']:11.1f} {r['compiled_ips']:9.1f} "
                f"{r['speedup']:6.2f}× {r['compile_s']:9.1f} {r['breakeven_epochs']:10.3f} "
                f"{auto:>5}"
            )
            print(line, flush=True)
            lines.append(line)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
