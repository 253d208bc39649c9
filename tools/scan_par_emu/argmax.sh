#!/bin/sh
# Host emulation of sample.cu's multi-block greedy choice (argmax_rows_kernel and the block reduction it shares with
# block_argmax_first) against the device's first-argmax rule; prints ok.   usage: tools/scan_par_emu/argmax.sh
set -e
. "$(dirname "$0")/common.sh"
python3 - "$root/src/kernels/cuda/sample.cu" "$out/argmax.inc" <<'PY'
import sys
s = open(sys.argv[1]).read()
defs = s[s.index('#define ST '):s.index('static_assert(ST == 256')]
h0 = s.index('// (bv, bi) takes (v, i)')
h1 = s.index('// The first index of the largest value (NaN never wins')
a = s.index('#define ARGMAX_SLICE')
b = s.index('static mc_status grow(')
open(sys.argv[2], 'w').write(defs + s[h0:h1] + s[a:b].replace('__shared__ ', 'static '))
PY
emu_build argmax
"$out/argmax"
