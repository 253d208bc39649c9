#!/bin/sh
# Per-kernel GPU time of decode steps at one batch size under Nsight Compute (kernels serialised: durations, not the
# gaps between them): 400 kernel launches after the prefill (generate prefills each of the batch's prompts alone,
# ~200 launches each) on build-gpu/mambac and /tmp/m130 (bf16 weights and products); the program's own output (ids)
# goes to /dev/null so that only ncu's CSV (kept as CSV) is parsed: totals per kernel and grid, divided by the
# number of steps seen (one sample kernel a step), onto stdout.
#   usage: sh bench/ncu_decode.sh BATCH CSV
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
b=$1 csv=$2
timeout 150 ncu --metrics gpu__time_duration.sum,dram__bytes.sum --cache-control none --clock-control none \
    --launch-skip $((b * 200 + 1500)) --launch-count 400 --csv --log-file "$csv" \
    "$root/build-gpu/mambac" generate -m /tmp/m130 --backend cuda --dtype bf16 --precision bf16 \
    --ids 1,2,3,4,5,6,7,8 -n 60 --no-eos --batch "$b" --greedy -q --print-ids > /dev/null 2>&1
python3 - "$csv" "$b" <<'PY'
import collections
import csv
import sys

rows = list(csv.reader(open(sys.argv[1])))
head = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if head is None:
    sys.exit("ncu %s: no CSV header in %s" % (sys.argv[2], sys.argv[1]))
h = rows[head]
k, m, v, g = h.index("Kernel Name"), h.index("Metric Name"), h.index("Metric Value"), h.index("Grid Size")
t, by, n = collections.defaultdict(float), collections.defaultdict(float), collections.Counter()
for r in rows[head + 1:]:
    if len(r) != len(h):
        continue
    name = r[k].split("(")[0][:48] + " " + r[g]
    val = float(r[v].replace(",", ""))
    if r[m].startswith("gpu__time"):
        t[name] += val / 1000.0
        n[name] += 1
    else:
        by[name] += val
steps = max(1, sum(c for name, c in n.items() if name.startswith("sample")))
total = sum(t.values())
print("ncu decode batch %s: %d kernels, %.1f us of kernel time, %d steps: %.1f us and %.0f kernels a step" %
      (sys.argv[2], sum(n.values()), total, steps, total / steps, sum(n.values()) / steps))
for name, us in sorted(t.items(), key=lambda x: -x[1])[:12]:
    print("   %7.1f us a step (%4.1f x %6.2f us, %5.0f GB/s)  %s" %
          (us / steps, n[name] / steps, us / n[name], by[name] / us / 1e3, name))
PY
