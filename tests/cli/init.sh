#!/bin/sh
# mambac init from a fixture's config.json (the presets write 130m+ parameters, too big for this suite): the folder
# loads, the same seed writes the same bytes and another seed other weights, --dtype is honoured, and bad input
# gives one message with the exit code of its kind (2 bad usage, 1 runtime).
. "$(dirname "$0")/helpers"

CFG="$MODELS/k1-rank1/config.json"
[ -f "$CFG" ] || skip "k1-rank1 fixture absent"

# A loadable folder: config.json + model.safetensors; info and generate work on it; one summary line on stderr.
run 0 init --config "$CFG" --seed 7 -o "$TMP/a"
[ -f "$TMP/a/config.json" ] && [ -f "$TMP/a/model.safetensors" ] || fail "init did not write config.json and model.safetensors"
[ ! -s "$OUT" ] || fail "init printed to stdout"
err_has "seed 7"
[ "$(wc -l <"$ERR" | tr -d ' ')" -eq 1 ] || fail "init wrote more than one line to stderr"
params=$(sed -n 's/^init: \([0-9]*\) parameters.*/\1/p' "$ERR")
run 0 info -m "$TMP/a"
out_has "parameters: $params"
out_has "parameters_f32: $params"
# the shape is the config's: info of the fixture itself gives the same parameter count and sizes
grep -E '^(parameters|vocab_size|hidden_size|intermediate_size|state_size|num_hidden_layers):' "$OUT" >"$TMP/shape.new"
run 0 info -m "$MODELS/k1-rank1"
grep -E '^(parameters|vocab_size|hidden_size|intermediate_size|state_size|num_hidden_layers):' "$OUT" >"$TMP/shape.fix"
cmp -s "$TMP/shape.new" "$TMP/shape.fix" || fail "the initialised model's shape differs from its config's model"
run 0 generate -m "$TMP/a" --ids 1,2,3 -n 3 --print-ids -q
grep -q '^1,2,3,[0-9]*,[0-9]*,[0-9]*$' "$OUT" || fail "generate on the initialised model printed $(cat "$OUT")"

# Deterministic: the same seed gives the same bytes; another seed other weights (same config.json).
run 0 init --config "$CFG" --seed 7 -o "$TMP/b"
cmp -s "$TMP/a/model.safetensors" "$TMP/b/model.safetensors" || fail "--seed 7 twice wrote different weights"
cmp -s "$TMP/a/config.json" "$TMP/b/config.json" || fail "--seed 7 twice wrote different config.json"
run 0 init --config "$CFG" --seed 8 -o "$TMP/c"
! cmp -s "$TMP/a/model.safetensors" "$TMP/c/model.safetensors" || fail "--seed 7 and --seed 8 wrote the same weights"
cmp -s "$TMP/a/config.json" "$TMP/c/config.json" || fail "the seed changed config.json"
# the default seed is 0
run 0 init --config "$CFG" -o "$TMP/d0"
run 0 init --config "$CFG" --seed 0 -o "$TMP/d1"
cmp -s "$TMP/d0/model.safetensors" "$TMP/d1/model.safetensors" || fail "no --seed differs from --seed 0"
# writing into an existing model folder replaces it
run 0 init --config "$CFG" --seed 7 -o "$TMP/c"
cmp -s "$TMP/a/model.safetensors" "$TMP/c/model.safetensors" || fail "init over an existing folder did not replace it"

# --dtype: int8 and bf16 are stored as such; the f32 and --dtype f32 files are the same model.
run 0 init --config "$CFG" --seed 7 --dtype int8 -o "$TMP/i8"
run 0 info -m "$TMP/i8"
out_has "parameters: $params"
out_has "parameters_int8: "
run 0 init --config "$CFG" --seed 7 --dtype bf16 -o "$TMP/bf"
run 0 info -m "$TMP/bf"
out_has "parameters_bf16: "
run 0 init --config "$CFG" --seed 7 --dtype f32 -o "$TMP/f32"
cmp -s "$TMP/a/model.safetensors" "$TMP/f32/model.safetensors" || fail "--dtype f32 differs from the default"

# Bad usage (exit 2): no -o, neither or both of --preset/--config, an unknown preset, a bad seed or dtype.
expect_usage init "-o DIR and exactly one of --preset or --config" --config "$CFG"
expect_usage init "-o DIR and exactly one of --preset or --config" -o "$TMP/x"
expect_usage init "-o DIR and exactly one of --preset or --config" --preset 130m --config "$CFG" -o "$TMP/x"
expect_usage init "preset \"13m\" is unknown (130m, 370m" --preset 13m -o "$TMP/x"
expect_usage init "not an unsigned integer" --config "$CFG" --seed -1 -o "$TMP/x"
expect_usage init "not a weight dtype" --config "$CFG" --dtype int4 -o "$TMP/x"
expect_usage init "usage:" --config "$CFG" -o "$TMP/x" --bogus
expect_usage init "--preset needs a value" --preset
# none of these wrote anything (the 130m preset would be ~500 MB)
[ ! -e "$TMP/x" ] || fail "a usage error created the output folder"

# Runtime errors (exit 1, one line naming the path): a missing or invalid config, an output that cannot be made.
expect_error init "/nonexistent.json" --config /nonexistent.json -o "$TMP/x"
expect_error init "not valid JSON" --config "$MODELS/k1-rank1/model.safetensors" -o "$TMP/x"
: >"$TMP/file"
expect_error init "$TMP/file/sub: cannot create the folder" --config "$CFG" -o "$TMP/file/sub"
expect_error init "$TMP/file/model.safetensors" --config "$CFG" -o "$TMP/file"
[ "$(wc -l <"$ERR" | tr -d ' ')" -eq 1 ] || fail "a runtime error printed more than one line"
[ ! -e "$TMP/x" ] || fail "a failed init created the output folder"
exit 0
