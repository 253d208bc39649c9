#!/bin/sh
# Turns fortune files (Debian's 'fortunes' / 'fortunes-min' packages: records separated by lines holding '%') into
# JSON Lines with the fields of the Hugging Face english_quotes dataset the Mamba LoRA example trains on:
# {"quote": "...", "author": "..."}. A record qualifies when its last line names an author ("-- Name"); its text is
# joined onto one line with single spaces and the author's trailing source ("Name, \"Book\"") is kept as written.
# Records longer than 400 characters are left out, like the quotes' length range.
#
#   tools/fortunes_to_jsonl.sh /usr/share/games/fortunes/{wisdom,people,literature} > quotes.jsonl
#
# Needs only POSIX sh and awk. Files are read as bytes; Debian ships them as UTF-8.
set -eu
[ "$#" -gt 0 ] || { echo "usage: $0 FORTUNE_FILE..." >&2; exit 2; }
for f in "$@"; do
    [ -r "$f" ] || { echo "$0: $f: cannot read" >&2; exit 1; }
done
awk '
function esc(s,    out, i, c) { # JSON string body: character by character (gsub replacement rules differ by awk)
    out = ""
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\\") out = out "\\\\"
        else if (c == "\"") out = out "\\\""
        else if (c ~ /[\001-\037]/) out = out " "
        else out = out c
    }
    return out
}
function squash(s) { gsub(/[ \t]+/, " ", s); sub(/^ /, "", s); sub(/ $/, "", s); return s }
function flush(    n, last, author, text, i) {
    if (nl == 0) return
    last = lines[nl]
    if (last ~ /^[ \t]*--[ \t]*[^ \t]/) {
        author = last; sub(/^[ \t]*--[ \t]*/, "", author); author = squash(author)
        text = ""
        for (i = 1; i < nl; i++) text = text " " lines[i]
        text = squash(text)
        if (text != "" && author != "" && length(text) <= 400)
            printf "{\"quote\": \"%s\", \"author\": \"%s\"}\n", esc(text), esc(author)
    }
    nl = 0
}
FNR == 1 && NR > 1 { flush() } # a file that does not end with "%"
/^%$/ { flush(); next }
{ lines[++nl] = $0 }
END { flush() }
' "$@"
