"""Sums an Nsight Compute CSV (metrics gpu__time_duration.sum and dram__bytes.sum) per kernel and grid, divided by
a number of steps, onto stdout: the kernels taking the most time first.
  usage: python3 bench/ncu_sum.py CSV LABEL STEPS|sample [TOP]
STEPS is how many steps the profiled launches cover; "sample" counts them as the launches of the sample kernels
(one a decode step)."""
import collections
import csv
import sys

path, label, steps_arg = sys.argv[1], sys.argv[2], sys.argv[3]
top = int(sys.argv[4]) if len(sys.argv) > 4 else 12
rows = list(csv.reader(open(path)))
head = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if head is None:
    sys.exit("ncu %s: no CSV header in %s" % (label, path))
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
if steps_arg == "sample":
    steps = max(1, sum(c for name, c in n.items() if name.startswith("sample")))
else:
    steps = int(steps_arg)
total = sum(t.values())
print("ncu %s: %d kernels, %.1f us of kernel time, %d steps: %.1f us and %.0f kernels a step" %
      (label, sum(n.values()), total, steps, total / steps, sum(n.values()) / steps))
for name, us in sorted(t.items(), key=lambda x: -x[1])[:top]:
    print("   %9.1f us a step (%5.1f x %7.2f us, %5.0f GB/s)  %s" %
          (us / steps, n[name] / steps, us / n[name], by[name] / us / 1e3, name))
