#!/bin/sh
# mambac's own model (models/austen) is the default: generate, perplexity, tokenize and info run without -m, and
# MAMBAC_MODEL overrides it. Its perplexity on a held-out slice of its validation text stays below a recorded bound
# (measured 69.0 in bf16 as committed, tests/fixtures/austen-heldout.txt; bound 72), and int8 stays within 1% of it,
# so a broken loader, tokenizer or kernel shows here.
. "$(dirname "$0")/helpers"

MODEL="$(dirname "$0")/../../models/austen"
[ -f "$MODEL/config.json" ] || skip "models/austen is absent"
HELD="$MC_FIXTURES/austen-heldout.txt"
unset MAMBAC_MODEL

run 0 generate -p "It is a truth universally acknowledged" -n 12
out_has "It is a truth universally acknowledged"
[ "$(wc -c <"$OUT")" -gt 60 ] || fail "generate printed too little: $(cat "$OUT")"
run 0 info
out_has "hidden_size: 256"
printf 'Mr. Darcy' >"$TMP/t"
run_stdin 0 "$TMP/t" tokenize
[ -s "$OUT" ] || fail "tokenize printed nothing"

run 0 perplexity -f "$HELD" --no-progress
ppl=$(sed -n 's/^perplexity: //p' "$OUT")
awk -v p="$ppl" 'BEGIN { exit !(p > 1 && p < 72) }' || fail "held-out perplexity $ppl is not below 72"
run 0 perplexity -f "$HELD" --no-progress --dtype int8
q=$(sed -n 's/^perplexity: //p' "$OUT")
awk -v p="$ppl" -v q="$q" 'BEGIN { d = q - p; if (d < 0) d = -d; exit !(d < 0.01 * p) }' ||
    fail "int8 perplexity $q is not within 1% of $ppl"

# MAMBAC_MODEL overrides the default
MAMBAC_MODEL="$MODELS/f32-tied" "$MAMBAC" info >"$OUT" 2>"$ERR" || fail "info with MAMBAC_MODEL failed"
out_has "hidden_size: 64"
MAMBAC_MODEL="$TMP/none" "$MAMBAC" info >"$OUT" 2>"$ERR" && fail "a missing MAMBAC_MODEL passed"
err_has "$TMP/none"
exit 0
