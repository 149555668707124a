#!/usr/bin/env bash
# ResNet-20 / CIFAR-10 (JPEG copy) sweep on CPU with a SMALL protocol (not the paper's):
# 200 train + 100 test images per class, 2 epochs one-cycle (cpu_small, batch 32, lr 0.05),
# seeds 0,1,2, three of the paper's sparsities (1 - 0.8**k, k = 6, 14, 18), 7 methods + dense.
# Writes benchmarks/results/sweep_resnet20_cpu_small.{json,png,md,csv}. Re-running resumes.
set -euo pipefail
export OMP_NUM_THREADS=1 PXPRUNE_DATA=${PXPRUNE_DATA:-../shared/data}
OUT=${OUT:-sweeps/resnet20_cifar10_cpu_small}
pxprune sweep --model resnet20 --dataset cifar10 \
  --methods px,snip,grasp,synflow,ntksap,random,magnitude,dense \
  --sparsities 0.737856,0.95601953,0.98198627 --seeds 0,1,2 \
  --recipe cpu_small --epochs 2 --batch-size 32 --lr 0.05 \
  --train-per-class 200 --test-per-class 100 --device cpu --no-progress --out "$OUT"
R=benchmarks/results/sweep_resnet20_cpu_small
pxprune report "$OUT" \
  --title "ResNet-20 / CIFAR-10 (JPEG copy), CPU small protocol (not the paper's)" \
  --results "$R.json"
cp "$OUT/report.md" "$R.md"; cp "$OUT/report.png" "$R.png"; cp "$OUT/report.csv" "$R.csv"
