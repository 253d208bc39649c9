#!/bin/sh
# Host emulation of scan_par.cu's kernels (no GPU needed): every CUDA thread of a block is a std::thread, barriers
# stand for __syncthreads/__syncwarp, shuffles go through a per-warp array, ex2.approx is exp2f. The kernels are cut
# out of src/kernels/cuda/scan_par.cu as they are and compared with the reference twins (forward y, h; backward du,
# ddt, dz, dB, dC with padding, dA, dD, ddt_bias, dh0), with the rows of B and C misaligned and 16-byte aligned (the
# float4 staging). Launchers (grid, scratch) are not covered: the CUDA tests are.
#   usage: tools/scan_par_emu/run.sh   (after a build in build-cuda, whose libmambac.a provides the reference)
set -e
. "$(dirname "$0")/common.sh"
python3 - "$root/src/kernels/cuda/scan_par.cu" "$out/kern.inc" <<'PY'
import sys
s = open(sys.argv[1]).read()
a = s.index('namespace {')
f1 = s.index('template <int S, int W, int NP, bool CK, int MINB> mc_status fwd_launch')
f2 = s.index('// ---- backward ----')
f3 = s.index('template <int S, int W, int G, int NP, int MINB>\nmc_status bwd_launch')
common = open(sys.argv[1].replace('scan_par.cu', 'common.cuh')).read()  # the shared backward arguments and helpers
shared = common[common.index('struct mc_scan_bwd_args {'):]
e0, e1 = shared.index('// Element i of a weight'), shared.index('static __device__ __forceinline__ float mc_sigmoid')
shared = shared[:e0] + shared[e1:]  # the shim has the host's mc_dev_element
body = shared + s[a:f1] + s[f2:f3] + '} // namespace\n'
body = body.replace('    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));', '    asm(0);')
body = body.replace('    extern __shared__ float smem[];', '')
open(sys.argv[2], 'w').write(body)
PY
emu_build main
for cfg in 1 2 3 4 5; do
    for shape in "1 1 1 1" "2 31 8 16" "3 128 17 16" "2 129 33 5" "1 257 40 16" "2 261 9 13" "1 0 9 4" "2 40 9 0" \
        "2 520 10 16" "1 300 3 17" "1 33 17 64"; do
        set -- $shape
        if [ "$cfg" != 3 ] && [ "$4" -gt 16 ]; then continue; fi
        for al in 0 1; do "$out/main" $shape $cfg $al; done
    done
done | awk '{ print } /FAIL/ { bad = 1 } /fwd|bwd/ { for (i = 1; i <= NF; i++) if ($i + 0 > 1e-5) bad = 1 } END { if (bad) { print "FAIL"; exit 1 } print "ok" }'
