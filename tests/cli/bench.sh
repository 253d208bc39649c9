#!/bin/sh
# mambac bench on the smallest fixtures with tiny sizes (-p 4 -n 2 -r 1, one thread where the test allows): the
# markdown table and the JSON array have one row per test and combination, with the documented columns and keys;
# --profile adds the per-part table / profile_ms; bad lists are usage errors. Speeds are not compared (they vary).
# Every run with -n > 0 first measures the machine's read bandwidth over 1 GiB, so only two runs here do.
. "$(dirname "$0")/helpers"

K1="$MODELS/k1-rank1"
NEOX="$MODELS/tiny-neox"
[ -d "$K1" ] && [ -d "$NEOX" ] || skip "k1-rank1 or tiny-neox fixture absent"
PARTS="embed norm in_proj conv x_proj dt_proj scan out_proj lm_head"
NUM='-\{0,1\}[0-9][0-9]*\.[0-9][0-9]*'

# rows TEXT: the number of lines of the last stdout containing TEXT
rows() {
    grep -cF -- "$1" "$OUT"
}

# Markdown with --profile: the results table (header, separator, pp4 and tg2 rows), then the profile table.
run 0 bench -m "$K1" -p 4 -n 2 -r 1 -t 1 --profile --backend cpu # auto is cuda on a GPU host
[ ! -s "$ERR" ] || fail "bench wrote to stderr"
[ "$(sed -n 1p "$OUT")" = "| model | dtype | backend | threads | batch | test | tokens/s | weight GB/s (machine) | peak RSS MB |" ] ||
    fail "unexpected table header: $(sed -n 1p "$OUT")"
sed -n 2p "$OUT" | grep -q '^|---|' || fail "no markdown separator line under the header"
[ "$(rows '| k1-rank1 | f32 | cpu | 1 | 1 | ')" -eq 2 ] || fail "expected 2 result rows for k1-rank1 f32 cpu t1 b1"
grep -q "^| k1-rank1 | f32 | cpu | 1 | 1 | pp4 | $NUM ± 0\\.00 |  | [0-9][0-9]* |\$" "$OUT" ||
    fail "no well-formed pp4 row (tokens/s ± 0.00 with -r 1, no bandwidth for prefill)"
grep -q "^| k1-rank1 | f32 | cpu | 1 | 1 | tg2 | $NUM ± 0\\.00 | $NUM ($NUM) | [0-9][0-9]* |\$" "$OUT" ||
    fail "no well-formed tg2 row (weight GB/s with the machine's in parentheses)"
out_has "ms per step (tg) or call (pp), by part of the forward"
header="| dtype | threads | batch | test |"
for p in $PARTS other; do
    header="$header $p |"
done
out_has "$header"
for t in pp4 tg2; do
    # 4 key columns then 10 numbers (9 parts + other)
    grep "^| f32 | 1 | 1 | $t |" "$OUT" | grep -q "^| f32 | 1 | 1 | $t |\\( $NUM |\\)\\{10\\}\$" ||
        fail "no profile row for $t with 10 numbers"
done

# JSON with --profile: '[', one object per line, ']'; every documented key with the right type; profile_ms holds
# every part. The same tests as the table: pp4 then tg2.
run 0 bench -m "$K1" -p 4 -n 2 -r 1 -t 1 --profile -o json
[ "$(sed -n 1p "$OUT")" = "[" ] && [ "$(sed -n '$p' "$OUT")" = "]" ] || fail "JSON output is not one array"
[ "$(sed -n '$=' "$OUT")" -eq 4 ] || fail "expected 2 JSON objects on lines of their own"
sed -n 2p "$OUT" | grep -q '^  {.*},$' && sed -n 3p "$OUT" | grep -q '^  {.*}$' || fail "objects not separated by commas"
for key in test dtype device model backend; do
    [ "$(rows "\"$key\": \"")" -eq 2 ] || fail "not every object has the string \"$key\""
done
for key in batch threads tokens_per_s stddev peak_rss_mb bandwidth_gbs machine_bandwidth_gbs; do
    [ "$(grep -cE "\"$key\": -?[0-9]+(\\.[0-9]+)?[,}]" "$OUT")" -eq 2 ] || fail "not every object has the number \"$key\""
done
for p in $PARTS other; do
    [ "$(grep -c "\"profile_ms\": {.*\"$p\": $NUM" "$OUT")" -eq 2 ] || fail "profile_ms lacks \"$p\""
done
sed -n 2p "$OUT" | grep -q '"test": "pp4", "batch": 1, "threads": 1, "dtype": "f32"' || fail "first object is not pp4 b1 t1 f32"
sed -n 3p "$OUT" | grep -q '"test": "tg2", "batch": 1, "threads": 1, "dtype": "f32"' || fail "second object is not tg2 b1 t1 f32"
sed -n 3p "$OUT" | grep -q '"machine_bandwidth_gbs": 0\.000' && fail "tg2 has no machine bandwidth"
sed -n 2p "$OUT" | grep -q '"bandwidth_gbs": 0\.000' || fail "pp4 reports a decode bandwidth"
out_lacks "nan"
out_lacks "inf"
if command -v python3 >/dev/null 2>&1; then # a full parse where python3 exists (not required)
    python3 -c 'import json, sys; json.load(sys.stdin)' <"$OUT" || fail "python3 cannot parse the JSON"
fi

# Combinations: -b 1,2 -t 1,2 --dtype f32,int8 gives one object per (dtype, threads, batch); -n 0 skips decode
# (and the bandwidth probe); no profile_ms without --profile.
run 0 bench -m "$K1" -p 2 -n 0 -r 1 -b 1,2 -t 1,2 --dtype f32,int8 -o json
[ "$(rows '"test": "pp2"')" -eq 8 ] || fail "expected 8 pp2 objects, got $(rows '"test": "pp2"')"
out_lacks '"test": "tg'
out_lacks "profile_ms"
for d in f32 int8; do
    for t in 1 2; do
        for b in 1 2; do
            [ "$(rows "\"batch\": $b, \"threads\": $t, \"dtype\": \"$d\"")" -eq 1 ] || fail "not one row for b$b t$t $d"
        done
    done
done
if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json, sys; json.load(sys.stdin)' <"$OUT" || fail "python3 cannot parse the JSON"
fi

# Markdown without --profile: no second table. --dtype stored names the stored dtype (tiny-neox: bf16), --backend
# ref shows in the backend column, several -p values give one row each.
run 0 bench -m "$NEOX" -p 2,3 -n 0 -r 2 -t 1 --backend ref --dtype stored,f32
out_lacks "ms per step"
[ "$(grep -c '^| tiny-neox | ' "$OUT")" -eq 4 ] || fail "expected 4 rows (2 dtypes x pp2, pp3)"
for d in bf16 f32; do
    for t in pp2 pp3; do
        grep -q "^| tiny-neox | $d | ref | 1 | 1 | $t | " "$OUT" || fail "no row for $d $t on the ref backend"
    done
done

# Nothing to run is a usage error, in either output format.
expect_usage bench "nothing to run" -m "$K1" -p 0 -n 0 -o json
expect_usage bench "nothing to run" -m "$K1" -p 0,0 -n 0

# A '|' in the model folder's name is escaped, so the markdown row keeps its cells.
mkdir "$TMP/a|b"
cp "$K1"/* "$TMP/a|b/"
run 0 bench -m "$TMP/a|b" -p 2 -n 0 -r 1 -t 1
grep -q '^| a\\|b | f32 | ' "$OUT" || fail "the '|' in the model name is not escaped"

# JSON strings are escaped: a model folder named with a quote still gives valid JSON.
mkdir "$TMP/we\"ird"
cp "$K1/config.json" "$K1/model.safetensors" "$TMP/we\"ird/"
run 0 bench -m "$TMP/we\"ird" -p 2 -n 0 -r 1 -t 1 -o json
out_has '"model": "we\"ird"'

# Bad usage (exit 2), each naming the flag.
expect_usage bench "-b: '0' is not an integer in 1..4096" -m "$K1" -b 0
expect_usage bench "-t: 'x' is not an integer" -m "$K1" -t x
expect_usage bench "-t: '0' is not an integer in 1..4096" -m "$K1" -t 1,0
expect_usage bench "-p: '-1' is not an integer" -m "$K1" -p -1
expect_usage bench "-p: '' is not an integer" -m "$K1" -p ,4
expect_usage bench "-b: '' is not an integer" -m "$K1" -b 1,,2
expect_usage bench "-n: empty list" -m "$K1" -n ""
expect_usage bench "-b: more than 16 values" -m "$K1" -b 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17
expect_usage bench "--dtype: 'int4' is not a weight dtype" -m "$K1" --dtype f32,int4
expect_usage bench "-o: 'xml' is not md or json" -m "$K1" -o xml
expect_usage bench "-r: 0 is out of range" -m "$K1" -r 0
expect_usage bench "not a backend" -m "$K1" --backend gpu
expect_usage bench "usage:" -m "$K1" --bogus
expect_usage bench "--dtype needs a value" -m "$K1" --dtype
[ ! -s "$OUT" ] || fail "a usage error printed to stdout"

# A missing model is a runtime error (exit 1, one line); -n 0 keeps the bandwidth probe out of it.
expect_error bench "/nonexistent-model" -m /nonexistent-model -n 0
[ "$(wc -l <"$ERR" | tr -d ' ')" -eq 1 ] || fail "a runtime error printed more than one line"
exit 0
