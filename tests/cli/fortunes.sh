#!/bin/sh
# tools/fortunes_to_jsonl.sh: records with an author become {"quote", "author"} lines (joined, quotes and
# backslashes escaped), records without one, empty ones and over-long ones are left out, and a file that does
# not end with '%' does not run into the next one.
. "$(dirname "$0")/helpers"
CONV="$(dirname "$0")/../../tools/fortunes_to_jsonl.sh"
printf 'A "short" one\\\nover two lines.\n\t\t-- Somebody, "A Book"\n%%\nNo author here.\n%%\n%%\nLast of file one.\n\t-- One\n' >"$TMP/f1"
printf 'First of file two.\n  -- Two\n%%\n' >"$TMP/f2"
sh "$CONV" "$TMP/f1" "$TMP/f2" >"$OUT" 2>"$ERR" || fail "converter failed"
[ "$(wc -l <"$OUT")" -eq 3 ] || fail "expected 3 quotes"
out_has '{"quote": "A \"short\" one\\ over two lines.", "author": "Somebody, \"A Book\""}'
out_has '{"quote": "Last of file one.", "author": "One"}'
out_has '{"quote": "First of file two.", "author": "Two"}'
if sh "$CONV" "$TMP/missing" >"$OUT" 2>"$ERR"; then fail "a missing file passed"; fi
err_has "cannot read"
exit 0
