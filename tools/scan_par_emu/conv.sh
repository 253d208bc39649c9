#!/bin/sh
# Host emulation of conv1d.cu's tiled sequence kernel (conv1d_tile_kernel, cut from the source as it is) against the
# reference twin mc_ref_conv1d: partial step runs and channel blocks, state columns read before step 0, bias or none.
#   usage: tools/scan_par_emu/conv.sh   (after a build in build-cuda, whose libmambac.a provides the reference)
set -e
. "$(dirname "$0")/common.sh"
emu_cut "$root/src/kernels/cuda/conv1d.cu" "$out/conv.inc" \
    'template <int KW, int TT>' 'extern "C" mc_status mc_cuda_conv1d('
emu_build conv
"$out/conv"
