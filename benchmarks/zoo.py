"""Zoo coverage: every torchvision classification model pruned to a MAC target, or refused.

    PYTHONPATH=. nice -n 10 python benchmarks/zoo.py [--size 64] [--target 0.5] [--threads 1]
        [--models resnet18 ...] [--out results/zoo.md] [--block "title of an appended rerun"]
    PYTHONPATH=. python benchmarks/zoo.py --source timm --models vit_tiny_patch16_224 ...
        --out results/zoo_timm.md

Per model of `torchvision.models.list_models(module=torchvision.models)`: built through
`model=torchvision` (tasks.classification.models.factories.torchvision_model: random weights,
seed 0, 10 classes, 3×size×size input; a model that cannot run at `--size` is retried at 224, and
the size used is listed), then check_prunable → l1 scores → uniform allocation to `--target`
(floor 0.05, min_channels 1, the run defaults) → apply_plan (physical removal) → one forward of
the compact model. As in a run, the allocation target is corrected for MACs the cost model cannot
see (`allocation_target`, then `loosest_plan`: Swin's functional attention, MaxViT's einsum,
MobileViT's attention matmuls), and `ratio` is fvcore's
conv+linear+matmul MAC ratio of the compact model, the run's `macs_ratio`; `ok` means within
±0.03 of the target with output shape (1, 10). A refusal is the one-line error a run would give
before any work. The table is rewritten after every model, so an interrupted run keeps its rows.
With `--source timm` the models come from `model=timm` instead (named with --models).
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import signal
import sys
import time
from pathlib import Path

import torch
import torchvision

from benchmarks.allocation import l1_score, provenance
from harness.errors import ConfigError, PruneBenchError
from harness.run.measure import count_macs
from harness.structure import (
    CostModel,
    Plan,
    allocate,
    allocation_target,
    apply_plan,
    check_prunable,
    loosest_plan,
    score_groups,
)
from tasks.classification.models.factories import timm_model, torchvision_model

CLASSES = 10


class ModelTimeout(Exception):
    """--model-timeout passed (a shared machine can be very slow)."""


def _alarm(signum, frame):
    raise ModelTimeout


FALLBACK_SIZE = 224


SOURCES = {"torchvision": torchvision_model, "timm": timm_model}


def build(name: str, size: int, source: str = "torchvision") -> tuple[torch.nn.Module, int]:
    make = SOURCES[source]
    try:
        return make(name, num_classes=CLASSES, input_size=size), size
    except ConfigError as e:
        if "cannot run on" not in str(e) or size == FALLBACK_SIZE:
            raise
        return make(name, num_classes=CLASSES, input_size=FALLBACK_SIZE), FALLBACK_SIZE


def num_params(name: str, source: str = "torchvision") -> int:
    """Parameter count from torchvision's weights metadata (1000 classes), without building;
    0 (unknown) for timm, whose models are named one by one with --models."""
    if source != "torchvision":
        return 0
    return max(w.meta.get("num_params", 0) for w in torchvision.models.get_model_weights(name))


def prune_one(name: str, args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(0)
    start = time.perf_counter()
    row: dict[str, object] = {"model": name}
    params = num_params(name, args.source)
    if params > args.max_params * 1e6:
        row["status"] = (
            f"not run here: {params / 1e6:.0f} M parameters > --max-params {args.max_params:g} M "
            "(shared 23 GiB machine)"
        )
        row["seconds"], row["peak_rss_gib"] = (
            "-",
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        )
        return row
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(args.model_timeout)
    try:
        model, size = build(name, args.size, args.source)
        model.eval()
        row["size"] = size
        example = torch.randn(1, 3, size, size)
        structure = check_prunable(model, example)
        cost = CostModel(structure)
        base = count_macs(model, (3, size, size)).macs
        target = allocation_target(args.target, measured=base, analytic=cost.base_macs)
        scores = score_groups(model, structure, l1_score)

        def allocate_to(t: float) -> Plan:
            return allocate(cost, scores, min(1.0, t), floor=0.05, min_channels=1)

        if target == args.target:
            plan = allocate_to(target)
        else:  # as a run does where the cost model cannot see every MAC
            plan = loosest_plan(
                allocate_to, target, model, structure, target=args.target,
                shape=(3, size, size), base=base,
            )  # fmt: skip
        apply_plan(model, structure, plan)
        with torch.no_grad():
            shape = tuple(model(example).shape)
        ratio = count_macs(model, (3, size, size)).macs / base
        ok = abs(ratio - args.target) <= 0.03 and shape == (1, CLASSES)
        row.update(
            groups=len(scores),
            units=sum(len(s) for s in scores.values()),
            ratio=f"{ratio:.3f}",
            status="ok" if ok else f"FAILED: ratio {ratio:.3f}, output {shape}",
        )
    except ModelTimeout:
        row["status"] = f"not finished within --model-timeout {args.model_timeout} s here"
    except PruneBenchError as e:
        row["status"] = f"refused: {e}"
    except Exception as e:  # a crash is a bug: recorded, and the zoo goes on
        row["status"] = (
            f"CRASH: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        )
    finally:
        signal.alarm(0)
    row["seconds"] = f"{time.perf_counter() - start:.1f}"
    row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def write(rows: list[dict[str, object]], names: list[str], args, header: list[str]) -> None:
    done = sum(1 for r in rows if r["status"] == "ok")
    refused = sum(1 for r in rows if str(r["status"]).startswith("refused"))
    skipped = sum(1 for r in rows if str(r["status"]).startswith("not "))
    lines = [
        *header,
        f"{len(rows)} of {len(names)} models: {done} pruned to {args.target} ± 0.03, "
        f"{refused} refused, {skipped} not run or not finished here, "
        f"{len(rows) - done - refused - skipped} failed.",
        "",
        "| model | input | groups | units | ratio | seconds | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = str(r["status"]).replace("|", "/")
        lines.append(
            f"| {r['model']} | {r.get('size', '')} | {r.get('groups', '')} | "
            f"{r.get('units', '')} | {r.get('ratio', '')} | {r['seconds']} | {status} |"
        )
    if rows:
        top = max(rows, key=lambda r: float(r["peak_rss_gib"]))
        grew = [(float(b["peak_rss_gib"]) - float(a["peak_rss_gib"]), b["model"]) for a, b in
                zip([{"peak_rss_gib": 0.0}, *rows], rows, strict=False)]  # fmt: skip
        lines += [
            "",
            f"Peak resident memory of the whole zoo process: {float(top['peak_rss_gib']):.2f} GiB "
            f"(the high-water mark rose most at {max(grew)[1]}, by {max(grew)[0]:.2f} GiB).",
        ]
    args.out.write_text(args.before + "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model-timeout", type=int, default=300, help="seconds per model")
    p.add_argument("--max-params", type=float, default=200.0, help="skip larger models (M)")
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--source", choices=sorted(SOURCES), default="torchvision")
    p.add_argument("--out", type=Path, default=Path("results/zoo.md"))
    p.add_argument(
        "--block",
        default=None,
        help="append to --out as a section with this title (a rerun of some models, with its "
        "own command and provenance) instead of rewriting it",
    )
    args = p.parse_args()
    args.before = ""
    if args.block:
        args.before = f"{args.out.read_text().rstrip()}\n\n## {args.block}\n\n"
    torch.set_num_threads(args.threads)
    if args.source != "torchvision" and not args.models:
        p.error(f"--source {args.source} needs --models")
    names = args.models or sorted(
        torchvision.models.list_models(module=torchvision.models), key=num_params
    )  # smallest first
    header = [
        *([] if args.block else [f"# {args.source} zoo: pruned to a MAC target, or refused", ""]),
        f"Command: `PYTHONPATH=. {f'nice -n {os.nice(0)} ' if os.nice(0) else ''}python "
        f"{shlex.join(sys.argv)}`  ",
        f"Provenance: {provenance()}, {args.threads} thread(s), shared machine (times inflated "
        "by other jobs).  ",
        f"Setup: random weights (seed 0), {CLASSES} classes, input 3×{args.size}×{args.size} "
        f"(224 where the model cannot run at {args.size}), l1 scores, uniform allocation to "
        f"{args.target} MACs, floor 0.05; ratio = fvcore's conv+linear+matmul MACs of the "
        "compact model over the original's (a run's macs_ratio); seconds = build + structure + "
        "two fvcore counts + scores + allocation + physical pruning + one forward. No GPU in "
        "this session.",
        "",
    ]
    rows: list[dict[str, object]] = []
    for name in names:
        rows.append(prune_one(name, args))
        print(f"{name}: {rows[-1]['status'][:100]} ({rows[-1]['seconds']} s)", flush=True)
        write(rows, names, args, header)


if __name__ == "__main__":
    main()
