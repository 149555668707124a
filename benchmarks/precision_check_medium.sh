#!/usr/bin/env bash
# bf16 vs fp32 training in the CPU medium protocol (sweep_resnet20_cpu_medium.sh: 1,000 training
# images per class, 4 epochs one-cycle to lr 0.2, batch 128, tested on 300 per class), seeds 0
# and 1, dense and magnitude at 98.20 %: the same cells once with --precision fp32 and once with
# --precision bf16 (both channels_last, the CPU default), one cell at a time on 1 thread.
# Writes benchmarks/results/precision_check_medium_{fp32,bf16}.{json,md}. Re-running resumes.
set -euo pipefail
export OMP_NUM_THREADS=1 PXPRUNE_DATA=${PXPRUNE_DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
ROOT=${ROOT:-sweeps/precision_check_medium}
for precision in fp32 bf16; do
  "$PY" -m pxprune sweep --model resnet20 --dataset cifar10 --methods 'dense,magnitude' \
    --sparsities 0.98198627 --seeds 0,1 --recipe cpu_small --precision "$precision" \
    --train-per-class 1000 --test-per-class 300 --jobs 1 --threads 1 --device cpu \
    --no-progress --out "$ROOT/$precision"
  R=benchmarks/results/precision_check_medium_$precision
  "$PY" -m pxprune report "$ROOT/$precision" --out "$ROOT/$precision/report" --results "$R.json" \
    --title "CPU medium protocol, training precision $precision (channels_last)"
  cp "$ROOT/$precision/report/report.md" "$R.md"
done
