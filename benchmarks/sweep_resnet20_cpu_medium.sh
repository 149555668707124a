#!/usr/bin/env bash
# ResNet-20 / CIFAR-10 (JPEG copy) on CPU with DESIGN §3's "CPU-sized check" protocol (not the
# paper's): the first 1,000 training images of each class, 4 epochs, batch 128, SGD Nesterov
# 0.9, wd 5e-4, one-cycle to lr 0.2, crop+flip (recipe cpu_small), tested on the first 300 test
# images of each class; the two highest paper sparsities where the small sweep separated the
# methods; seeds $SEEDS (0,1 for the committed result); two cells at a time, one thread each.
# Writes benchmarks/results/sweep_resnet20_cpu_medium.{json,png,md,csv}. Re-running resumes.
set -euo pipefail
export OMP_NUM_THREADS=1 PXPRUNE_DATA=${PXPRUNE_DATA:-../shared/data}
OUT=${OUT:-sweeps/resnet20_cifar10_cpu_medium}
SEEDS=${SEEDS:-0}
.venv/bin/pxprune sweep --model resnet20 --dataset cifar10 \
  --methods 'px[variant=bound],px,snip,grasp,synflow,ntksap,random,magnitude,dense' \
  --sparsities 0.95601953,0.98198627 --seeds "$SEEDS" \
  --recipe cpu_small --train-per-class 1000 --test-per-class 300 \
  --jobs 2 --threads 1 --device cpu --no-progress --out "$OUT"
.venv/bin/pxprune report "$OUT" \
  --title "ResNet-20 / CIFAR-10 (JPEG copy), CPU medium protocol (not the paper's)" \
  --results benchmarks/results/sweep_resnet20_cpu_medium.json \
  --note "DESIGN §3's CPU-sized protocol, NOT the paper's: 4 epochs on 10,000 training images \
(1,000/class), one-cycle to lr 0.2, tested on 3,000 (300/class). DESIGN's prototype of this \
protocol gave at 98.2 %: Magnitude 45.4, PX 43.9, SynFlow 41.7, SNIP 39.6, Random 33.4 %."
for ext in md png csv; do cp "$OUT/report.$ext" "benchmarks/results/sweep_resnet20_cpu_medium.$ext"; done
