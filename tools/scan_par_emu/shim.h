#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __shared__
struct dim3_ { unsigned x, y, z; };
extern thread_local dim3_ threadIdx, blockIdx; extern dim3_ blockDim;
extern std::barrier<> *g_block_bar;
extern std::barrier<> *g_warp_bar[32];
extern float g_shfl[32][32];
inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline void __syncwarp() { g_warp_bar[threadIdx.x / 32]->arrive_and_wait(); }
inline float shx(float v, int src) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    g_shfl[w][l] = v;
    __syncwarp();
    float r = g_shfl[w][src];
    __syncwarp();
    return r;
}
inline float __shfl_up_sync(unsigned, float v, int off) { int l = threadIdx.x % 32; return shx(v, l >= off ? l - off : l); }
inline float __shfl_down_sync(unsigned, float v, int off) { int l = threadIdx.x % 32; return shx(v, l + off < 32 ? l + off : l); }
inline float __shfl_xor_sync(unsigned, float v, int off) { int l = threadIdx.x % 32; return shx(v, l ^ off); }
extern std::mutex g_atomic;
inline float atomicAdd(float *p, float v) { std::lock_guard<std::mutex> g(g_atomic); float o = *p; *p = o + v; return o; }
#define asm(...) (y = exp2f(x))
static inline float mc_dev_softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
static inline float mc_dev_silu(float v) { return v / (1.0f + expf(-v)); }
extern float smem[];
#define FULL_MASK 0xffffffffu
static inline void mc_pdl_wait() {}
static inline void mc_pdl_trigger() {}
#include "kernels/dtype.h"
static inline float mc_dev_element(const void *data, int dtype, int64_t i) {
    switch (dtype) {
        case MC_DTYPE_F16: return mc_f16_to_f32(((const uint16_t *)data)[i]);
        case MC_DTYPE_BF16: return mc_bf16_to_f32(((const uint16_t *)data)[i]);
        case MC_DTYPE_I8: return (float)((const int8_t *)data)[i];
        default: return ((const float *)data)[i];
    }
}
