#!/bin/sh
# mambac itself: --help lists every command, --version, unknown commands, and every command's --help
# documents each flag of its usage line with an example.
. "$(dirname "$0")/helpers"

run 0 --help
for c in generate forward tokenize detokenize info; do
    out_has "  $c "
done
run 0 --version
grep -q '^mambac [0-9]' "$OUT" || fail "--version printed $(cat "$OUT")"
run 2 bogus-command
err_has "unknown command"
run 2

for c in generate forward tokenize detokenize info; do
    run 0 "$c" --help
    out_has "usage: mambac $c"
    out_has "example"
    # every --flag of the usage line is explained below it
    for flag in $(head -n 1 "$OUT" | grep -o -- '--[a-z-]*' | sort -u); do
        [ "$(grep -c -- "$flag" "$OUT")" -ge 2 ] || fail "$c --help does not document $flag"
    done
done
exit 0
