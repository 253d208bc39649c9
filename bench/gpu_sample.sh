#!/bin/sh
# Device sampling (issue 9 §2.2) on a GPU machine: build, test (incl. compute-sanitizer), and time decode with the
# logits downloaded and sampled on the host (MAMBAC_HOST_SAMPLING=1, the path before this change) against sampling
# on the device (ids only come back), at batch 1, 16 and 64. Run from the repository root:  sh bench/gpu_sample.sh
# MODEL=path to time a real checkpoint (default: a random-weight 130m made by `mambac init`).
set -eu
B=build-cuda
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON -DCMAKE_CUDA_ARCHITECTURES=90
cmake --build $B -j"$(nproc)"

echo "== tests"
(cd $B && ctest --output-on-failure -R 'cuda_sample|cuda_kernels|test_generate|test_sampler|cli_generate')
(cd $B && ctest -j"$(nproc)" 2>&1 | tail -3)

echo "== compute-sanitizer (memcheck, racecheck, synccheck, initcheck) on the sample op tests"
export MC_FIXTURES="$PWD/tests/fixtures"
for tool in memcheck racecheck synccheck initcheck; do
    compute-sanitizer --tool $tool --error-exitcode 1 $B/tests/test_cuda_sample > /tmp/cs_$tool.log 2>&1 &&
        echo "$tool: clean" || { echo "$tool: FAILED (/tmp/cs_$tool.log)"; tail -30 /tmp/cs_$tool.log; }
done

MODEL=${MODEL:-/tmp/mambac-130m-random}
[ -f "$MODEL/config.json" ] || $B/mambac init --preset 130m -o "$MODEL"
IDS=1,2,3,4,5,6,7,8
echo "== forward only (mambac bench; unchanged by this branch: it downloads logits and samples nothing)"
$B/mambac bench -m "$MODEL" --backend cuda -p 0 -n 128 -b 1,16,64
echo "== decode through mc_generate: host sampling (before) vs device sampling (after); decode tok/s on stderr"
for mode in "--greedy" "--temperature 0.8 --top-k 50 --top-p 0.9 --seed 1" "--top-p 0.95 --repetition-penalty 1.2 --seed 2"; do
    for b in 1 16 64; do
        for host in 1 0; do
            printf '%-55s batch %2d %s: ' "$mode" $b "$([ $host = 1 ] && echo host  || echo device)"
            MAMBAC_HOST_SAMPLING=$host $B/mambac generate -m "$MODEL" --backend cuda --ids $IDS -n 128 --no-eos --print-ids \
                --batch $b $mode 2>&1 >/dev/null | grep -o 'decode [^|]*' | head -1
        done
    done
done
