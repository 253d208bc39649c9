#!/bin/sh
# mambac quantize on tiny-neox (bf16) and f32-tied: the saved folder loads as the new dtype and gives the same
# logits as loading the original with --dtype (the conversion at load time is the reference); the tokenizer is
# copied; converting in place works; bad input gives one message with the exit code of its kind.
. "$(dirname "$0")/helpers"

NEOX="$MODELS/tiny-neox"
F32="$MODELS/f32-tied"
[ -d "$NEOX" ] && [ -d "$F32" ] || skip "tiny-neox or f32-tied fixture absent"

# fwd MODEL NAME [flags]: logits of a fixed prompt into $TMP/NAME.npy
fwd() {
    m=$1
    name=$2
    shift 2
    run 0 forward -m "$m" --ids 5,6,7,8 --out "$TMP/$name.npy" -q "$@"
}

# int8: a folder with int8 matrices, one summary line on stderr naming both folders, nothing on stdout.
run 0 quantize -m "$NEOX" --dtype int8 -o "$TMP/q8"
[ ! -s "$OUT" ] || fail "quantize printed to stdout"
err_has "quantize: $NEOX -> $TMP/q8 ("
err_has "bytes read per decode step"
[ -f "$TMP/q8/config.json" ] && [ -f "$TMP/q8/model.safetensors" ] || fail "no config.json + model.safetensors"
[ ! -e "$TMP/q8/tokenizer.json" ] || fail "a tokenizer.json appeared though the model has none"
run 0 info -m "$NEOX"
params=$(sed -n 's/^parameters: //p' "$OUT")
run 0 info -m "$TMP/q8"
out_has "parameters: $params"
out_has "parameters_int8: "
# the summary's byte count is info's read_bytes_per_token of the result
reads=$(sed -n 's/^read_bytes_per_token: //p' "$OUT")
run 0 quantize -m "$NEOX" --dtype int8 -o "$TMP/q8b"
err_has "($reads bytes read per decode step)"
cmp -s "$TMP/q8/model.safetensors" "$TMP/q8b/model.safetensors" || fail "quantizing twice wrote different bytes"
# same logits and the same greedy ids as the original loaded with --dtype int8
fwd "$TMP/q8" q8
fwd "$NEOX" ref8 --dtype int8
cmp -s "$TMP/q8.npy" "$TMP/ref8.npy" || fail "the int8 folder's logits differ from --dtype int8 at load"
run 0 generate -m "$NEOX" --ids 5,6,7,8 -n 6 --print-ids -q --dtype int8
ids8=$(cat "$OUT")
run 0 generate -m "$TMP/q8" --ids 5,6,7,8 -n 6 --print-ids -q
[ "$(cat "$OUT")" = "$ids8" ] || fail "generate on the int8 folder gave $(cat "$OUT"), --dtype int8 gave $ids8"

# Lossless conversions keep the logits bit for bit: bf16 -> bf16, bf16 -> f32, f32 -> f32.
run 0 quantize -m "$NEOX" --dtype bf16 -o "$TMP/bf"
run 0 info -m "$TMP/bf"
out_has "parameters_bf16: "
fwd "$TMP/bf" bf
fwd "$NEOX" neox
cmp -s "$TMP/bf.npy" "$TMP/neox.npy" || fail "bf16 -> bf16 changed the logits"
run 0 quantize -m "$F32" --dtype f32 -o "$TMP/f32"
fwd "$TMP/f32" f32
fwd "$F32" f32ref
cmp -s "$TMP/f32.npy" "$TMP/f32ref.npy" || fail "f32 -> f32 changed the logits"
# f16 is stored as f16 and loads as --dtype f16 does
run 0 quantize -m "$F32" --dtype f16 -o "$TMP/f16"
run 0 info -m "$TMP/f16"
out_has "parameters_f16: "
fwd "$TMP/f16" f16
fwd "$F32" f16ref --dtype f16
cmp -s "$TMP/f16.npy" "$TMP/f16ref.npy" || fail "the f16 folder's logits differ from --dtype f16 at load"

# The model folder's tokenizer.json is copied beside the result (a fixture copy with a stand-in tokenizer file:
# quantize copies bytes, it does not parse them).
mkdir "$TMP/withtok"
cp "$F32/config.json" "$F32/model.safetensors" "$TMP/withtok/"
printf '{"stand-in": true}\n' >"$TMP/withtok/tokenizer.json"
run 0 quantize -m "$TMP/withtok" --dtype int8 -o "$TMP/withtok8"
cmp -s "$TMP/withtok/tokenizer.json" "$TMP/withtok8/tokenizer.json" || fail "tokenizer.json was not copied"

# In place (-o = -m): the weights are replaced through a temp file while the old ones are mapped.
run 0 quantize -m "$TMP/withtok" --dtype int8 -o "$TMP/withtok"
cmp -s "$TMP/withtok/model.safetensors" "$TMP/withtok8/model.safetensors" || fail "in-place int8 differs"
cmp -s "$TMP/withtok/tokenizer.json" "$TMP/withtok8/tokenizer.json" || fail "in place lost tokenizer.json"
# an int8 model converted again: int8 -> int8 keeps the bytes
run 0 quantize -m "$TMP/withtok8" --dtype int8 -o "$TMP/again"
cmp -s "$TMP/again/model.safetensors" "$TMP/withtok8/model.safetensors" || fail "int8 -> int8 changed the bytes"

# Bad usage (exit 2).
expect_usage quantize "not a weight dtype" -m "$NEOX" --dtype int4 -o "$TMP/x"
expect_usage quantize "'stored' converts nothing" -m "$NEOX" --dtype stored -o "$TMP/x"
expect_usage quantize "-m MODEL, --dtype" -m "$NEOX" -o "$TMP/x"
expect_usage quantize "-m MODEL, --dtype" -m "$NEOX" --dtype int8
expect_usage quantize "-m MODEL, --dtype" --dtype int8 -o "$TMP/x"
expect_usage quantize "usage:" -m "$NEOX" --dtype int8 -o "$TMP/x" --bogus
[ ! -e "$TMP/x" ] || fail "a usage error created the output folder"

# Runtime errors (exit 1, one line naming the path).
expect_error quantize "/nonexistent-model" -m /nonexistent-model --dtype int8 -o "$TMP/x"
[ ! -e "$TMP/x" ] || fail "a missing model still created the output folder"
: >"$TMP/file"
expect_error quantize "$TMP/file/model.safetensors" -m "$NEOX" --dtype int8 -o "$TMP/file"
[ ! -s "$TMP/file" ] || fail "the existing file was written to"
expect_error quantize "$TMP/file/sub: cannot create the folder" -m "$NEOX" --dtype int8 -o "$TMP/file/sub"
[ "$(wc -l <"$ERR" | tr -d ' ')" -eq 1 ] || fail "a runtime error printed more than one line"
exit 0
