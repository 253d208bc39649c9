#!/bin/sh
# mambac perplexity on tiny-neox with the shared NeoX tokenizer: the printed mean NLL, perplexity and bits per byte
# equal the ones computed here from `mambac forward`'s logits of the same token ids (log-softmax in awk), with
# and without --max-tokens; repeated and --dtype f32 runs agree; bad input gives one message and its exit code.
. "$(dirname "$0")/helpers"

NEOX="$MODELS/tiny-neox"
[ -d "$NEOX" ] || skip "tiny-neox fixture absent"

# Checks that need no tokenizer.
printf 'Hey how are you doing?' >"$TMP/text"
expect_usage perplexity "-f FILE is required" -m "$NEOX"
expect_usage perplexity "out of range" -m "$NEOX" -f "$TMP/text" --max-tokens 1
expect_usage perplexity "not a weight dtype" -m "$NEOX" -f "$TMP/text" --dtype int4
expect_usage perplexity "usage:" -m "$NEOX" -f "$TMP/text" --bogus
expect_error perplexity "no tokenizer.json in the model folder" -m "$NEOX" -f "$TMP/text"
expect_error perplexity "$TMP/missing: cannot open" -m "$NEOX" -f "$TMP/missing"
expect_error perplexity "/nonexistent/tokenizer.json" -m "$NEOX" -f "$TMP/text" --tokenizer /nonexistent/tokenizer.json

[ -f "$TOKENIZER" ] || skip "the shared tokenizer is absent; scoring checks not run (usage checks passed)"

# The file's ids, through tokenize (perplexity must score exactly these).
printf 'Hey how are you doing? The quick brown fox jumps over the lazy dog.\n' >"$TMP/text"
run_stdin 0 "$TMP/text" tokenize --tokenizer "$TOKENIZER"
ids=$(cat "$OUT")
n=$(printf '%s\n' "$ids" | awk -F, '{ print NF }')
[ "$n" -ge 8 ] || fail "the test text has only $n tokens"
bytes=$(wc -c <"$TMP/text" | tr -d ' ')

# value KEY: the number after 'KEY: ' on the last run's stdout
value() {
    sed -n "s/^$1: //p" "$OUT"
}

# near A B TOL: |A - B| <= TOL * max(1, |B|)
near() {
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; s = b < 0 ? -b : b; if (s < 1) s = 1
        exit !(a != "" && d <= t * s) }'
}

# Output: five lines of numbers on stdout, the statistics line on stderr, no progress bar with --no-progress.
run 0 perplexity -m "$NEOX" -f "$TMP/text" --tokenizer "$TOKENIZER" --no-progress
[ "$(sed -n '$=' "$OUT")" -eq 5 ] || fail "perplexity printed $(sed -n '$=' "$OUT") lines, expected 5"
[ "$(value tokens)" = "$n" ] || fail "tokens: $(value tokens), tokenize gave $n ids"
[ "$(value bytes)" = "$bytes" ] || fail "bytes: $(value bytes), the file has $bytes"
err_has "stats: $((n - 1)) tokens scored"
err_lacks "%"
first=$(cat "$OUT")
mean=$(value mean_nll)
ppl=$(value perplexity)
bpb=$(value bits_per_byte)
# the same run again prints the same numbers; the progress bar (stderr only) reaches 100%
run 0 perplexity -m "$NEOX" -f "$TMP/text" --tokenizer "$TOKENIZER"
[ "$(cat "$OUT")" = "$first" ] || fail "a second run printed other numbers"
err_has "100% $((n - 1))/$((n - 1)) tokens"
# the derived numbers follow from mean_nll as documented
near "$ppl" "$(awk -v m="$mean" 'BEGIN { printf "%.6f", exp(m) }')" 1e-5 || fail "perplexity $ppl is not exp($mean)"
near "$bpb" "$(awk -v m="$mean" -v k="$((n - 1))" -v b="$bytes" 'BEGIN { printf "%.9f", m * k / log(2) / b }')" 1e-5 ||
    fail "bits_per_byte $bpb is not mean_nll * $((n - 1)) / ln 2 / $bytes"

# --dtype f32 on the bf16 fixture is an exact upcast: the same numbers. A stored-f32 copy (quantize) gives them
# too, as stored and with --dtype f32.
run 0 perplexity -m "$NEOX" -f "$TMP/text" --tokenizer "$TOKENIZER" --no-progress --dtype f32
[ "$(cat "$OUT")" = "$first" ] || fail "--dtype f32 changed the numbers of a bf16 model"
run 0 quantize -m "$NEOX" --dtype f32 -o "$TMP/f32"
run 0 perplexity -m "$TMP/f32" -f "$TMP/text" --tokenizer "$TOKENIZER" --no-progress
[ "$(cat "$OUT")" = "$first" ] || fail "the stored-f32 copy gave other numbers"
run 0 perplexity -m "$TMP/f32" -f "$TMP/text" --tokenizer "$TOKENIZER" --no-progress --dtype f32
[ "$(cat "$OUT")" = "$first" ] || fail "--dtype f32 on a stored-f32 model gave other numbers"
# the scalar reference backend agrees within rounding
run 0 perplexity -m "$NEOX" -f "$TMP/text" --tokenizer "$TOKENIZER" --no-progress --backend ref -t 1
near "$(value mean_nll)" "$mean" 1e-4 || fail "--backend ref mean_nll $(value mean_nll), cpu $mean"

# --max-tokens: the first N tokens only, and bytes = the length of their text; >= the count changes nothing.
run 0 perplexity -m "$NEOX" -f "$TMP/text" --tokenizer "$TOKENIZER" --no-progress --max-tokens 4
[ "$(value tokens)" = 4 ] || fail "--max-tokens 4 scored tokens: $(value tokens)"
mean4=$(value mean_nll)
bytes4=$(value bytes)
ids4=$(printf '%s' "$ids" | cut -d, -f1-4)
run 0 detokenize --tokenizer "$TOKENIZER" --ids "$ids4"
[ "$(wc -c <"$OUT" | tr -d ' ')" = "$bytes4" ] || fail "--max-tokens 4 bytes: $bytes4, the 4 tokens' text has $(wc -c <"$OUT")"
run 0 perplexity -m "$NEOX" -f "$TMP/text" --tokenizer "$TOKENIZER" --no-progress --max-tokens "$n"
[ "$(cat "$OUT")" = "$first" ] || fail "--max-tokens $n (all) changed the numbers"
run 0 perplexity -m "$NEOX" -f "$TMP/text" --tokenizer "$TOKENIZER" --no-progress --max-tokens 100000
[ "$(cat "$OUT")" = "$first" ] || fail "--max-tokens above the count changed the numbers"

# The independent computation: logits of the same ids from `mambac forward`, then for each position i < n-1
# NLL_i = logsumexp(logits[i]) - logits[i][ids[i+1]], averaged. Needs od to read little-endian float32.
[ "$(printf '\000\000\200\077' | od -An -tf4 | tr -d ' ')" = 1 ] || skip "od does not read little-endian float32 here"
run 0 info -m "$NEOX"
V=$(value vocab_size)
run 0 forward -m "$NEOX" --ids "$ids" --out "$TMP/logits.npy" -q
header=$(($(wc -c <"$TMP/logits.npy" | tr -d ' ') - n * V * 4))
[ "$header" -gt 0 ] || fail "logits.npy is smaller than $n x $V floats"
# One pass over the logits: the mean NLL of all n tokens (n-1 predictions) and of the first 4 (3 predictions).
od -An -v -tf4 -j "$header" "$TMP/logits.npy" | awk -v ids="$ids" -v V="$V" '
    BEGIN { n = split(ids, id, ",") }
    {
        for (i = 1; i <= NF; i++) {
            pos = int(k / V); j = k % V; x[j] = $i; k++
            if (j == V - 1 && pos < n - 1) {
                m = x[0]
                for (c = 1; c < V; c++) if (x[c] > m) m = x[c]
                s = 0
                for (c = 0; c < V; c++) s += exp(x[c] - m)
                nll += m + log(s) - x[id[pos + 2]]
                if (pos == 2) nll4 = nll
            }
        }
    }
    END { printf "%.9f %.9f\n", nll / (n - 1), nll4 / 3 }' >"$TMP/want"
read -r want_mean want_mean4 <"$TMP/want"
near "$mean" "$want_mean" 1e-5 || fail "mean_nll $mean, from forward's logits $want_mean"
near "$ppl" "$(awk -v m="$want_mean" 'BEGIN { printf "%.6f", exp(m) }')" 1e-5 || fail "perplexity $ppl, from logits exp($want_mean)"
near "$mean4" "$want_mean4" 1e-5 || fail "--max-tokens 4 mean_nll $mean4, from forward's logits $want_mean4"

# Text that cannot be scored: runtime errors (exit 1) naming the file and the problem.
: >"$TMP/empty"
expect_error perplexity "$TMP/empty: 0 tokens; need at least 2" -m "$NEOX" -f "$TMP/empty" --tokenizer "$TOKENIZER"
printf 'Hey' >"$TMP/one"
expect_error perplexity "$TMP/one: 1 token; need at least 2" -m "$NEOX" -f "$TMP/one" --tokenizer "$TOKENIZER"
printf 'ab\377cd' >"$TMP/bad"
expect_error perplexity "invalid UTF-8 at byte 2" -m "$NEOX" -f "$TMP/bad" --tokenizer "$TOKENIZER"
err_has "$TMP/bad"
expect_error perplexity "Is a directory" -m "$NEOX" -f "$TMP" --tokenizer "$TOKENIZER"
# a model whose vocabulary is smaller than the tokenizer's ids
expect_error perplexity "$TMP/text: token id" -m "$MODELS/f32-tied" -f "$TMP/text" --tokenizer "$TOKENIZER"
expect_error perplexity "/nonexistent-model" -m /nonexistent-model -f "$TMP/text" --tokenizer "$TOKENIZER"
[ "$(wc -l <"$ERR" | tr -d ' ')" -eq 1 ] || fail "a runtime error printed more than one line"
exit 0
