#!/bin/sh
# Per-kernel GPU time of training steps under Nsight Compute (kernels serialised: durations, not the gaps between
# them): build-gpu/bench_train's warm-up and one step (forward that keeps activations, loss, backward; no optimizer)
# on /tmp/m130, every launch profiled, totals per kernel and grid divided by the two steps (bench/ncu_sum.py).
#   usage: sh bench/ncu_train.sh BATCH LENGTH PRECISION CSV [RANK]   (RANK: LoRA rank; all weights without it;
#          NCU_TIMEOUT: seconds before ncu is stopped, 300)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
b=$1 l=$2 p=$3 csv=$4
lora=""
[ $# -ge 5 ] && lora="-r $5"
timeout "${NCU_TIMEOUT:-300}" ncu --metrics gpu__time_duration.sum,dram__bytes.sum --cache-control none --clock-control none \
    --csv --log-file "$csv" "$root/build-gpu/bench_train" -m /tmp/m130 -B cuda -n 1 -b "$b" -l "$l" -p "$p" $lora \
    > /dev/null 2>&1
python3 "$root/bench/ncu_sum.py" "$csv" "train $b x $l $p${lora:+ lora}" 2 25
