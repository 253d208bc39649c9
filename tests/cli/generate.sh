#!/bin/sh
# mambac generate on the fixture models: --print-ids equals transformers' greedy rows, text output and streaming,
# stop strings, stats and the demo note on stderr only, and every kind of bad input with its exit code.
. "$(dirname "$0")/helpers"

# The first greedy case of every model fixture, through --ids ... --print-ids.
n_models=0
for json in "$EXPECT"/*.json; do
    row=$(compact "$json" | sed -n 's/.*"greedy":\[{"prompt":\[\([0-9,]*\)\],"max_new_tokens":\([0-9]*\),"output":\[\([0-9,]*\)\].*/\1 \2 \3/p')
    [ -n "$row" ] || continue
    model=$(compact "$json" | sed -n 's/.*"model":"\([^"]*\)".*/\1/p')
    set -- $row
    run 0 generate -m "$MC_FIXTURES/$model" --ids "$1" -n "$2" --print-ids
    [ "$(cat "$OUT")" = "$3" ] || fail "$json: --print-ids gave '$(cat "$OUT")', transformers '$3'"
    err_has "stats:"
    n_models=$((n_models + 1))
done
[ "$n_models" -gt 0 ] || skip "no greedy fixtures in $EXPECT"

NEOX="$MODELS/tiny-neox"
[ -d "$NEOX" ] || skip "tiny-neox fixture absent"

# Batch of --ids: one line per sequence, each equal to the sequence alone.
run 0 generate -m "$NEOX" --ids 1,2,3 -n 5 --print-ids -q
solo1=$(cat "$OUT")
run 0 generate -m "$NEOX" --ids 7,8,9,10,11 -n 5 --print-ids -q
solo2=$(cat "$OUT")
run 0 generate -m "$NEOX" --ids 1,2,3 --ids 7,8,9,10,11 -n 5 --print-ids -q
[ "$(sed -n 1p "$OUT")" = "$solo1" ] || fail "batch row 1 differs from the prompt alone"
[ "$(sed -n 2p "$OUT")" = "$solo2" ] || fail "batch row 2 differs from the prompt alone"
[ ! -s "$ERR" ] || fail "--quiet left text on stderr"

# --precision: the cpu computes in f32 whatever it says (the same ids); a bad value is one line naming it.
run 0 generate -m "$NEOX" --backend cpu --ids 1,2,3 -n 5 --print-ids -q
f32_ids=$(cat "$OUT")
run 0 generate -m "$NEOX" --backend cpu --ids 1,2,3 -n 5 --print-ids -q --precision bf16
[ "$(cat "$OUT")" = "$f32_ids" ] || fail "--precision bf16 changed the cpu's ids"
run 2 generate -m "$NEOX" --ids 1,2,3 --precision fp8
err_has "'fp8' is not f32, tf32 or bf16"
[ "$(wc -l <"$ERR")" -eq 1 ] || fail "more than one error line for --precision fp8"

# -n 0 prints the prompt only; the same seed samples the same ids, --greedy overrides sampling flags.
run 0 generate -m "$NEOX" --ids 1,2,3 -n 0 --print-ids
[ "$(cat "$OUT")" = "1,2,3" ] || fail "-n 0 printed $(cat "$OUT")"
run 0 generate -m "$NEOX" --ids 5,6 -n 8 --print-ids --seed 11 --temperature 1.5
s1=$(cat "$OUT")
err_has "seed 11"
run 0 generate -m "$NEOX" --ids 5,6 -n 8 --print-ids --seed 11 --temperature 1.5 -q
[ "$(cat "$OUT")" = "$s1" ] || fail "--seed 11 twice gave different samples"
run 0 generate -m "$NEOX" --ids 5,6 -n 8 --print-ids -q
greedy=$(cat "$OUT")
run 0 generate -m "$NEOX" --ids 5,6 -n 8 --print-ids -q --greedy --seed 11 --temperature 1.5 --top-k 3
[ "$(cat "$OUT")" = "$greedy" ] || fail "--greedy did not override the sampling flags"

# The load flags change nothing in the ids (the fixtures' margins are far above kernel rounding).
run 0 generate -m "$NEOX" --ids 5,6 -n 8 --print-ids -q --backend ref --threads 1
[ "$(cat "$OUT")" = "$greedy" ] || fail "--backend ref gave other ids"
run 0 generate -m "$NEOX" --ids 5,6 -n 8 --print-ids -q --dtype f32 --threads 2
[ "$(cat "$OUT")" = "$greedy" ] || fail "--dtype f32 (bf16 upcast exactly) gave other ids"

# The demo note appears only when the model folder holds MAMBAC_DEMO.
err_lacks "demo model"
mkdir "$TMP/demo"
for f in "$NEOX"/*; do ln -s "$f" "$TMP/demo/"; done
: >"$TMP/demo/MAMBAC_DEMO"
run 0 generate -m "$TMP/demo" --ids 5,6 -n 2 --print-ids
err_has "demo model: random weights, output is not meaningful"
[ "$(cat "$OUT")" = "$(printf '%s' "$greedy" | cut -d, -f1-4)" ] || fail "demo copy generated other ids"

# Bad input.
expect_error generate "/nonexistent-model" -m /nonexistent-model --ids 1
expect_usage generate "usage:" -m "$NEOX" --ids 1 --bogus
expect_usage generate "usage:" -m "$NEOX" --ids
expect_usage generate "at least one prompt" -m "$NEOX"
expect_usage generate "out of range" -m "$NEOX" --ids 1 -n -1
expect_usage generate "out of range" -m "$NEOX" --ids 1 -n 1000001
expect_usage generate "not an integer" -m "$NEOX" --ids 1 -n ten
expect_usage generate "not a token id" -m "$NEOX" --ids 1,x,3
expect_usage generate "empty list" -m "$NEOX" --ids ""
expect_usage generate "must be > 0" -m "$NEOX" --ids 1 --temperature 0
expect_usage generate "not a finite number" -m "$NEOX" --ids 1 --top-p abc
expect_usage generate "must be in 0..1" -m "$NEOX" --ids 1 --min-p 1.5
expect_error generate "outside the vocabulary" -m "$NEOX" --ids 1,50280 --print-ids
expect_error generate "--eos 99999999 is outside" -m "$NEOX" --ids 1 --eos 99999999 --print-ids
expect_error generate "tokenizer.json" -m "$NEOX" -p "hello"

[ -f "$TOKENIZER" ] || skip "the shared tokenizer is absent; text checks not run (id checks passed)"

# Text: the prompt and its continuation on stdout, then a newline; statistics only on stderr.
json="$EXPECT/tiny-neox.json"
prompt=$(grep -m1 '"prompt_text"' "$json" | sed 's/.*"prompt_text": "\(.*\)",*$/\1/')
ids=$(compact "$json" | sed -n 's/.*"text_greedy":\[{[^]]*"prompt_ids":\[\([0-9,]*\)\],"max_new_tokens":\([0-9]*\),"output_ids":\[\([0-9,]*\)\].*/\1 \2 \3/p')
set -- $ids
run 0 generate -m "$NEOX" --tokenizer "$TOKENIZER" -p "$prompt" -n "$2" --print-ids
[ "$(cat "$OUT")" = "$3" ] || fail "text prompt: ids $(cat "$OUT"), transformers $3"
n_new=$2
run 0 generate -m "$NEOX" --tokenizer "$TOKENIZER" -p "$prompt" -n "$n_new"
full=$(cat "$OUT")
case "$full" in "$prompt"*) ;; *) fail "stdout does not start with the prompt" ;; esac
[ "$(tail -c 1 "$OUT" | od -An -c | tr -d ' ')" = '\n' ] || fail "output does not end with a newline"
out_lacks "stats:"
err_has "stats:"
err_has "prompt tokens"
# the same text through the id path and detokenize
run 0 detokenize --tokenizer "$TOKENIZER" --ids "$3"
[ "$(cat "$OUT")" = "$full" ] || fail "streamed text differs from detokenize of the same ids"
# the same prompt from a file (-f): same output; --batch 2 prints it twice
printf '%s' "$prompt" >"$TMP/prompt.txt"
run 0 generate -m "$NEOX" --tokenizer "$TOKENIZER" -f "$TMP/prompt.txt" -n "$n_new" -q
[ "$(cat "$OUT")" = "$full" ] || fail "-f FILE gave other text than -p"
run 0 generate -m "$NEOX" --tokenizer "$TOKENIZER" -f "$TMP/prompt.txt" -n "$n_new" -q --batch 2
[ "$(sed -n 1p "$OUT")" = "$full" ] && [ "$(sed -n 2p "$OUT")" = "$full" ] || fail "--batch 2 rows differ from alone"
expect_error generate "/nonexistent/prompt" -m "$NEOX" --tokenizer "$TOKENIZER" -f /nonexistent/prompt

# Stop strings: a stop string from the continuation ends it early, after the token completing it; one that lies
# wholly inside the prompt does not stop anything.
cont=${full#"$prompt"}
stop=$(printf '%s' "$cont" | head -c 3)
run 0 generate -m "$NEOX" --tokenizer "$TOKENIZER" -p "$prompt" -n "$n_new" --stop "$stop" -q
stopped=$(cat "$OUT")
case "$full" in "$stopped"*) ;; *) fail "--stop output is not a prefix of the full output" ;; esac
case "$stopped" in *"$stop"*) ;; *) fail "--stop output lacks the stop string" ;; esac
[ "$stopped" != "$full" ] || fail "--stop '$stop' did not stop early"
run 0 generate -m "$NEOX" --tokenizer "$TOKENIZER" -p "$prompt" -n "$n_new" --stop "$prompt" -q
[ "$(cat "$OUT")" = "$full" ] || fail "a stop string inside the prompt stopped generation"

# Several text prompts: one line each, in order, each as when alone.
run 0 generate -m "$NEOX" --tokenizer "$TOKENIZER" -p "$prompt" -p "Once upon a time" -n "$n_new" -q
[ "$(sed -n 1p "$OUT")" = "$(printf '%s\n' "$full" | sed -n 1p)" ] || fail "batch text row 1 differs"
[ "$(sed -n '$=' "$OUT")" -ge 2 ] || fail "batch text printed fewer than 2 lines"
expect_error generate "prompt 1 is empty" -m "$NEOX" --tokenizer "$TOKENIZER" -p ""
exit 0
