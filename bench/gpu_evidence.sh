#!/bin/sh
# What bounds each of issue 9's targets, one call on a GPU machine (after a build in build-gpu and
# `build-gpu/mambac init --preset 130m --seed 0 -o /tmp/m130`, as bench/gpu_decode.sh's check phase leaves them):
# the prefill's time by part of the forward at 1 and 16 x 2048 (bf16 weights and products), the scan kernel's
# time and bandwidth with Nsight Compute's speed-of-light, warp-state and occupancy sections, and the per-kernel
# decode breakdown at batch 1 and 64 (bench/ncu_decode.sh). Logs under $OUT (or ./evidence_logs).
#   usage: sh bench/gpu_evidence.sh
set -u
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root" || exit 1
logs=${OUT:-$root/evidence_logs}; mkdir -p "$logs"; E=$logs/evidence.txt; B=build-gpu
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$E"
echo "== prefill by part of the forward (bf16 weights, bf16 products)" >> "$E"
timeout 60 $B/mambac bench -m /tmp/m130 --backend cuda -p 2048 -n 0 -b 1,16 --dtype bf16 --precision bf16 -r 3 \
    --profile >> "$E" 2>&1
echo "== scan kernel, 8 x 1536 x 2048 x 16" >> "$E"
timeout 30 $B/bench_scan_cuda >> "$E" 2>&1
timeout 90 ncu --kernel-name regex:scan_par_fwd --launch-skip 3 --launch-count 1 --section SpeedOfLight \
    --section WarpStateStats --section Occupancy $B/bench_scan_cuda 8 1536 2048 16 5 2>&1 |
    grep -vE "^==PROF==|^ *-{5}" >> "$E"
for b in 1 64; do
    sh "$root/bench/ncu_decode.sh" $b "$logs/ncu$b.csv" >> "$E" 2>&1
done
cat "$E"
