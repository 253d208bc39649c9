#!/bin/sh
# mambac itself: --help lists exactly the known commands, --version, unknown commands, and every command's --help
# documents each flag of its usage line (long and short) with an example.
. "$(dirname "$0")/helpers"

# Every command of cli/main.c. A command added there without a test here (or dropped) fails the list check below.
COMMANDS="generate forward tokenize detokenize tokenizer data info perplexity bench init quantize train finetune merge grad"

run 0 --help
for c in $COMMANDS; do
    out_has "  $c "
done
# the 'commands:' block (up to the next blank line) names these commands and no others
listed=$(sed -n '/^commands:/,/^$/s/^  \([a-z][a-z]*\) .*/\1/p' "$OUT" | sort | tr '\n' ' ')
expected=$(printf '%s\n' $COMMANDS | sort | tr '\n' ' ')
[ "$listed" = "$expected" ] || fail "--help lists '$listed', expected '$expected'"
out_has "example"
out_has "exit status"
run 0 --version
grep -q '^mambac [0-9]' "$OUT" || fail "--version printed $(cat "$OUT")"
run 2 bogus-command
err_has "unknown command"
run 2

for c in $COMMANDS; do
    run 0 "$c" --help
    [ ! -s "$ERR" ] || fail "$c --help wrote to stderr"
    [ "$(head -n 1 "$OUT" | cut -c1-$((14 + ${#c})))" = "usage: mambac $c" ] || fail "$c --help does not start with its usage line"
    # an 'example:' section below the flags that runs this command
    sed -n '/^example/,$p' "$OUT" | grep -q "mambac $c " || fail "$c --help has no example running mambac $c"
    # every --flag of the usage line is explained below it
    for flag in $(head -n 1 "$OUT" | grep -o -- '--[a-z-]*' | sort -u); do
        [ "$(grep -c -- "$flag" "$OUT")" -ge 2 ] || fail "$c --help does not document $flag"
    done
    # every short flag of the usage line ('[-t N]', ' -m MODEL', '(-m ...') has its own '  -x, --long' line
    for flag in $(head -n 1 "$OUT" | grep -o -- '[[ (|]-[a-zA-Z][] ]' | cut -c2-3 | sort -u); do
        grep -q -- "^ *$flag, --" "$OUT" || fail "$c --help does not document $flag"
    done
done
exit 0
