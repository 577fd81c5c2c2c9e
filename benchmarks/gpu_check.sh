#!/usr/bin/env bash
# One-command GPU check, for the day a GPU is lent (≈10 min on one GPU):
#   bash benchmarks/gpu_check.sh            # full: CIFAR-10 ResNet-56, bf16 autocast, channels_last
#   bash benchmarks/gpu_check.sh --tiny     # seconds on CPU: the same scripts on digits/ResNet-20
# Writes results/benchmarks/gpu_check-<mode>-<host>-<date>/ (one .txt per part + summary.md with
# the command, git SHA, dirty flag and hardware) and prints summary.md. Parts:
#   1. harness loop vs a bare PyTorch loop: epoch time and images/s (benchmarks/harness_overhead.py,
#      which also gives 4. pruned vs unpruned ResNet-56 latency at batch 1 and the --latency-batch)
#   2. DHP search step / plain step (benchmarks/dhp_step.py)
#   3. trials/hour with 1, 2, 4 workers of one study on one device (benchmarks/trials_per_hour.py)
#   5. eager vs compiled per phase (baseline training, fine-tuning a 0.5-pruned model, DHP search,
#      evaluation): images/s, compile time, break-even epochs (benchmarks/compile_speed.py, with
#      plain eager/channels_last/compiled loops beside `fit` in each training row: --bare; the
#      compiled loop replayed as CUDA graphs: --cuda-graphs; each loop's FLOP/s against the
#      GPU's peak GEMM rate: --roofline); part 1
#      also runs the compiled bare loop and compiled `fit` (--compiled)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mode=full
[ "${1:-}" = "--tiny" ] && mode=tiny
out=${GPU_CHECK_OUT:-results/benchmarks/gpu_check-$mode-$(hostname)-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
if [ "$mode" = full ]; then
  overhead=(--model resnet56 --data cifar10 --batch 128 --steps 390 --repeats 3 --latency-batch 256
            --compiled)
  compile=(--models resnet20 resnet56 mobilenetv2 vgg16 --steps 20 --rounds 3 --bare --cuda-graphs
           --roofline)
  dhp=(--model resnet56 --batch 64 --steps 20)
  tph=(--workers 1 2 4 --trials 8 -- data=cifar10 model=resnet20 train.epochs=5 finetune.epochs=2
       measure.latency=false)
else
  overhead=(--model resnet20 --data digits --batch 64 --steps 4 --repeats 1 --warmup 0
            --targets 0.5 --latency-batch 8 --latency-repeats 2 --rounds 1)
  compile=(--models resnet20 --phases eval --batch 8 --steps 1 --rounds 1 --roofline)
  dhp=(--model resnet20 --batch 8 --size 16 --steps 2)
  tph=(--workers 1 2 --trials 2 -- data=digits model=resnet20 train.epochs=1 finetune.epochs=1
       measure.latency=false study.n_startup_trials=1)
fi
"$PY" benchmarks/harness_overhead.py "${overhead[@]}" | tee "$out/harness_overhead.txt"
"$PY" benchmarks/dhp_step.py "${dhp[@]}" | tee "$out/dhp_step.txt"
"$PY" benchmarks/trials_per_hour.py --outputs "$out/tph-outputs" "${tph[@]}" | tee "$out/trials_per_hour.txt"
"$PY" benchmarks/compile_speed.py "${compile[@]}" | tee "$out/compile_speed.txt"
rm -rf "$out/tph-outputs"
dirty=$([ -n "$(git status --porcelain 2>/dev/null)" ] && echo dirty || echo clean)
gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU (CPU run)')")
{
  echo "# GPU check ($mode)"
  echo
  echo "command: bash benchmarks/gpu_check.sh ${1:-}"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') ($dirty tree)"
  echo "hardware: $gpu; $(nproc) CPU cores; torch $("$PY" -c 'import torch; print(torch.__version__)')"
  for part in harness_overhead dhp_step trials_per_hour compile_speed; do
    echo; echo "## $part"; echo; cat "$out/$part.txt"
  done
} > "$out/summary.md"
cat "$out/summary.md"
echo "gpu_check: wrote $out" >&2
