"""Eager vs compiled (`compile: true`) per phase, through the harness's own loop and evaluation.

    PYTHONPATH=. python benchmarks/compile_speed.py [--models resnet20 resnet56 ...]
        [--phases train finetune dhp eval] [--batch 128] [--steps 4] [--rounds 3]
        [--device auto] [--threads 0] [--bare] [--out results/benchmarks/compile_cpu.txt]

Phases, each on random tensors of the model's task (speed does not depend on pixel values, and
no augmentation runs in either mode): CIFAR-sized inputs (3×32×32, 10 classes) for the
classifiers; for DnCNN (`task=denoise`) and EDSR (`task=sr`, ×4) the training patches and batch
of their data config (1×64×64 noisy/clean pairs, batch 16; 3×48×48 LR → 3×192×192 HR, batch 16)
and their task's optimizer (Adam):
- `train`: baseline training, `harness.train.fit` of the unpruned model (SGD, cosine LR);
- `finetune`: the same on the model pruned to 0.5 of its MACs (l1 scores, physical removal);
- `dhp`: DHP's search, `fit` of the search network (hypernetwork-generated weights) with its
  proximal-step hook, at DHP's batch (64);
- `eval`: `harness.train.evaluate` of the unpruned model on batches of 512.

Per phase a fresh model per mode (same init); each mode runs one untimed call first, whose time
less a steady call's is the compile time (the cold inductor cache of a fresh temp folder, unless
TORCHINDUCTOR_CACHE_DIR is set); then `--rounds` timed calls of `--steps` steps each, the modes
alternating (the first mode alternates too) so a change in machine load hits both alike;
images/s is the median. `cpu×` is the speed-up in process CPU seconds (all threads) instead of
wall seconds: on a shared machine it moves far less with the load than the wall-clock ratio
(with 1 thread it is the work per image; with more, OpenMP's spin-waiting counts too).
Break-even = compile time / time saved per image, in epochs (classifiers: CIFAR-10's 45,000
training images, eval: passes over a 5,000-image validation split; DnCNN, EDSR: the data config's
`patches_per_epoch`). The last column says what `compile: auto` picks for one such epoch of the
phase on this device.

`--bare` adds, to each `train` row, plain PyTorch loops on the same data tensors (a fresh
`torch.randperm` order per call, index-selected batches, the task's loss function, the same
optimizer settings, the run's autocast; no scheduler, hooks or loss bookkeeping), timed in
the same interleaved rounds: `bare` (eager), `bare-cl` (eager, model and inputs in channels_last,
the layout inductor picks for convolutions on a CPU) and `bare-c` (`torch.compile(model,
dynamic=False)`), beside `fit` and `fit-c` (the harness's loop, `compile: false` / `true`). That
separates the harness's own cost from what compilation can give at all. `--bf16` adds the same
loop under bf16 autocast, eager in channels_last (`bare-bf16`) and compiled (`bare-c-bf16`): what
lower precision gives on this device (fit and fit-c train in fp32 on a CPU). `--profile`
adds, per train row, where one call of `fit` and of `fit-c` spends its CPU time (torch.profiler).
`--cuda-graphs` (with `--bare`) adds `bare-cg`, the compiled loop in `reduce-overhead` mode, whose
forward and backward replay as CUDA graphs on a GPU (the launch overhead small nets are bound by;
on a CPU it is plain compilation), and with `--bf16` its bf16 twin `bare-cg-bf16`.
`--default` adds `fit-d`: `fit` with the runtime a `prunebench run` of the model's task picks when
`amp` and `compile` are left at their defaults (on a CPU with native bf16 and CIFAR-sized images:
bf16 autocast in channels_last, `harness.runtime.precision`; compiled if `auto` compiles one
training epoch), and prints its speed-up over fp32 eager and its compile time apart.
`--roofline` measures the device's peak dense matrix-multiply rate (fp32 and bf16) and gives, per
train and finetune row, the floating-point rate each loop reaches (6 × the model's fvcore
conv+linear MACs per training image: forward, input gradient, weight gradient) and the ceiling
that puts on any speed-up over eager at the run's precision: peak / eager's rate. A training step
built from direct or GEMM convolutions (oneDNN's and inductor's) cannot outrun the device's
largest matrix multiply, so no compilation beats that ceiling without changing the precision.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
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
#: models of a restoration task: composed with `task=<task>` (its data config and optimizer)
RESTORATION = {"dncnn": "denoise", "edsr": "sr", "edsr_paper": "sr", "srresnet": "sr"}
OPTIM = OmegaConf.create(
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"}
)


def compose_cfg(model: str) -> DictConfig:
    """The run config of `model` on its task: CIFAR-10 for a classifier."""
    task = RESTORATION.get(model)
    data = [f"task={task}"] if task else ["data=cifar10"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[f"model={model}", *data])


def build(model: str, runtime: Runtime) -> tuple[Task, nn.Module]:
    cfg = compose_cfg(model)
    task: Task = TASKS.get(cfg.task.name)(cfg.task)
    torch.manual_seed(0)
    return task, runtime.prepare(task.build_model(cfg.model, cfg.data))


@dataclass
class Workload:
    """What one phase of `model` trains on: input and target shapes, batch, optimizer, loss."""

    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...] | None  # None: class labels
    batch: int
    epoch_images: int  # images (patches) of one training epoch
    optim: DictConfig
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def tensors(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, *self.input_shape, generator=g)
        if self.target_shape is None:
            y = torch.randint(0, 10, (n,), generator=g)
        else:
            y = torch.randn(n, *self.target_shape, generator=g)
        return x.to(device), y.to(device)


def workload(model: str, batch: int) -> Workload:
    """CIFAR-sized classification at `batch`, or the restoration task's own patches and batch."""
    cfg = compose_cfg(model)
    task = RESTORATION.get(model)
    if task is None:
        return Workload((3, 32, 32), None, batch, CIFAR_TRAIN, OPTIM, _cross_entropy)
    c, p = int(cfg.data.channels), int(cfg.data.patch_size)
    scale = int(cfg.task.scale) if task == "sr" else 1
    return Workload(
        (c, p, p), (c, p * scale, p * scale), int(cfg.data.batch_size),
        int(cfg.data.patches_per_epoch), cfg.train, _l1,
    )  # fmt: skip


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.float(), y)


def _l1(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(out.float(), y)


def pruned(model: nn.Module, runtime: Runtime, shape: tuple[int, ...]) -> nn.Module:
    """`model` physically pruned to 0.5 of its MACs by l1 (uniform allocation)."""
    example = torch.randn(1, *shape, device=runtime.device)
    structure = build_structure(model, example)
    scores = score_groups(model, structure, METHODS.get("l1")().score)
    plan = allocate(CostModel(structure), scores, 0.5, allocation="uniform", floor=0.05)
    return apply_plan(model, structure, plan)


def default_runtime(model: str, device: str, batch: int = 128) -> Runtime:
    """The runtime a `prunebench run` of `model` on its task gets by default (`amp: null`,
    `compile: auto`, decided as for one training epoch of the task's data), on `device`."""
    from harness.run.pipeline import run_runtime

    cfg = compose_cfg(model)
    cfg.device = device
    runtime = run_runtime(cfg, TASKS.get(cfg.task.name)(cfg.task))
    work = workload(model, batch)
    epoch = work.epoch_images * math.prod(work.input_shape)
    on = wants_compile(runtime.compile, runtime.device, epoch)
    return replace(runtime, compile="on" if on else "off")


def phase_runner(
    phase: str, model_name: str, mode: str, batch: int, steps: int, device: str
) -> tuple[Callable[[], int], nn.Module]:
    """A callable that runs one timed unit of `phase` in `mode` (it returns the images it saw),
    and the model it trains or evaluates. Modes: off (fp32 eager), on (fp32 compiled), default
    (what a `prunebench run` of the model's task picks with every setting at its default)."""
    runtime = default_runtime(model_name, device, batch) if mode == "default" else None
    runtime = runtime or pick_runtime(device, compile=mode)
    task, model = build(model_name, runtime)
    work = workload(model_name, batch)
    batch, dev = work.batch, runtime.device
    if phase == "dhp":
        from methods.dhp import build_search_net
        from methods.dhp.search import DHPSearch, GammaController

        batch = min(batch, 64)
        structure = build_structure(model, torch.randn(1, *work.input_shape, device=dev))
        model = build_search_net(model, structure, seed=0, channels_last=runtime.channels_last)
    elif phase == "finetune":
        model = pruned(model, runtime, work.input_shape)
    n = (4 if phase == "eval" else 1) * batch * steps
    x, y = work.tensors(n, dev)
    if phase == "eval":
        batches = TensorBatches((x, y), 4 * batch if work.target_shape else 512)
        return lambda: (evaluate(task, model, batches, runtime), n)[1], model
    train = TensorBatches((x, y), batch, shuffle=True, drop_last=True, seed=0)
    optimizer = build_optimizer(model.parameters(), work.optim)

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
        scheduler = build_scheduler(optimizer, work.optim, epochs=1, steps_per_epoch=len(train))
        r = fit(
            model, task, train, epochs=1, optimizer=optimizer, scheduler=scheduler,
            runtime=runtime, hooks=hooks, select_best=False, name=phase,
        )  # fmt: skip
        if mode != "default" and r.compiled != (mode == "on"):
            raise RuntimeError(f"{phase} {model_name}: expected compiled={mode == 'on'}")
        return r.steps * batch

    return run, model


#: the plain loops of `--bare` (`--bf16`, `--cuda-graphs`): loop → (torch.compile mode or None
#: for eager, channels_last, bf16 autocast); "reduce-overhead" replays the compiled forward and
#: backward as CUDA graphs (on a CPU it is plain compilation)
BARE_LOOPS = {
    "bare": (None, False, False),
    "bare-cl": (None, True, False),
    "bare-c": ("default", False, False),
    "bare-bf16": (None, True, True),
    "bare-c-bf16": ("default", False, True),
    "bare-cg": ("reduce-overhead", False, False),
    "bare-cg-bf16": ("reduce-overhead", False, True),
}


def bare_runner(
    model_name: str, loop: str, batch: int, steps: int, device: str
) -> Callable[[], int]:
    """A plain PyTorch training loop over the `train` phase's data tensors, as BARE_LOOPS says."""
    compile_as, channels_last, bf16 = BARE_LOOPS[loop]
    runtime = pick_runtime(device)
    if bf16:
        runtime = replace(runtime, amp_dtype=torch.bfloat16)
    _, model = build(model_name, runtime)
    work = workload(model_name, batch)
    b = work.batch
    x_all, y_all = work.tensors(b * steps, runtime.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), work.optim)
    net = model if compile_as is None else torch.compile(model, mode=compile_as, dynamic=False)

    def run() -> int:
        model.train()
        order = torch.randperm(len(x_all), device=x_all.device)
        for i in range(steps):
            idx = order[i * b : (i + 1) * b]
            with runtime.autocast():  # the run's precision and layout, as `fit` (CPU: fp32)
                loss = work.loss(net(x_all[idx]), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return b * steps

    return run


@dataclass
class Timing:
    """One runner's calls: the untimed first call, and the timed ones (wall and CPU seconds)."""

    first_s: float = 0.0
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_s(self) -> float:
        return statistics.median(self.cpu)


def interleaved(runs: dict[str, Callable[[], int]], rounds: int) -> tuple[dict[str, Timing], int]:
    """One untimed call of each runner, then `rounds` timed calls each, the order alternating
    every round; returns the timings and the images of one call."""
    times = {k: Timing() for k in runs}
    names = list(runs)
    images = 0
    for r in range(rounds + 1):
        for k in names if r % 2 == 0 else names[::-1]:
            t, c = time.perf_counter(), time.process_time()
            images = runs[k]()
            dt, dc = time.perf_counter() - t, time.process_time() - c
            if r:
                times[k].wall.append(dt)
                times[k].cpu.append(dc)
            else:
                times[k].first_s = dt
    return times, images


def measure(
    phase: str,
    model_name: str,
    batch: int,
    steps: int,
    rounds: int,
    device: str,
    loops: tuple[str, ...] = (),
    profiled: bool = False,
    peak: float | None = None,
    default: bool = False,
) -> dict[str, object]:
    modes = {"off": "fit", "on": "fit-c"} | ({"default": "fit-d"} if default else {})
    built = {m: phase_runner(phase, model_name, m, batch, steps, device) for m in modes}
    runs = {modes[m]: run for m, (run, _) in built.items()}
    for loop in loops if phase == "train" else ():
        runs[loop] = bare_runner(model_name, loop, batch, steps, device)
    times, images = interleaved(runs, rounds)
    prof = profile_lines(model_name, runs) if profiled and phase == "train" else []
    if peak and phase in ("train", "finetune"):
        flops = training_flops(built["off"][1], workload(model_name, batch).input_shape)
        loop_rates = {k: (images / t.wall_s, images / t.cpu_s) for k, t in times.items()}
        prof = roofline_lines(model_name, phase, flops, loop_rates, peak) + prof
    eager, comp = times["fit"], times["fit-c"]
    compile_s = max(0.0, comp.first_s - comp.wall_s)
    saved_per_image = (eager.wall_s - comp.wall_s) / images
    work = workload(model_name, batch)
    per_epoch = CIFAR_VAL if phase == "eval" else work.epoch_images
    breakeven = compile_s / saved_per_image / per_epoch if saved_per_image > 0 else float("inf")
    values = work.epoch_images * math.prod(work.input_shape)
    auto = phase != "eval" and wants_compile(
        "auto", pick_runtime(device).device, values, built["off"][1]
    )
    return {
        "eager_ips": images / eager.wall_s,
        "compiled_ips": images / comp.wall_s,
        "speedup": eager.wall_s / comp.wall_s,
        "cpu_speedup": eager.cpu_s / comp.cpu_s,
        "compile_s": compile_s,
        "breakeven_epochs": breakeven,
        "images": images,
        "auto": auto,
        "loops": {k: (images / t.wall_s, images / t.cpu_s) for k, t in times.items()},
        "profile": prof,
        "default": default_line(model_name, device, batch, times) if default else [],
    }


def default_line(model: str, device: str, batch: int, times: dict[str, Timing]) -> list[str]:
    """What the default setting gives over fp32 eager, in one interleaved run: the acceptance
    figure of issue 26 (compile time apart)."""
    rt = default_runtime(model, device, batch)
    d, e = times["fit-d"], times["fit"]
    mode = "compiled" if rt.compile == "on" else "eager"
    return [
        f"#   {model} default ({rt.precision}, {mode}): "
        f"{e.wall_s / d.wall_s:.2f}× fp32 eager wall ({e.cpu_s / d.cpu_s:.2f}× per CPU-second), "
        f"first call − a steady one {max(0.0, d.first_s - d.wall_s):.1f} s"
    ]


def profile_lines(model: str, runs: dict[str, Callable[[], int]]) -> list[str]:
    """Where one timed call of `fit` and `fit-c` spends its CPU time (torch.profiler, self
    time per op): oneDNN's convolutions (which compilation leaves as they are), the compiled
    graphs' own kernels (fit-c), and everything else (eager: the elementwise ops compilation
    fuses; fit-c: what runs outside the graphs: optimizer, autograd engine, data, the loop)."""
    from torch.profiler import ProfilerActivity, profile

    out = [f"#   {model} train profile (one call, self CPU time): share of the call"]
    for label in ("fit", "fit-c"):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            runs[label]()
        ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        total = sum(ops.values())
        fwd = ops.get("aten::mkldnn_convolution", 0.0)
        bwd = ops.get("aten::convolution_backward", 0.0)
        graph = sum(v for k, v in ops.items() if "CompiledFxGraph" in k)
        rest = {k: v for k, v in ops.items() if "CompiledFxGraph" not in k}
        rest.pop("aten::mkldnn_convolution", None)
        rest.pop("aten::convolution_backward", None)
        top = sorted(rest.items(), key=lambda kv: -kv[1])[:5]
        out.append(
            f"#   {label:6} {total / 1e3:8.0f} ms: conv fwd {fwd / total:5.1%}, conv bwd "
            f"{bwd / total:5.1%}, compiled graphs {graph / total:5.1%}, everything else "
            f"{1 - (fwd + bwd + graph) / total:5.1%} (top: "
            + ", ".join(f"{k.split(': ')[-1]} {v / total:.1%}" for k, v in top)
            + ")"
        )
    return out


def peak_gemm(dtype: torch.dtype, runtime: Runtime, reps: int = 8) -> float:
    """The best FLOP/s of a square matrix multiply in `dtype` (n = 2048 on a CPU, 8192 on a GPU):
    what the device's BLAS reaches on its most favourable dense kernel, an upper bound on any
    training step's rate."""
    device = runtime.device
    n = 8192 if device.type == "cuda" else 2048
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)
    best = 0.0
    for i in range(reps + 2):
        runtime.synchronize()
        t = time.perf_counter()
        a @ b
        runtime.synchronize()
        if i >= 2:  # the first two warm the BLAS up
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def training_flops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Floating-point work of one training image: 6 × fvcore's conv+linear MACs (2 FLOPs per MAC,
    forward + input gradient + weight gradient). The first layer needs no input gradient, so this
    overstates the work by that layer's share (ResNet-20: 1 %)."""
    from harness.run.measure import count_macs

    return 6.0 * count_macs(model, input_shape).macs


def roofline_lines(
    model: str, phase: str, flops: float, loops: dict[str, tuple[float, float]], peak: float
) -> list[str]:
    """A row's achieved rates against the peak of its precision, and the ceiling that puts on a
    speed-up over eager."""
    eager = loops["fit"][0] * flops
    out = [
        f"#   {model} {phase} roofline: {flops / 1e6:.0f} MFLOP per training image; GEMM "
        f"peak {peak / 1e9:.0f} GFLOP/s; achieved GFLOP/s (share of the peak):"
    ]
    rates = (f"{k} {w * flops / 1e9:.0f} ({w * flops / peak:.0%})" for k, (w, _) in loops.items())
    out.append("#   " + "  ".join(rates))
    out.append(
        f"#   ceiling over eager at this precision (peak / fit): {peak / eager:.2f}×; a 2× loop "
        f"would run at {2 * eager / 1e9:.0f} GFLOP/s, {2 * eager / peak:.0%} of the peak"
    )
    return out


def loop_lines(model: str, loops: dict[str, tuple[float, float]]) -> list[str]:
    """The `--bare` block of a train row: each loop's images/s, and the ratios that matter."""
    out = [f"#   {model} train loops: images/s wall (per CPU-second)"]
    out.append("#   " + "  ".join(f"{k} {w:.1f} ({c:.1f})" for k, (w, c) in loops.items()))

    def ratio(a: str, b: str) -> str:
        (wa, ca), (wb, cb) = loops[a], loops[b]
        return f"{a}/{b} {wa / wb:.2f}× ({ca / cb:.2f}×)"

    pairs = [("bare-c", "bare"), ("bare-cl", "bare"), ("fit-c", "fit"), ("fit", "bare")]
    pairs += [("fit-c", "bare-c"), ("fit-c", "bare")]
    pairs += [(k, "bare") for k in ("bare-bf16", "bare-c-bf16", "bare-cg") if k in loops]
    pairs += [(k, "bare-c") for k in ("bare-cg",) if k in loops]
    pairs += [(k, "bare-c-bf16") for k in ("bare-cg-bf16",) if k in loops]
    out.append("#   " + "  ".join(ratio(a, b) for a, b in pairs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20"])
    parser.add_argument("--phases", nargs="+", default=["train", "finetune", "dhp", "eval"])
    parser.add_argument("--batch", type=int, default=128, help="classifiers' training batch")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed call")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per mode")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument(
        "--bare", action="store_true", help="train rows also time bare PyTorch loops"
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="with --bare: also bf16-autocast bare loops (eager channels_last, compiled)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="with --bare: also compiled loops whose steps replay as CUDA graphs (reduce-overhead)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="train rows: after timing, profile one call of fit and fit-c (torch.profiler)",
    )
    parser.add_argument(
        "--default",
        action="store_true",
        help="also time `fit` with a run's default settings (amp and compile auto): fit-d",
    )
    parser.add_argument(
        "--roofline",
        action="store_true",
        help="measure the device's peak GEMM rate; train rows: each loop's FLOP/s against it",
    )
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
        "# PYTHONPATH=. python benchmarks/compile_speed.py " + _argv(args),
        f"# git {sha} ({'dirty' if dirty else 'clean'} tree); {hw['cpu']}, {hw['cores']} cores, "
        f"{torch.get_num_threads()} threads; GPU: {hw['gpu']}; torch {versions()['torch']}",
        f"# load average at start (1/5/15 min): {_load()} on {os.cpu_count()} CPUs (above the CPU "
        "count: shared, absolute images/s low and noisy); the eager/compiled ratio of each row is "
        "measured interleaved in one run",
        f"# batch {args.batch} (dhp: 64; dncnn, edsr: their data config's), {args.steps} steps per "
        "timed call (eval: 4× the images), median of "
        f"{args.rounds} calls per mode; cpu×: the speed-up in process CPU seconds; compile_s: "
        "first call − a steady one (cold inductor cache); break-even in training epochs (eval: "
        "5,000-image passes); auto: what `compile: auto` picks for an epoch",
        f"{'model':12} {'phase':9} {'eager img/s':>11} {'compiled':>9} {'speedup':>7} "
        f"{'cpu×':>6} {'compile_s':>9} {'break-even':>10} {'auto':>5}",
    ]
    peak = None
    if args.roofline:  # against the peak of the precision `fit` trains in (CUDA: bf16 autocast)
        runtime = pick_runtime(args.device)
        fp32, bf16 = (peak_gemm(dt, runtime) for dt in (torch.float32, torch.bfloat16))
        peak = bf16 if runtime.amp_dtype == torch.bfloat16 else fp32
        lines.insert(
            -1,
            f"# roofline: peak square GEMM {fp32 / 1e9:.0f} GFLOP/s fp32, {bf16 / 1e9:.0f} bf16 "
            f"(best of 8 after 2 warm-ups); rows compare with the {runtime.precision} peak",
        )
    print("\n".join(lines), flush=True)
    loops = ("bare", "bare-cl", "bare-c") if args.bare else ()
    loops += ("bare-bf16", "bare-c-bf16") if args.bare and args.bf16 else ()
    if args.bare and args.cuda_graphs:
        loops += ("bare-cg", "bare-cg-bf16") if args.bf16 else ("bare-cg",)
    for model in args.models:
        for phase in args.phases:
            try:
                r = measure(
                    phase, model, args.batch, args.steps, args.rounds, args.device, loops,
                    args.profile, peak, args.default,
                )  # fmt: skip
            except Exception as e:  # noqa: BLE001 - e.g. DHP cannot search this model: say so
                line = f"{model:12} {phase:9} not measured: {type(e).__name__}: {e}"[:200]
                print(line, flush=True)
                lines.append(line)
                continue
            auto = "-" if phase == "eval" else ("on" if r["auto"] else "off")
            new = [
                f"{model:12} {phase:9} {r['eager_ips']:11.1f} {r['compiled_ips']:9.1f} "
                f"{r['speedup']:6.2f}× {r['cpu_speedup']:5.2f}× {r['compile_s']:9.1f} "
                f"{r['breakeven_epochs']:10.3f} {auto:>5}"
            ]
            new += r["default"]
            if "bare" in r["loops"]:
                new += loop_lines(model, r["loops"])
            new += r["profile"]
            print("\n".join(new), flush=True)
            lines += new
    lines.append(f"# load average at the end (1/5/15 min): {_load()}")
    print(lines[-1])
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


def _argv(args: argparse.Namespace) -> str:
    """The command-line options that produced a table (flags as given, lists spelled out)."""
    out = []
    for k, v in vars(args).items():
        if v is None or v is False:
            continue
        flag = f"--{k.replace('_', '-')}"
        out.append(
            flag if v is True else f"{flag} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        )
    return " ".join(out)


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
