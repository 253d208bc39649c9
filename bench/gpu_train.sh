#!/bin/sh
# Training speed on a GPU, one build against another in the same call (bench/RESULTS.md's CUDA training rows):
# forward + backward (BUILD/bench_train, median of 10 after a warm-up) and whole steps (`mambac train|finetune`:
# batching, forward, backward, clipping, AdamW), whose tokens/s are taken between the log records of steps 10 and
# the last, so the first steps' one-time costs (module loading, cuBLAS heuristics, workspaces) are left out, as the
# peer script leaves out its warm-up steps. Needs /tmp/m130 (`mambac init --preset 130m --seed 0 -o /tmp/m130`).
#   usage: [JOBS="bf16 16 1024;lora 4 64"] sh bench/gpu_train.sh BUILD_DIR LABEL   (to stdout; ids files are made
#          in /tmp on first use)
set -u
B=$1 label=$2
for l in 1024 64; do
    [ -f /tmp/ids$l.jsonl ] || python3 -c "
import json, random
random.seed(0)
for _ in range(4000 if $l == 64 else 1000):
    print(json.dumps({'input_ids': [random.randrange(50280) for _ in range($l)]}))" > /tmp/ids$l.jsonl
done
rate() { # tokens/s between the log records of step 10 and the last: rate LOG BATCH LENGTH
    python3 -c "
import json, sys
r = [json.loads(x) for x in open('$1')]
a, b = r[0], r[-1]
print('%.0f tokens/s over steps %d-%d (whole run from step 1: %.0f)' % (
    (b['step'] - a['step']) * $2 * $3 / (b['elapsed_s'] - a['elapsed_s']), a['step'] + 1, b['step'],
    b['tokens_per_s']))"
}
jobs=${JOBS:-"bf16 4 1024;bf16 16 1024;lora 4 1024"} # KIND BATCH LENGTH, ';' between jobs; KIND bf16 or lora
IFS=';'
for job in $jobs; do
    IFS=' '
    set -- $job
    kind=$1 bt=$2 len=$3
    if [ "$kind" = lora ]; then
        fb="-p f32 -r 8"; cmd="finetune --lora-r 8"; steps=60
    else
        fb="-p bf16"; cmd="train --precision bf16"; steps=$((bt == 4 ? 60 : 30))
    fi
    printf '%s %s %s x %s: fwd+bwd ' "$label" "$kind" "$bt" "$len"
    timeout 120 "$B/bench_train" -m /tmp/m130 -B cuda -n 10 -b "$bt" -l "$len" $fb 2>&1 | tail -1
    rm -rf /tmp/run_train
    (while sleep 0.1; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done) > /tmp/mem.txt &
    sampler=$!
    timeout 180 "$B/mambac" $cmd -m /tmp/m130 --backend cuda --data /tmp/ids$len.jsonl --batch-size "$bt" \
        --max-length "$len" --max-steps $steps --save-steps 0 --logging-steps 10 --no-shuffle -q \
        --output-dir /tmp/run_train > /tmp/run_train.log 2>&1 || tail -3 /tmp/run_train.log
    kill $sampler
    printf '%s %s %s x %s: whole steps, peak %s MiB (nvidia-smi), ' "$label" "$kind" "$bt" "$len" \
        "$(sort -n /tmp/mem.txt | tail -1)"
    rate /tmp/run_train/log.jsonl "$bt" "$len"
done
