"""The no-op floor of a restoration setting: the noisy input (denoising) or MATLAB-bicubic
upsampling of the LR (SR), scored by the task's own metric on the run's validation and test
images. A result is only as good as its gain over this.

    PYTHONPATH=. python benchmarks/restoration_floor.py task=denoise data=denoise_folders \\
        data.root=../shared/data data.sigma=70 data.val_crop=96 [--legacy-noise]

Takes the overrides of `prunebench run` (only task/data matter). `--legacy-noise` also scores the
noisy input as the code before issue 28 drew it (one noise stream running across a split's
images), to read tables made then. Prints a Markdown table and its provenance.
"""

from __future__ import annotations

import argparse
import json

import torch

import tasks  # noqa: F401  (registers tasks and datasets)
from harness.config import compose
from harness.registry import TASKS
from harness.runtime.device import pick_runtime
from harness.runtime.provenance import provenance, provenance_lines
from harness.train import evaluate
from tasks.denoise.data import add_noise
from tasks.restoration import ImageBatches


def legacy_noisy(split: ImageBatches, sigma: float, seed: int) -> ImageBatches:
    """The split's clean images with the pre-issue-28 noise: one CPU stream from `seed`."""
    g = torch.Generator().manual_seed(seed)
    items = [(add_noise(clean.float() / 255.0, sigma, g), clean) for _, clean in split.items]
    return ImageBatches(items, split.names, split.groups)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="prunebench overrides (task=…, data.…=…)")
    ap.add_argument("--legacy-noise", action="store_true", help="also the pre-issue-28 noise")
    args = ap.parse_args()
    cfg = compose(args.overrides)
    task = TASKS.get(cfg.task.name)(cfg.task)
    noop = task.noop_model()
    if noop is None:
        raise SystemExit(f"task {cfg.task.name} has no no-op floor")
    data = task.build_data(cfg.data, seed=int(cfg.seed))
    cpu = pick_runtime("cpu")
    rows = {
        "val": evaluate(task, noop, data.val, cpu),
        "test": evaluate(task, noop, data.test, cpu),
    }
    if args.legacy_noise and cfg.task.name == "denoise":
        sigma, seed = float(cfg.data.sigma), int(cfg.data.get("noise_seed", 0))
        rows["val (legacy noise)"] = evaluate(
            task, noop, legacy_noisy(data.val, sigma, seed + 1), cpu
        )
        rows["test (legacy noise)"] = evaluate(
            task, noop, legacy_noisy(data.test, sigma, seed), cpu
        )
    what = "noisy input" if cfg.task.name == "denoise" else "MATLAB bicubic upsampling"
    keys = sorted({k for r in rows.values() for k in r})
    print(f"| split ({what}) | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for split, scores in rows.items():
        print(
            f"| {split} | " + " | ".join(f"{scores.get(k, float('nan')):.4f}" for k in keys) + " |"
        )
    print()
    print("\n".join(provenance_lines(provenance([int(cfg.seed)]))))
    print(json.dumps({s: r for s, r in rows.items()}))


if __name__ == "__main__":
    main()
