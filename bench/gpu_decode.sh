#!/bin/sh
# Decode-step changes on a GPU machine, one call: builds this tree and a baseline source tree side by side, runs
# the CUDA tests (with compute-sanitizer memcheck and racecheck on the kernel tests), then times decode
# through `mambac generate` (device sampling, greedy, bf16 weights, f32 and bf16 products, batch 1/16/64) for the
# baseline, this tree with programmatic dependent launch off (MAMBAC_PDL=0) and on. Logs under $OUT (or ./decode_logs).
#   usage: sh bench/gpu_decode.sh [BASE_DIR]   (default .dev/base; make it before the call with
#          mkdir -p .dev/base && git archive main | tar -x -C .dev/base, and carry it: the device's copy of the
#          repository has the working tree, not necessarily the history)
set -u
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root" || exit 1
base=${1:-.dev/base}; logs=${OUT:-$root/decode_logs}; mkdir -p "$logs"; S=$logs/summary.txt
log() { echo "[$(date +%T)] $*" | tee -a "$S"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$S"
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
for tool in memcheck racecheck; do
    timeout 200 "$san" --tool $tool --report-api-errors no --error-exitcode 1 build-gpu/tests/test_cuda_kernels > "$logs/$tool.log" 2>&1
    log "$tool test_cuda_kernels rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$logs/$tool.log")"
done
build-gpu/mambac init --preset 130m --seed 0 -o /tmp/m130 > /dev/null
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
# Per-kernel GPU time of decode steps under Nsight Compute (kernels serialised: durations, not the gaps between them),
# 171 kernel launches (one step of the 130m shape) after the prefill and a few steps; the program's own output (ids)
# goes to /dev/null so that only ncu's CSV is parsed.
for b in 1 64; do
    timeout 120 ncu --metrics gpu__time_duration.sum --launch-skip 2000 --launch-count 171 --csv --log-file "$logs/ncu$b.csv" \
        build-gpu/mambac generate -m /tmp/m130 --backend cuda --dtype bf16 --precision bf16 --ids 1,2,3,4,5,6,7,8 -n 40 \
        --no-eos --batch $b --greedy -q --print-ids > /dev/null 2>&1
    python3 - "$logs/ncu$b.csv" $b <<'PY' | tee -a "$S"
import collections, csv, sys
rows = list(csv.reader(open(sys.argv[1])))
head = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if head is None:
    sys.exit("ncu batch %s: no CSV header in %s" % (sys.argv[2], sys.argv[1]))
h = rows[head]; k, v, u = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
t, n = collections.defaultdict(float), collections.Counter()
scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}
for r in rows[head + 1:]:
    if len(r) == len(h):
        name = r[k].split("(")[0].split("<")[0][:50]
        t[name] += float(r[v].replace(",", "")) * scale.get(r[u], 1.0); n[name] += 1
print("ncu decode batch %s: %d kernels, %.1f us of kernel time" % (sys.argv[2], sum(n.values()), sum(t.values())))
for name, us in sorted(t.items(), key=lambda x: -x[1])[:10]:
    print("   %8.1f us %4d x %s" % (us, n[name], name))
PY
done
