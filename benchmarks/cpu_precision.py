"""What precision and compilation do to a real CPU run: the same `prunebench run` (CIFAR-10
decoded from ../shared, ResNet-20, l1 at MAC 0.5) in fp32 eager, the default (every setting left
as it is: on a CPU with native bf16, bf16 autocast in channels_last, elsewhere fp32; `compile:
auto` either way), fp32 with `compile: auto` (`fp32-auto`, the default before issue 26's precision
change) and bf16 autocast (eager, and compiled), one after another, each in its own process.

    PYTHONPATH=. python benchmarks/cpu_precision.py [--data .data/cifar10.npz] [--threads 1]
        [--modes fp32-eager,fp32-auto,default] [--seed 0] [--out results/cpu_precision.md]
        [extra overrides ...]

Per mode: the precision it trained at, wall and process CPU seconds (`getrusage` of the child),
the seconds it spent compiling (the record's `compile_s`, wall), training images
per CPU-second (baseline + fine-tuning images / CPU seconds: the per-image work, which machine
load moves little with 1 thread), the speed-up over fp32 eager per CPU-second (compile seconds
in, and taken out: a study's trials share the compiled kernels), the baseline's and
the pruned model's test top-1, and what the record says ran compiled. It answers the question
issue 26 leaves to a decision: on a CPU with native bf16 (AVX-512 BF16), is bf16 autocast (the
CUDA default here) the way to train ≥ 2× faster than fp32 eager, and what does it cost in accuracy
at this budget. One seed per mode: compare the accuracy gaps with the seed spread of
results/controls_cifar10_resnet20/ (same data, model, epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from harness.runtime.provenance import provenance, provenance_lines

#: mode → overrides; fp32-eager is the reference every speed-up is taken against
MODES = {
    "fp32-eager": ["compile=false", "amp=false"],
    "default": [],
    "fp32-auto": ["amp=false"],
    "bf16-eager": ["compile=false", "amp=true"],
    "bf16-compiled": ["compile=true", "amp=true"],
}


def run_mode(mode: str, args: argparse.Namespace, extra: list[str]) -> dict:
    """One `prunebench run` in a child process: its JSON record plus wall and CPU seconds."""
    overrides = [
        "task=classification", "data=npz", f"data.path={args.data}", "data.train_subset=6000",
        "model=resnet20", "train.epochs=15", "finetune.epochs=9", "target=0.5", "method=l1",
        f"seed={args.seed}", "measure.latency=false", "tracking.enabled=false",
        f"outputs={args.outputs}/{mode}", *MODES[mode], *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": os.getcwd()}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", *overrides],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"cpu_precision: {mode} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"{time.strftime('%H:%M:%S')} {mode}: {wall:.0f} s wall", file=sys.stderr, flush=True)
    return {"mode": mode, "wall_s": wall, "cpu_s": cpu, **record}


def table(rows: list[dict], train_images: int) -> list[str]:
    """One row per mode; the speed-ups are per CPU-second against fp32 eager, with the run's
    compile seconds (the record's `compile_s`) in, and taken out."""
    ref = next((r for r in rows if r["mode"] == "fp32-eager"), None)
    out = [
        "| mode | overrides | precision | wall s | CPU s | compile s | train images / CPU s | "
        "speed-up per CPU s | the same, compile apart | baseline test top-1 | pruned test top-1 | "
        "MAC ratio | compiled (baseline, fine-tune) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def rates(r: dict) -> tuple[float, float]:
        images = (r["cost_baseline_epochs"] + r["finetune_epochs"]) * train_images
        return images / r["cpu_s"], images / max(r["cpu_s"] - r["compile_s"], 1e-9)

    for r in rows:
        rate, rate_apart = rates(r)
        speed = apart = "—"
        if ref is not None:
            ref_rate, ref_apart = rates(ref)
            speed, apart = f"{rate / ref_rate:.2f}×", f"{rate_apart / ref_apart:.2f}×"
        out.append(
            f"| {r['mode']} | {' '.join(MODES[r['mode']]) or '(none)'} | "
            f"{r.get('precision', '?')} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
            f"{r['compile_s']:.0f} | {rate:.0f} | {speed} | {apart} | "
            f"{r['base_test_metric']:.2f} | {r['test_metric']:.2f} | {r['macs_ratio']:.3f} | "
            f"{r['compiled_baseline']:.0f}, {r['compiled_finetune']:.0f} |"
        )
    return out


def main(argv: list[str]) -> int:
    from benchmarks.controls_cifar10 import add_data_option, decoded_cifar10

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--modes", default="fp32-eager,fp32-auto,default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outputs", default="outputs/cpu_precision")
    parser.add_argument("--out", default=None, help="write the Markdown report here")
    args, extra = parser.parse_known_args(argv)
    args.data = decoded_cifar10(args.data.expanduser().resolve())
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"cpu_precision: unknown mode(s) {unknown}; choose from {list(MODES)}")
    load_start = os.getloadavg()
    rows = [run_mode(m, args, extra) for m in modes]
    load_end = os.getloadavg()
    train_images = 5400  # the 6,000-image subset less its 10 % validation split
    lines = [
        "# Precision and compilation on a real CPU run (issue 26)",
        "",
        f"`prunebench run` on CIFAR-10 (6,000-image subset: {train_images} train / 600 val, the "
        "10,000-image test set), ResNet-20, 15 baseline epochs, l1 at MAC 0.5, 9 fine-tuning "
        f"epochs, seed {args.seed}, {args.threads} thread(s); each mode its own process, one "
        "after another. CPU seconds are the child's user + system time; images per CPU-second "
        "count the training images only (validation and test passes are in the time too). "
        f"Load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end, on "
        f"{os.cpu_count()} cores.",
        "",
        *table(rows, train_images),
        "",
        "## Provenance",
        "",
        *provenance_lines(provenance(seeds=[args.seed])),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
