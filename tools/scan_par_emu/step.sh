#!/bin/sh
# Host emulation of the decode-step scan kernels (scan.cu's scan_step_kernel and scan_step_dt_kernel, dt_proj folded
# in) against the reference step; prints ok.
#   usage: tools/scan_par_emu/step.sh   (after a build in build-cuda, whose libmambac.a provides the reference)
set -e
. "$(dirname "$0")/common.sh"
emu_cut "$root/src/kernels/cuda/scan.cu" "$out/step.inc" \
    'template <int TPC>\nstatic __device__ __forceinline__ float lanes_sum' \
    'template <int TPC>\nstatic mc_status scan_step'
emu_build step
"$out/step"
