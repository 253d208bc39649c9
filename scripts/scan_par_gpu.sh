#!/bin/sh
# One device run for the parallel selective scan (src/kernels/cuda/scan_par.cu): build, the two CUDA scan tests,
# compute-sanitizer over them and over a small benchmark shape (memcheck; racecheck, synccheck and initcheck for the
# shared-memory tiles and barriers), then the benchmark at the training shapes (old tiled kernels vs every parallel
# configuration, each checked against the reference). Logs go to $OUT (or ./scan_par_logs); a summary at the end.
#   usage: sh scripts/scan_par_gpu.sh
set -u
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root" || exit 1
logs=${OUT:-$root/scan_par_logs}; mkdir -p "$logs"
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
status=0
step() { # name, command...: runs it, keeps its log, reports the exit code
    name=$1; shift
    start=$(date +%s)
    "$@" > "$logs/$name.log" 2>&1; rc=$?
    echo "$name: rc=$rc ($(( $(date +%s) - start )) s)" | tee -a "$logs/summary.txt"
    [ $rc -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$logs/summary.txt"
step build sh -c 'cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON -DCMAKE_CUDA_ARCHITECTURES=90 &&
    cmake --build build-cuda -j16'
step test_cuda_kernels ./build-cuda/tests/test_cuda_kernels
step test_cuda_bwd_scan ./build-cuda/tests/test_cuda_bwd_scan
step memcheck_kernels "$san" --tool memcheck --error-exitcode 1 ./build-cuda/tests/test_cuda_kernels
step memcheck_bwd_scan "$san" --tool memcheck --error-exitcode 1 ./build-cuda/tests/test_cuda_bwd_scan
for tool in racecheck synccheck initcheck; do # a small shape: every variant once (2 reps each), checked
    step "${tool}_bench" "$san" --tool $tool --error-exitcode 1 ./build-cuda/bench_scan_bwd_cuda 2 300 72 16 2
    step "${tool}_bench_n33" "$san" --tool $tool --error-exitcode 1 ./build-cuda/bench_scan_bwd_cuda 1 200 40 33 2
done
step bench ./build-cuda/bench_scan_bwd_cuda            # Bt 4 and 16, L 1024, E 1536, N 16
step bench_n64 ./build-cuda/bench_scan_bwd_cuda 4 1024 1536 64 10
step bench_fwd_long ./build-cuda/bench_scan_cuda        # the forward through the op table, Bt 8, L 2048
step ctest sh -c 'cd build-cuda && ctest -j8 --output-on-failure'
echo "---- bench" >> "$logs/summary.txt"; cat "$logs/bench.log" "$logs/bench_n64.log" "$logs/bench_fwd_long.log" >> "$logs/summary.txt"
grep -h "worst" "$logs/test_cuda_kernels.log" "$logs/test_cuda_bwd_scan.log" >> "$logs/summary.txt"
cat "$logs/summary.txt"
exit $status
