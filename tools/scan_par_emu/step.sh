#!/bin/sh
# Host emulation of the decode-step scan kernels (scan.cu's scan_step_kernel and scan_step_dt_kernel, dt_proj folded
# in) against the reference step; prints ok.
#   usage: tools/scan_par_emu/step.sh   (after a build in build-cuda, whose libmambac.a provides the reference)
set -e
. "$(dirname "$0")/common.sh"
python3 - "$root/src/kernels/cuda/scan.cu" "$out/step.inc" <<'PY'
import sys
s = open(sys.argv[1]).read()
a = s.index('template <int TPC>\nstatic __device__ __forceinline__ float lanes_sum')
b = s.index('template <int TPC>\nstatic mc_status scan_step')
open(sys.argv[2], 'w').write(s[a:b])
PY
emu_build step
"$out/step"
