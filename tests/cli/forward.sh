#!/bin/sh
# mambac forward: writes a float32 .npy of [batch, seq, vocab] logits; unequal --ids lengths and bad ids fail.
. "$(dirname "$0")/helpers"

NEOX="$MODELS/tiny-neox"
[ -d "$NEOX" ] || skip "tiny-neox fixture absent"

run 0 forward -m "$NEOX" --ids 1,2,3 --ids 4,5,6 --out "$TMP/logits.npy"
[ -f "$TMP/logits.npy" ] || fail "no .npy written"
head -c 6 "$TMP/logits.npy" >"$TMP/magic"
printf '\223NUMPY' >"$TMP/want"
cmp -s "$TMP/magic" "$TMP/want" || fail "the file does not start with \\x93NUMPY"
head -c 128 "$TMP/logits.npy" | grep -q "'descr': '<f4'" || fail "the header does not say float32"
head -c 128 "$TMP/logits.npy" | grep -q "'shape': (2, 3, 50280)" || fail "the header does not give shape (2, 3, 50280)"
[ ! -s "$OUT" ] || fail "forward printed to stdout"
err_has "stats:"
# 128-byte header + 2*3*50280 floats
[ "$(wc -c <"$TMP/logits.npy" | tr -d ' ')" -eq $((128 + 2 * 3 * 50280 * 4)) ] || fail "unexpected file size"

# A batch row equals the same ids alone (rows are independent).
run 0 forward -m "$NEOX" --ids 4,5,6 --out "$TMP/one.npy" -q
tail -c $((3 * 50280 * 4)) "$TMP/logits.npy" >"$TMP/row2"
tail -c $((3 * 50280 * 4)) "$TMP/one.npy" >"$TMP/alone"
cmp -s "$TMP/row2" "$TMP/alone" || fail "batch row 2 differs from the same ids alone"

expect_error forward "same length" -m "$NEOX" --ids 1,2,3 --ids 4,5 --out "$TMP/x.npy"
expect_error forward "outside the vocabulary" -m "$NEOX" --ids 1,50280 --out "$TMP/x.npy"
expect_error forward "/nonexistent-dir" -m "$NEOX" --ids 1 --out /nonexistent-dir/x.npy
expect_error forward "/nonexistent-model" -m /nonexistent-model --ids 1 --out "$TMP/x.npy"
expect_usage forward "--out FILE.npy is required" -m "$NEOX" --ids 1
expect_usage forward "at least one --ids" -m "$NEOX" --out "$TMP/x.npy"
expect_usage forward "usage:" -m "$NEOX" --ids 1 --out "$TMP/x.npy" --bogus
expect_usage forward "out of range" -m "$NEOX" --ids 1,-2 --out "$TMP/x.npy"
exit 0
