#!/bin/sh
# scripts/demo: says the model is a random-weight fixture, runs text generation with a tokenizer and falls back
# to ids without one.
. "$(dirname "$0")/helpers"

DEMO="$(dirname "$0")/../../scripts/demo"
NEOX="$MODELS/tiny-neox"
[ -d "$NEOX" ] || skip "tiny-neox fixture absent"
export MAMBAC

sh "$DEMO" "$NEOX" /nonexistent/tokenizer.json "Hey how are you doing?" >"$OUT" 2>"$ERR" || fail "demo without a tokenizer failed"
err_has "random"
err_has "tokenizer"
grep -q '^8262,849,403,368,2509,32,[0-9,]*$' "$OUT" || fail "demo without a tokenizer did not print ids"

[ -f "$TOKENIZER" ] || skip "the shared tokenizer is absent"
sh "$DEMO" "$NEOX" "$TOKENIZER" "Hey how are you doing?" >"$OUT" 2>"$ERR" || fail "demo with the tokenizer failed"
grep -q '^Hey how are you doing?' "$OUT" || fail "demo did not print the prompt text"
exit 0
