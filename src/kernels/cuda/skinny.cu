// Skinny f32 products: C = op(A)·op(B) + beta·C (mc_cuda_gemm_f32's column-major contract) where k, or one of m
// and n, is at most SKINNY: a LoRA adapter's rank, the trainer's bias of a frozen matrix. Such a product does
// almost no arithmetic per byte, so it is bound by reading its large operand (or writing its large output) once;
// cuBLAS's SGEMM kernels for these shapes read at 0.5–1.1 TB/s on an H100 (bench/RESULTS.md, the LoRA profile).
// Three kernels, by what is large:
// - up    (k small): each output is a k-term sum; a thread keeps its four rows of A in registers and walks columns,
//   writing four consecutive outputs of C's column at once.
// - down  (m small, B's columns contiguous along k): a warp takes a few columns of B, its lanes stride k by
//   four, and the m sums of each column meet by warp shuffles.
// - cols  (m small, B's rows contiguous along n): a thread takes four consecutive columns and sums over k; k is cut
//   into slices (one per grid row), each slice's m × n partial sums go to the conversion workspace and a second
//   kernel adds them in slice order, so the result does not depend on scheduling.
// A product with n small and m large is the transposed problem (Cᵀ = op(B)ᵀ·op(A)ᵀ) and takes the same kernels.
// Every sum is f32 (exact operands, as SGEMM), in a fixed order.
// Off unless MAMBAC_SKINNY=1: written and compiled in a session that had no GPU, so neither tests/test_cuda_bwd.c's
// test_skinny (which turns them on) nor their speed has run yet; until then these shapes stay on cuBLAS. Their index
// logic was checked on the host, in an emulation of the CUDA thread model (326 products against double sums).
#include <string.h>

#include "kernels/cuda/common.cuh"

#define SKINNY 16        // the small side: at most this
#define UP_THREADS 128   // up: rows of C a block = 4 · UP_THREADS
#define UP_COLS 32       // up: columns of C a block walks
#define DOWN_WARPS 4     // down: warps a block
#define COLS_THREADS 128 // cols: columns a block = 4 · COLS_THREADS
#define COLS_L 32        // cols: rows of B (k) staged per pass, and the unit of a slice
#define COLS_BLOCKS 528  // cols: aim for about four blocks an SM of an H100 when slicing k

// Element (r, c) of a strided matrix view at p[r·s0 + c·s1].
struct smat {
    const float *p;
    int64_t s0, s1;
};

static __device__ __forceinline__ float at(const smat &a, int64_t r, int64_t c) {
    return __ldg(a.p + r * a.s0 + c * a.s1);
}

static __device__ __forceinline__ float4 ld4(const float *p) {
    return __ldg(reinterpret_cast<const float4 *>(p));
}

static bool aligned16(const void *p) {
    return (uintptr_t)p % 16 == 0;
}

// C(i, j) at c[i + j·ldc] = beta·C + Σ_{l<k} A(i, l)·B(l, j), k ≤ KMAX; vec: c 16-byte aligned, ldc % 4 == 0.
template <int KMAX>
__global__ void __launch_bounds__(UP_THREADS)
    skinny_up_kernel(float *__restrict__ c, int64_t ldc, smat a, smat b, int64_t m, int64_t n, int k, float beta,
                     bool vec) {
    const int64_t i0 = ((int64_t)blockIdx.x * UP_THREADS + threadIdx.x) * 4;
    if (i0 >= m) {
        return;
    }
    const int iv = m - i0 < 4 ? (int)(m - i0) : 4;
    float av[4][KMAX];
#pragma unroll
    for (int r = 0; r < 4; r++) {
#pragma unroll
        for (int l = 0; l < KMAX; l++) {
            av[r][l] = r < iv && l < k ? at(a, i0 + r, l) : 0.0f;
        }
    }
    for (int64_t jb = (int64_t)blockIdx.y * UP_COLS; jb < n; jb += (int64_t)gridDim.y * UP_COLS) {
        const int64_t j1 = n - jb < UP_COLS ? n : jb + UP_COLS;
        for (int64_t j = jb; j < j1; j++) {
            float bv[KMAX];
#pragma unroll
            for (int l = 0; l < KMAX; l++) {
                bv[l] = l < k ? at(b, l, j) : 0.0f;
            }
            float out[4];
#pragma unroll
            for (int r = 0; r < 4; r++) {
                float s = 0.0f;
#pragma unroll
                for (int l = 0; l < KMAX; l++) {
                    s = fmaf(av[r][l], bv[l], s);
                }
                out[r] = s;
            }
            float *cj = c + j * ldc + i0;
            if (vec && iv == 4) {
                float4 v = make_float4(out[0], out[1], out[2], out[3]);
                if (beta != 0.0f) {
                    const float4 o = *reinterpret_cast<const float4 *>(cj);
                    v.x = fmaf(beta, o.x, v.x);
                    v.y = fmaf(beta, o.y, v.y);
                    v.z = fmaf(beta, o.z, v.z);
                    v.w = fmaf(beta, o.w, v.w);
                }
                *reinterpret_cast<float4 *>(cj) = v;
            } else {
                for (int r = 0; r < iv; r++) {
                    cj[r] = beta != 0.0f ? fmaf(beta, cj[r], out[r]) : out[r];
                }
            }
        }
    }
}

// How the down kernel reads A(i, l..l+3): A_SCALAR one element at a time; A_ROW4 as one float4 of row i
// (A(i, l) contiguous in l); A_COL4 as float4s of column l (A(i, l) contiguous in i; m % 4 == 0).
enum { A_SCALAR, A_ROW4, A_COL4 };

// C(i, j) at c[i·sci + j·scj] = beta·C + Σ_l A(i, l)·b[l + j·ldb], i < m ≤ MMAX. vec: b 16-byte aligned and
// ldb, k multiples of 4 (float4 loads of B; A as amode says); otherwise scalar loads throughout. A warp takes DOWN_J
// columns (fewer for a larger m, whose sums take the registers).
template <int MMAX, int AMODE, int DOWN_J>
__global__ void __launch_bounds__(DOWN_WARPS * 32)
    skinny_down_kernel(float *__restrict__ c, int64_t sci, int64_t scj, smat a, const float *__restrict__ b,
                       int64_t ldb, int m, int64_t n, int64_t k, float beta, bool vec) {
    const int lane = threadIdx.x & 31;
    const int64_t j0 = ((int64_t)blockIdx.x * DOWN_WARPS + (threadIdx.x >> 5)) * DOWN_J;
    if (j0 >= n) {
        return;
    }
    const int nj = n - j0 < DOWN_J ? (int)(n - j0) : DOWN_J;
    float acc[DOWN_J][MMAX];
#pragma unroll
    for (int jj = 0; jj < DOWN_J; jj++) {
#pragma unroll
        for (int i = 0; i < MMAX; i++) {
            acc[jj][i] = 0.0f;
        }
    }
    if (vec) {
#pragma unroll 2
        for (int64_t l = (int64_t)lane * 4; l < k; l += 128) {
            float4 bv[DOWN_J];
#pragma unroll
            for (int jj = 0; jj < DOWN_J; jj++) {
                bv[jj] = jj < nj ? ld4(b + (j0 + jj) * ldb + l) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
            float av[MMAX][4];
            if constexpr (AMODE == A_COL4) {
#pragma unroll
                for (int q = 0; q < 4; q++) {
#pragma unroll
                    for (int i4 = 0; i4 < MMAX; i4 += 4) {
                        const float4 v = i4 < m ? ld4(a.p + (l + q) * a.s1 + i4) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                        av[i4][q] = v.x;
                        av[i4 + 1][q] = v.y;
                        av[i4 + 2][q] = v.z;
                        av[i4 + 3][q] = v.w;
                    }
                }
            } else {
#pragma unroll
                for (int i = 0; i < MMAX; i++) {
                    if (i < m) {
                        if constexpr (AMODE == A_ROW4) {
                            const float4 v = ld4(a.p + i * a.s0 + l);
                            av[i][0] = v.x;
                            av[i][1] = v.y;
                            av[i][2] = v.z;
                            av[i][3] = v.w;
                        } else {
#pragma unroll
                            for (int q = 0; q < 4; q++) {
                                av[i][q] = at(a, i, l + q);
                            }
                        }
                    } else {
                        av[i][0] = av[i][1] = av[i][2] = av[i][3] = 0.0f;
                    }
                }
            }
#pragma unroll
            for (int jj = 0; jj < DOWN_J; jj++) {
#pragma unroll
                for (int i = 0; i < MMAX; i++) {
                    float s = acc[jj][i];
                    s = fmaf(av[i][0], bv[jj].x, s);
                    s = fmaf(av[i][1], bv[jj].y, s);
                    s = fmaf(av[i][2], bv[jj].z, s);
                    acc[jj][i] = fmaf(av[i][3], bv[jj].w, s);
                }
            }
        }
    } else {
        for (int64_t l = lane; l < k; l += 32) {
#pragma unroll
            for (int jj = 0; jj < DOWN_J; jj++) {
                const float bv = jj < nj ? __ldg(b + (j0 + jj) * ldb + l) : 0.0f;
#pragma unroll
                for (int i = 0; i < MMAX; i++) {
                    acc[jj][i] = fmaf(i < m ? at(a, i, l) : 0.0f, bv, acc[jj][i]);
                }
            }
        }
    }
#pragma unroll
    for (int jj = 0; jj < DOWN_J; jj++) {
#pragma unroll
        for (int i = 0; i < MMAX; i++) {
            float s = acc[jj][i];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) {
                s += __shfl_xor_sync(0xffffffffu, s, off);
            }
            if (lane == i && i < m && jj < nj) {
                float *p = c + i * sci + (j0 + jj) * scj;
                *p = beta != 0.0f ? fmaf(beta, *p, s) : s;
            }
        }
    }
}

// Slice blockIdx.y of k (rows [l0, l1) of B): Σ_l A(i, l)·b[l·ldb + j] for i < m ≤ MMAX and the block's columns,
// into part[(blockIdx.y·m + i)·n + j], or, with one slice, into C(i, j) at c[i·sci + j·scj] (beta·C + the sum).
// vec: b 16-byte aligned and ldb % 4 == 0 (float4 loads of whole column quads).
template <int MMAX>
__global__ void __launch_bounds__(COLS_THREADS)
    skinny_cols_kernel(float *__restrict__ part, float *__restrict__ c, int64_t sci, int64_t scj, float beta, smat a,
                       const float *__restrict__ b, int64_t ldb, int m, int64_t n, int64_t k, int64_t slice, bool vec) {
    __shared__ __align__(16) float as[COLS_L][MMAX];
    const int64_t j0 = ((int64_t)blockIdx.x * COLS_THREADS + threadIdx.x) * 4;
    const int64_t l0 = (int64_t)blockIdx.y * slice, l1 = k - l0 < slice ? k : l0 + slice;
    const int nj = j0 >= n ? 0 : n - j0 < 4 ? (int)(n - j0) : 4;
    float acc[4][MMAX];
#pragma unroll
    for (int q = 0; q < 4; q++) {
#pragma unroll
        for (int i = 0; i < MMAX; i++) {
            acc[q][i] = 0.0f;
        }
    }
    for (int64_t lb = l0; lb < l1; lb += COLS_L) {
        const int nl = l1 - lb < COLS_L ? (int)(l1 - lb) : COLS_L;
        __syncthreads(); // the previous pass is done with `as`
        for (int t = threadIdx.x; t < COLS_L * MMAX; t += COLS_THREADS) {
            const int ll = t / MMAX, i = t % MMAX;
            as[ll][i] = ll < nl && i < m ? at(a, i, lb + ll) : 0.0f;
        }
        __syncthreads();
        if (nj == 0) {
            continue;
        }
#pragma unroll 4
        for (int ll = 0; ll < nl; ll++) {
            const float *bl = b + (lb + ll) * ldb + j0;
            float bv[4];
            if (vec && nj == 4) {
                const float4 v = ld4(bl);
                bv[0] = v.x;
                bv[1] = v.y;
                bv[2] = v.z;
                bv[3] = v.w;
            } else {
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    bv[q] = q < nj ? __ldg(bl + q) : 0.0f;
                }
            }
#pragma unroll
            for (int i4 = 0; i4 < MMAX; i4 += 4) {
                const float4 av = *reinterpret_cast<const float4 *>(&as[ll][i4]);
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    acc[q][i4] = fmaf(av.x, bv[q], acc[q][i4]);
                    acc[q][i4 + 1] = fmaf(av.y, bv[q], acc[q][i4 + 1]);
                    acc[q][i4 + 2] = fmaf(av.z, bv[q], acc[q][i4 + 2]);
                    acc[q][i4 + 3] = fmaf(av.w, bv[q], acc[q][i4 + 3]);
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < MMAX; i++) {
        if (i >= m) {
            break;
        }
#pragma unroll
        for (int q = 0; q < 4; q++) {
            if (q < nj) {
                if (gridDim.y == 1) {
                    float *p = c + i * sci + (j0 + q) * scj;
                    *p = beta != 0.0f ? fmaf(beta, *p, acc[q][i]) : acc[q][i];
                } else {
                    part[((int64_t)blockIdx.y * m + i) * n + j0 + q] = acc[q][i];
                }
            }
        }
    }
}

// C(i, j) at c[i·sci + j·scj] = beta·C + Σ_s part[(s·m + i)·n + j], the slices in order.
__global__ void skinny_cols_sum_kernel(float *__restrict__ c, int64_t sci, int64_t scj, float beta,
                                       const float *__restrict__ part, int m, int64_t n, int slices) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)m * n) {
        return;
    }
    const int64_t i = t / n, j = t % n;
    float s = 0.0f;
    for (int z = 0; z < slices; z++) {
        s += part[((int64_t)z * m + i) * n + j];
    }
    float *p = c + i * sci + j * scj;
    *p = beta != 0.0f ? fmaf(beta, *p, s) : s;
}

template <int KMAX>
static void up_launch(float *c, int64_t ldc, smat a, smat b, int64_t m, int64_t n, int k, float beta,
                      cudaStream_t s) {
    const int64_t col_blocks = (n + UP_COLS - 1) / UP_COLS;
    const dim3 grid(mc_cuda_blocks(m, 4 * UP_THREADS), (unsigned)(col_blocks < 65535 ? col_blocks : 65535));
    const bool vec = aligned16(c) && ldc % 4 == 0;
    skinny_up_kernel<KMAX><<<grid, UP_THREADS, 0, s>>>(c, ldc, a, b, m, n, k, beta, vec);
}

template <int MMAX>
static void down_launch(float *c, int64_t sci, int64_t scj, smat a, const float *b, int64_t ldb, int m, int64_t n,
                        int64_t k, float beta, cudaStream_t s) {
    constexpr int J = MMAX <= 8 ? 4 : 2;
    const bool vec = aligned16(b) && ldb % 4 == 0 && k % 4 == 0;
    const unsigned grid = mc_cuda_blocks(n, DOWN_WARPS * J);
    if (vec && a.s1 == 1 && a.s0 % 4 == 0 && aligned16(a.p)) {
        skinny_down_kernel<MMAX, A_ROW4, J><<<grid, DOWN_WARPS * 32, 0, s>>>(c, sci, scj, a, b, ldb, m, n, k, beta, vec);
    } else if (vec && a.s0 == 1 && a.s1 % 4 == 0 && m % 4 == 0 && aligned16(a.p)) {
        skinny_down_kernel<MMAX, A_COL4, J><<<grid, DOWN_WARPS * 32, 0, s>>>(c, sci, scj, a, b, ldb, m, n, k, beta, vec);
    } else {
        skinny_down_kernel<MMAX, A_SCALAR, J><<<grid, DOWN_WARPS * 32, 0, s>>>(c, sci, scj, a, b, ldb, m, n, k, beta,
                                                                               vec);
    }
}

template <int MMAX>
static mc_status cols_launch(const mc_exec *ex, float *c, int64_t sci, int64_t scj, smat a, const float *b,
                             int64_t ldb, int m, int64_t n, int64_t k, float beta) {
    const unsigned col_blocks = mc_cuda_blocks(n, 4 * COLS_THREADS);
    int64_t slices = (COLS_BLOCKS + col_blocks - 1) / col_blocks, most = (k + COLS_L - 1) / COLS_L;
    slices = slices < most ? slices : most;
    slices = slices < 1 ? 1 : slices > 65535 ? 65535 : slices;
    const int64_t slice = ((k + slices - 1) / slices + COLS_L - 1) / COLS_L * COLS_L; // whole passes of COLS_L
    slices = (k + slice - 1) / slice;
    float *part = nullptr;
    if (slices > 1) {
        const mc_status st = mc_cuda_cvt_reserve(ex, (size_t)(slices * m * n) * sizeof(float));
        if (st != MC_OK) {
            return st;
        }
        part = (float *)mc_cuda_ctx_of(ex)->cvt;
    }
    cudaStream_t s = mc_cuda_ctx_of(ex)->stream;
    const bool vec = aligned16(b) && ldb % 4 == 0;
    skinny_cols_kernel<MMAX><<<dim3(col_blocks, (unsigned)slices), COLS_THREADS, 0, s>>>(part, c, sci, scj, beta, a, b,
                                                                                        ldb, m, n, k, slice, vec);
    if (slices > 1) {
        skinny_cols_sum_kernel<<<mc_cuda_blocks(m * n, 256), 256, 0, s>>>(c, sci, scj, beta, part, m, n,
                                                                          (int)slices);
    }
    return MC_OK;
}

static bool skinny_on() {
    static const bool on = [] {
        const char *v = getenv("MAMBAC_SKINNY");
        return v != nullptr && strcmp(v, "1") == 0;
    }();
    return on;
}

mc_status mc_cuda_gemm_skinny(const mc_exec *ex, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                              int64_t ldc, bool *done) {
    *done = false;
    if (!skinny_on() || m <= 0 || n <= 0 || (k > SKINNY && m > SKINNY && n > SKINNY)) {
        return MC_OK;
    }
    cudaStream_t s = mc_cuda_ctx_of(ex)->stream;
    smat A = { a, trans_a ? lda : 1, trans_a ? 1 : lda }; // op(A)(i, l)
    smat B = { b, trans_b ? ldb : 1, trans_b ? 1 : ldb }; // op(B)(l, j)
    mc_status st = MC_OK;
    if (k <= SKINNY) {
        if (k <= 4) {
            up_launch<4>(c, ldc, A, B, m, n, (int)k, beta, s);
        } else if (k <= 8) {
            up_launch<8>(c, ldc, A, B, m, n, (int)k, beta, s);
        } else {
            up_launch<SKINNY>(c, ldc, A, B, m, n, (int)k, beta, s);
        }
        *done = true;
        return mc_cuda_launched("skinny product (up)", ex);
    }
    int64_t sci = 1, scj = ldc; // C(i, j)
    if (m > SKINNY) { // n is the small side: Cᵀ(j, i) = Σ_l B(l, j)·A(i, l)
        const smat t = A;
        A = { B.p, B.s1, B.s0 };
        B = { t.p, t.s1, t.s0 };
        const int64_t tm = m;
        m = n;
        n = tm;
        sci = ldc;
        scj = 1;
    }
    if (B.s0 == 1) { // B's columns are contiguous along k
        if (m <= 8) {
            down_launch<8>(c, sci, scj, A, B.p, B.s1, (int)m, n, k, beta, s);
        } else {
            down_launch<SKINNY>(c, sci, scj, A, B.p, B.s1, (int)m, n, k, beta, s);
        }
        st = mc_cuda_launched("skinny product (down)", ex);
    } else { // B's rows are contiguous along n
        st = m <= 8 ? cols_launch<8>(ex, c, sci, scj, A, B.p, B.s0, (int)m, n, k, beta)
                    : cols_launch<SKINNY>(ex, c, sci, scj, A, B.p, B.s0, (int)m, n, k, beta);
        if (st == MC_OK) {
            st = mc_cuda_launched("skinny product (cols)", ex);
        }
    }
    *done = st == MC_OK;
    return st;
}
