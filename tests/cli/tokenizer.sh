#!/bin/sh
# mambac tokenizer train: on the fixture corpus it writes exactly the tokenizer.json tokenizers' BpeTrainer wrote
# (tests/fixtures/tokenizer_train, tools/oracle/tokenizer_train_check.py), deterministically; the result tokenizes
# and detokenizes the held-out text back to itself; bad input gives one line and exit 1, bad usage exit 2.
. "$(dirname "$0")/helpers"

FIX="$MC_FIXTURES/tokenizer_train"
[ -f "$FIX/reference.json" ] || skip "tokenizer_train fixture absent"

expect_usage tokenizer "give a subcommand: train"
expect_usage tokenizer "unknown subcommand 'fit'" fit
expect_usage tokenizer "--vocab-size N is required" train -o "$TMP/t.json" "$FIX/corpus.txt"
expect_usage tokenizer "-o FILE is required" train --vocab-size 300 "$FIX/corpus.txt"
expect_usage tokenizer "give at least one text file" train --vocab-size 300 -o "$TMP/t.json"
expect_usage tokenizer "--vocab-size" train --vocab-size lots -o "$TMP/t.json" "$FIX/corpus.txt"
expect_usage tokenizer "--min-frequency" train --vocab-size 300 --min-frequency -1 -o "$TMP/t.json" "$FIX/corpus.txt"
expect_usage tokenizer "cannot be empty" train --vocab-size 300 --special "" -o "$TMP/t.json" "$FIX/corpus.txt"
expect_usage tokenizer "unknown flag" train --vocab-size 300 --bogus -o "$TMP/t.json" "$FIX/corpus.txt"

# the fixture's settings (expect.json "settings"): vocab 1000, min_frequency 2, two special tokens
run 0 tokenizer train --vocab-size 1000 --min-frequency 2 --special '<|endoftext|>' --special '<|padding|>' \
    -o "$TMP/t.json" "$FIX/corpus.txt"
cmp -s "$TMP/t.json" "$FIX/reference.json" || fail "the trained tokenizer.json differs from tokenizers' reference.json"
err_has "vocabulary of 1000 tokens"
err_has "wrote $TMP/t.json"
[ ! -s "$OUT" ] || fail "tokenizer train wrote to stdout"
run 0 tokenizer train --vocab-size 1000 --special '<|endoftext|>' --special '<|padding|>' -o "$TMP/t2.json" \
    "$FIX/corpus.txt"
cmp -s "$TMP/t.json" "$TMP/t2.json" || fail "two runs on the same corpus differ"

# what it learned round-trips text through tokenize / detokenize
run_stdin 0 "$FIX/heldout.txt" tokenize --tokenizer "$TMP/t.json"
ids=$(cat "$OUT")
run 0 detokenize --tokenizer "$TMP/t.json" --ids "$ids"
cmp -s "$OUT" "$FIX/heldout.txt" || fail "detokenize(tokenize(heldout)) is not the held-out text"

# default special token: <|endoftext|> alone, id 0; the vocabulary stops short when pairs run out
printf 'ab ab ab\n' >"$TMP/small.txt"
run 0 tokenizer train --vocab-size 5000 -o "$TMP/s.json" "$TMP/small.txt"
grep -q '"<|endoftext|>": 0,' "$TMP/s.json" || fail "<|endoftext|> is not id 0 by default"
grep -q '"<|padding|>"' "$TMP/s.json" && fail "<|padding|> was added without --special"
err_has "fewer than asked"

# runtime errors: one line naming the problem, exit 1, no output file left behind
printf 'caf\351\n' >"$TMP/latin1.txt"
expect_error tokenizer "$TMP/latin1.txt: invalid UTF-8 at byte 3" train --vocab-size 300 -o "$TMP/x.json" \
    "$TMP/latin1.txt"
[ ! -e "$TMP/x.json" ] || fail "a failed run left $TMP/x.json"
: >"$TMP/empty.txt"
expect_error tokenizer "the corpus is empty" train --vocab-size 300 -o "$TMP/x.json" "$TMP/empty.txt"
expect_error tokenizer "vocab size 257 is smaller than the 258 tokens" train --vocab-size 257 --special a1 \
    --special a2 -o "$TMP/x.json" "$FIX/corpus.txt"
expect_error tokenizer "$TMP/missing.txt: cannot open" train --vocab-size 300 -o "$TMP/x.json" "$TMP/missing.txt"
expect_error tokenizer "/nonexistent/dir/x.json" train --vocab-size 300 -o /nonexistent/dir/x.json "$FIX/corpus.txt"
[ "$(wc -l <"$ERR" | tr -d ' ')" -eq 1 ] || fail "the error is not one line"
[ ! -e "$TMP/x.json" ] || fail "a failed run left $TMP/x.json"
exit 0
