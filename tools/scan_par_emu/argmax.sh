#!/bin/sh
# Host emulation of sample.cu's multi-block greedy choice (argmax_rows_kernel) against the device's first-argmax
# rule; prints ok.   usage: tools/scan_par_emu/argmax.sh
set -e
here=$(cd "$(dirname "$0")" && pwd); root=$here/../..; out=${TMPDIR:-/tmp}/scan_par_emu; mkdir -p "$out"
python3 - "$root/src/kernels/cuda/sample.cu" "$out/argmax.inc" <<'PY'
import sys
s = open(sys.argv[1]).read()
defs = s[s.index('#define ST '):s.index('static_assert(ST == 256')]
a = s.index('#define ARGMAX_SLICE')
b = s.index('static mc_status grow(')
open(sys.argv[2], 'w').write(defs + s[a:b].replace('__shared__ ', 'static '))
PY
g++ -std=c++20 -O1 -I"$out" -I"$here" -I"$root/src" -I"$root/include" "$here/argmax.cpp" -o "$out/argmax" -lpthread -lm
"$out/argmax"
