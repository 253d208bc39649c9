#!/bin/sh
# mambac data: token files whose ids are exactly mambac tokenize's, documents followed by EOS with --eos, a header
# naming the tokenizer and its SHA-256 (equal to sha256sum's); bad input gives one line and exit 1, bad usage exit 2.
. "$(dirname "$0")/helpers"

FIX="$MC_FIXTURES/tokenizer_train"
[ -f "$FIX/reference.json" ] || skip "tokenizer_train fixture absent"
REF="$FIX/reference.json"

expect_usage data "-o FILE is required" --tokenizer "$REF" "$FIX/heldout.txt"
expect_usage data "give --tokenizer FILE or -m MODEL" -o "$TMP/t.bin" "$FIX/heldout.txt"
expect_usage data "give at least one text file" -o "$TMP/t.bin" --tokenizer "$REF"
expect_usage data "unknown flag" -o "$TMP/t.bin" --tokenizer "$REF" --eos=1 "$FIX/heldout.txt"

# ids of the header's size, read back with od: the same as `mambac tokenize` prints
u16_ids() { # FILE HEADER_BYTES: the uint16 ids after the header, comma-separated
    od -An -v -tu2 -j "$2" "$1" | tr -s ' \n' '\n\n' | sed '/^$/d' | paste -sd, -
}
header_bytes() { # NAME: 84 bytes + the name, rounded up to 64
    echo $(((84 + ${#1} + 63) / 64 * 64))
}
[ "$(printf '\001\000' | od -An -tu2 | tr -d ' ')" = 1 ] || skip "this machine is not little-endian; od checks skipped"

run 0 data -o "$TMP/t.bin" --tokenizer "$REF" "$FIX/heldout.txt"
err_has "from 1 document,"
err_has "EOS not written"
run_stdin 0 "$FIX/heldout.txt" tokenize --tokenizer "$REF"
want=$(cat "$OUT")
n=$(printf '%s\n' "$want" | awk -F, '{ print NF }')
hdr=$(header_bytes "$REF")
[ "$(head -c 8 "$TMP/t.bin")" = MCTOKENS ] || fail "no MCTOKENS magic"
[ "$(wc -c <"$TMP/t.bin" | tr -d ' ')" -eq $((hdr + 2 * n)) ] || fail "file size is not header + 2 bytes per id"
[ "$(u16_ids "$TMP/t.bin" "$hdr")" = "$want" ] || fail "the file's ids differ from mambac tokenize's"
if command -v sha256sum >/dev/null; then
    sha=$(sha256sum "$REF" | cut -d' ' -f1)
    run 0 data -o "$TMP/t.bin" --tokenizer "$REF" "$FIX/heldout.txt"
    err_has "sha256 $sha"
    [ "$(od -An -v -tx1 -j 48 -N 32 "$TMP/t.bin" | tr -d ' \n')" = "$sha" ] || fail "header sha256 is not sha256sum's"
fi

# two documents with --eos: ids of each, then EOS (<|endoftext|>, id 0) after each
printf 'First document.' >"$TMP/a.txt"
printf 'Second one\n' >"$TMP/b.txt"
run 0 data -o "$TMP/t.bin" --tokenizer "$REF" --eos "$TMP/a.txt" "$TMP/b.txt"
err_has "from 2 documents"
err_has "EOS after every document"
run_stdin 0 "$TMP/a.txt" tokenize --tokenizer "$REF"
a=$(cat "$OUT")
run_stdin 0 "$TMP/b.txt" tokenize --tokenizer "$REF"
b=$(cat "$OUT")
[ "$(u16_ids "$TMP/t.bin" "$hdr")" = "$a,0,$b,0" ] || fail "--eos file holds $(u16_ids "$TMP/t.bin" "$hdr"), not $a,0,$b,0"

# a tokenizer without <|endoftext|> has no EOS to write
printf 'ab ab ab cd\n' >"$TMP/small.txt"
run 0 tokenizer train --vocab-size 300 --special '<|pad|>' -o "$TMP/nopad.json" "$TMP/small.txt"
expect_error data "no <|endoftext|> special token" -o "$TMP/x.bin" --tokenizer "$TMP/nopad.json" --eos "$TMP/a.txt"
# runtime errors name the file; nothing is written
printf 'ok\n\377\n' >"$TMP/bad.txt"
expect_error data "$TMP/bad.txt: text: invalid UTF-8 at byte 3" -o "$TMP/x.bin" --tokenizer "$REF" "$TMP/a.txt" \
    "$TMP/bad.txt"
expect_error data "$TMP/missing.txt: cannot open" -o "$TMP/x.bin" --tokenizer "$REF" "$TMP/missing.txt"
expect_error data "/nonexistent.json" -o "$TMP/x.bin" --tokenizer /nonexistent.json "$TMP/a.txt"
expect_error data "no tokenizer.json in the model folder" -o "$TMP/x.bin" -m "$MODELS/tiny-neox" "$TMP/a.txt"
[ ! -e "$TMP/x.bin" ] || fail "a failed run left $TMP/x.bin"

# -m: the model's tokenizer.json and its config's eos_token_id (tiny-neox: 0), uint32 not needed for 50277 ids
[ -f "$TOKENIZER" ] || skip "the shared tokenizer is absent; -m checks not run"
mkdir "$TMP/model"
cp "$MODELS/tiny-neox/config.json" "$TOKENIZER" "$TMP/model/"
run 0 data -o "$TMP/m.bin" -m "$TMP/model" --eos "$TMP/a.txt"
run_stdin 0 "$TMP/a.txt" tokenize --tokenizer "$TOKENIZER"
a=$(cat "$OUT")
[ "$(u16_ids "$TMP/m.bin" "$(header_bytes "$TMP/model/tokenizer.json")")" = "$a,0" ] || fail "-m MODEL --eos ids"
exit 0
