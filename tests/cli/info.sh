#!/bin/sh
# mambac info on every fixture model: the parameter count equals transformers', config fields and memory lines.
. "$(dirname "$0")/helpers"

n=0
for json in "$EXPECT"/*.json; do
    params=$(compact "$json" | sed -n 's/.*"n_params":\([0-9]*\).*/\1/p')
    model=$(compact "$json" | sed -n 's/.*"model":"\([^"]*\)".*/\1/p')
    [ -n "$params" ] && [ -n "$model" ] || continue
    run 0 info -m "$MC_FIXTURES/$model"
    out_has "parameters: $params"
    for key in vocab_size: hidden_size: num_hidden_layers: weight_bytes: resident_bytes: state_bytes_per_sequence:; do
        out_has "$key"
    done
    n=$((n + 1))
done
[ "$n" -gt 0 ] || skip "no model fixtures with n_params"
run 0 info -m "$MODELS/tiny-neox"
out_has "parameters_bf16: "
run 0 info -m "$MODELS/tiny-neox" --backend ref --threads 1
out_has "backend: ref"
out_has "threads: 1"
expect_usage info "not a backend" -m "$MODELS/tiny-neox" --backend gpu
expect_usage info "out of range" -m "$MODELS/tiny-neox" --threads 0
expect_usage info "not a weight dtype" -m "$MODELS/tiny-neox" --dtype int4
expect_error info "/nonexistent-model" -m /nonexistent-model
expect_usage info "usage:" -m "$MODELS/tiny-neox" --bogus
exit 0
