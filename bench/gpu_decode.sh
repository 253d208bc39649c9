#!/bin/sh
# Decode-step changes on a GPU machine, one call: builds this tree and a baseline source tree side by side, runs
# the CUDA tests (with compute-sanitizer memcheck and racecheck on the kernel tests), then times decode
# through `mambac generate` (device sampling, greedy, bf16 weights, f32 and bf16 products, batch 1/16/64) for the
# baseline, this tree with programmatic dependent launch off (MAMBAC_PDL=0) and on. Logs under $OUT (or ./decode_logs).
#   usage: sh bench/gpu_decode.sh [BASE_DIR [all|check|time]]   (BASE_DIR default .dev/base; make it before the call
#          with mkdir -p .dev/base && git archive main | tar -x -C .dev/base, and carry it: the device's copy of the
#          repository has the working tree, not necessarily the history). check: build and tests only; time: the
#          timings and the breakdown only (after a check in the same call); all (default): both.
set -u
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root" || exit 1
base=${1:-.dev/base}; phase=${2:-all}; logs=${OUT:-$root/decode_logs}; mkdir -p "$logs"; S=$logs/summary.txt
log() { echo "[$(date +%T)] $*" | tee -a "$S"; }
if [ "$phase" != time ]; then
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON -DCMAKE_CUDA_ARCHITECTURES=90"
cmake -S . -B build-gpu $cfg > "$logs/build.log" 2>&1 && cmake --build build-gpu -j"$(nproc)" >> "$logs/build.log" 2>&1
log "built this tree: rc=$?"
cmake -S "$base" -B /tmp/mc-base-build $cfg -DBUILD_TESTING=OFF > "$logs/base_build.log" 2>&1 &&
    cmake --build /tmp/mc-base-build -j"$(nproc)" --target mambac_cli >> "$logs/base_build.log" 2>&1
log "built $base: rc=$?"
export MC_FIXTURES="$root/tests/fixtures"
(cd build-gpu && timeout 200 ctest -j8 --output-on-failure > "$logs/ctest.log" 2>&1); log "ctest rc=$?"
grep -E "tests passed|\*\*\*Failed|Timeout" "$logs/ctest.log" | tee -a "$S"
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
# racecheck on the decode-step kernels' tests only (the fused input on the GEMV kernel, the step scan): the whole
# program takes minutes under it
for tool in memcheck racecheck; do
    filter=; [ $tool = racecheck ] && filter="${RACE_FILTER:-*_step*}"
    timeout 200 "$san" --tool $tool --report-api-errors no --error-exitcode 1 build-gpu/tests/test_cuda_kernels $filter \
        > "$logs/$tool.log" 2>&1
    log "$tool test_cuda_kernels rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$logs/$tool.log")"
done
build-gpu/mambac init --preset 130m --seed 0 -o /tmp/m130 > /dev/null
fi
[ "$phase" = check ] && exit 0
gen() { # label binary env...
    label=$1 bin=$2; shift 2
    for p in f32 bf16; do for b in 1 16 64; do
        r=$(env "$@" timeout 30 "$bin" generate -m /tmp/m130 --backend cuda --dtype bf16 --precision $p \
            --ids 1,2,3,4,5,6,7,8 -n 512 --no-eos --print-ids --batch $b --greedy 2>&1 >/dev/null | grep -o 'decode [^|]*')
        log "$label, $p products, batch $b: $r"
    done; done
}
gen "$base" /tmp/mc-base-build/mambac MAMBAC_PDL=0
gen "this tree, PDL off" build-gpu/mambac MAMBAC_PDL=0
gen "this tree, PDL on" build-gpu/mambac MAMBAC_PDL=1
gen "$base (again)" /tmp/mc-base-build/mambac MAMBAC_PDL=0
# Per-kernel GPU time of decode steps at batch 1 and 64 (bench/ncu_decode.sh).
for b in 1 64; do
    sh "$root/bench/ncu_decode.sh" $b "$logs/ncu$b.csv" 2>&1 | tee -a "$S"
done
