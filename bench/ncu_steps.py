"""Per-kernel GPU time of decode steps from an Nsight Compute CSV (metrics gpu__time_duration.sum and
dram__bytes.sum, as bench/gpu_decode.sh asks for them): totals per kernel and grid, divided by the number of steps
seen (one sample kernel a step).
usage: python3 bench/ncu_steps.py NCU.csv LABEL"""
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
