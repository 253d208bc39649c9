#!/bin/sh
# Per-kernel GPU time of decode steps at one batch size under Nsight Compute (kernels serialised: durations, not the
# gaps between them): 400 kernel launches after the prefill (generate prefills each of the batch's prompts alone,
# ~200 launches each) on build-gpu/mambac and /tmp/m130 (bf16 weights and products); the program's own output (ids)
# goes to /dev/null so that only ncu's CSV (kept as CSV) is parsed: totals per kernel and grid, divided by the
# number of steps seen (one sample kernel a step), onto stdout (bench/ncu_sum.py).
#   usage: sh bench/ncu_decode.sh BATCH CSV
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
b=$1 csv=$2
timeout 150 ncu --metrics gpu__time_duration.sum,dram__bytes.sum --cache-control none --clock-control none \
    --launch-skip $((b * 200 + 1500)) --launch-count 400 --csv --log-file "$csv" \
    "$root/build-gpu/mambac" generate -m /tmp/m130 --backend cuda --dtype bf16 --precision bf16 \
    --ids 1,2,3,4,5,6,7,8 -n 60 --no-eos --batch "$b" --greedy -q --print-ids > /dev/null 2>&1
python3 "$root/bench/ncu_sum.py" "$csv" "decode batch $b" sample
