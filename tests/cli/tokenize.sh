#!/bin/sh
# mambac tokenize / detokenize with the shared NeoX tokenizer: ids of stdin, exact text back (nothing added),
# invalid UTF-8 named by byte offset, and bad usage.
. "$(dirname "$0")/helpers"

expect_usage detokenize "--ids 1,2,3 is required" --tokenizer /x.json
expect_error tokenize "tokenizer.json" -m "$MODELS/tiny-neox"
[ -f "$TOKENIZER" ] || skip "the shared tokenizer is absent"

printf 'Hey how are you doing?' >"$TMP/in"
run_stdin 0 "$TMP/in" tokenize --tokenizer "$TOKENIZER"
[ "$(cat "$OUT")" = "8262,849,403,368,2509,32" ] || fail "tokenize gave $(cat "$OUT")"
# with the fixture's prompt ids too
json="$EXPECT/tiny-neox.json"
if [ -f "$json" ]; then
    want=$(compact "$json" | sed -n 's/.*"text_greedy":\[{[^]]*"prompt_ids":\[\([0-9,]*\)\].*/\1/p')
    [ "$(cat "$OUT")" = "$want" ] || fail "tokenize differs from the fixture's prompt_ids $want"
fi

# stdin is read byte for byte: a trailing newline is a token, and empty input gives an empty line
printf 'Hey\n' >"$TMP/nl"
run_stdin 0 "$TMP/nl" tokenize --tokenizer "$TOKENIZER"
ids_nl=$(cat "$OUT")
run 0 detokenize --tokenizer "$TOKENIZER" --ids "$ids_nl"
cmp -s "$OUT" "$TMP/nl" || fail "detokenize(tokenize('Hey\\n')) is not 'Hey\\n' byte for byte"
: >"$TMP/empty"
run_stdin 0 "$TMP/empty" tokenize --tokenizer "$TOKENIZER"
[ "$(wc -c <"$OUT" | tr -d ' ')" -eq 1 ] || fail "empty input should print an empty line"

printf 'ab\377cd' >"$TMP/bad"
run_stdin 1 "$TMP/bad" tokenize --tokenizer "$TOKENIZER"
err_has "mambac tokenize:"
err_has "byte 2"

# detokenize prints exactly the text: no newline added
run 0 detokenize --tokenizer "$TOKENIZER" --ids 8262,849,403,368,2509,32
cmp -s "$OUT" "$TMP/in" || fail "detokenize output is not exactly the text"
run 0 detokenize --tokenizer "$TOKENIZER" --ids 0,8262 --skip-special
[ "$(cat "$OUT")" = "Hey" ] || fail "--skip-special kept the special token"
run 0 detokenize --tokenizer "$TOKENIZER" --ids 0,8262
[ "$(cat "$OUT")" = "<|endoftext|>Hey" ] || fail "special tokens are not kept by default"

expect_error detokenize "outside the vocabulary" --tokenizer "$TOKENIZER" --ids 1,999999
expect_error detokenize "outside the vocabulary" --tokenizer "$TOKENIZER" --ids 8262,50277
# with the model, its padded rows (ids the model can emit, no string in the tokenizer) decode to nothing
run 0 detokenize -m "$MC_FIXTURES/models/tiny-neox" --tokenizer "$TOKENIZER" --ids 8262,50279
[ "$(cat "$OUT")" = "Hey" ] || fail "padded-vocabulary ids were not skipped as tokenizers skips them"
expect_usage detokenize "not a token id" --tokenizer "$TOKENIZER" --ids 1,a
expect_usage tokenize "usage:" --tokenizer "$TOKENIZER" extra
expect_error tokenize "/nonexistent.json" --tokenizer /nonexistent.json
exit 0
