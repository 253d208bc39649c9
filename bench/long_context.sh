#!/bin/sh
# Long-context scaling: perplexity (every position scored) and generate (prompt prefilled, 1 new token) over
# 10K, 100K and 1M tokens of text, with wall time and peak RSS from /usr/bin/time. Memory should stay flat
# (weights + a fixed working set) and time grow linearly.
#   usage: bench/long_context.sh MODEL TOKENIZER [THREADS] [LENGTHS]
#   e.g.   bench/long_context.sh /tmp/m130 ../shared/tokenizers/gpt-neox-20b/tokenizer.json 2 "10000 100000 1000000"
set -eu
model=$1
tokenizer=$2
threads=${3:-$(nproc)}
lengths=${4:-"10000 100000 1000000"}
bin=${MAMBAC:-build/mambac}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Deterministic pseudo-English: words drawn from a fixed list by a linear congruential generator, so every run
# scores the same text. About 5.5 bytes per token; the file holds the largest length plus a margin.
max=0
for n in $lengths; do
    [ "$n" -gt "$max" ] && max=$n
done
awk -v words="$((max * 11 / 10))" 'BEGIN {
    n = split("the of and a to in is was that for it as with be on not he by this are or his from at which but " \
              "have an they one had you were her all she there would their we him been has when who will more no " \
              "if out so said what up its about into than them can only other new some could time these two may " \
              "then do first any my now such like our over man me even most made after also did many before must " \
              "through back years where much your way well down should because each just those people mr how too " \
              "little state good very make world still own see men work long get here between both life being under " \
              "never day same another know while last might us great old year off come since against go came right " \
              "used take three river mountain language model sequence selective state space recurrent scan", w, " ")
    x = 12345
    for (i = 0; i < words; i++) {
        x = (x * 1103515245 + 12345) % 2147483648
        printf "%s%s", w[int(x / 65536) % n + 1], (i % 17 == 16) ? ".\n" : " "
    }
}' >"$tmp/text"

echo "| test | tokens | wall s | tokens/s | peak RSS MB |"
echo "|---|---:|---:|---:|---:|"
for n in $lengths; do
    /usr/bin/time -f "%e %M" -o "$tmp/time" "$bin" perplexity -m "$model" --tokenizer "$tokenizer" -f "$tmp/text" \
        --max-tokens "$n" -t "$threads" --no-progress >"$tmp/out" 2>/dev/null
    read -r secs kb <"$tmp/time"
    echo "| perplexity | $n | $secs | $(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.1f", n / s }') |" \
        "$(awk -v k="$kb" 'BEGIN { printf "%.0f", k / 1024 }') |"
done
# generate over the whole file: the prompt prefilled in chunks, one new token; output discarded
/usr/bin/time -f "%e %M" -o "$tmp/time" "$bin" generate -m "$model" --tokenizer "$tokenizer" -f "$tmp/text" -n 1 \
    -t "$threads" >/dev/null 2>"$tmp/err"
read -r secs kb <"$tmp/time"
prompt=$(sed -n 's/.*| \([0-9]*\) prompt tokens.*/\1/p' "$tmp/err")
echo "| generate (prompt) | $prompt | $secs | $(awk -v n="$prompt" -v s="$secs" 'BEGIN { printf "%.1f", n / s }') |" \
    "$(awk -v k="$kb" 'BEGIN { printf "%.0f", k / 1024 }') |"
