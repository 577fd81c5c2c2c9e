"""Training precision when `amp` is left on auto: bf16 autocast where it pays, fp32 elsewhere.

Why: on CUDA bf16 autocast is the standard. On a CPU, fp32 training of a CIFAR ResNet-20 already
runs at 52–62 % (eager) and 70–84 % (compiled) of the CPU's fp32 matrix-multiply peak, so no fp32
setting can train 2× faster than eager there (results/benchmarks/compile_cpu_roofline.txt). A
CPU with native bf16 (AVX-512 BF16 or AMX) has twice that peak: bf16 autocast trains a ResNet-20
epoch 2.0–2.4× faster than fp32 eager (a whole run 1.9×), at test top-1 within the run-to-run spread
that fp32 compilation alone causes (results/cpu_precision.md, 3 seeds). It does not pay
everywhere:

- tiny inputs (8×8 digits) are bound by per-op overhead, not arithmetic, so the casts only add
  time: auto keeps fp32 below AUTO_BF16_MIN_VALUES values per input image (a CIFAR image);
- a restoration task's PSNR is read from the network's output pixels, which bf16 rounds to 8 bits
  of mantissa: a task opts in with `Task.cpu_bf16` (classification does, restoration does not);
- a CPU without native bf16 emulates it, slower than fp32.

The choice is made once per run from the configuration (task, input shape, device), so every
method of a comparison on the same data trains at the same precision, and the record says which
(`precision`: `Runtime.precision`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["AUTO_BF16_MIN_VALUES", "cpu_bf16_pays", "native_bf16_cpu"]

#: values per input image from which auto trains in bf16 on a native-bf16 CPU: a CIFAR image
#: (3×32×32), the size measured to gain; digits' 1×8×8 (64 values) stays in fp32
AUTO_BF16_MIN_VALUES = 3 * 32 * 32


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX tiles)."""
    cpu = torch.cpu
    return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


def cpu_bf16_pays(task_allows: bool, input_shape: Sequence[int]) -> bool:
    """Whether auto precision trains a run in bf16 on a CPU: the task allows it, its input images
    are large enough for arithmetic to dominate, and the CPU runs bf16 natively."""
    return task_allows and math.prod(input_shape) >= AUTO_BF16_MIN_VALUES and native_bf16_cpu()
