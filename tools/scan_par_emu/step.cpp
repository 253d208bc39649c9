// Host emulation of scan.cu's decode-step kernel (scan_step_kernel, cut from the source by step.sh) against the
// reference step: every lane count, states below, at and above a warp's 32, rows of B/C/z padded.
#include "shim.h"
extern "C" {
#include "kernels/ref/ref.h"
}
#include "step.inc"

static bool g_aligned; // q's rows as x_proj lays them out for Mamba (B and C 16-byte aligned) or misaligned
template <int TPC> static double run(int64_t n_seq, int64_t E, int64_t N) {
    const int64_t R = g_aligned ? 4 : 3, ldbc = R + 2 * N + (g_aligned ? 0 : 1), ldz = 2 * E + 3;
    std::vector<float> u(n_seq * E), dt(n_seq * E), q(n_seq * ldbc), xz(n_seq * ldz), dtb(E), A(E * N), D(E), h(n_seq * E * N);
    for (auto &v : u) v = U(-2, 2);
    for (auto &v : dt) v = U(-5, 25);
    for (auto &v : q) v = U(-1, 1);
    for (auto &v : xz) v = U(-4, 4);
    for (auto &v : dtb) v = U(-2, 1);
    for (auto &v : A) v = -expf(U(-2, 2));
    for (auto &v : D) v = U(-1, 1);
    for (auto &v : h) v = U(-1, 1);
    mc_exec ex = {};
    ex.n_threads = 1;
    std::vector<float> wy(n_seq * E), wh = h, gy(n_seq * E, NAN), gh = h;
    mc_ref_selective_scan_step(&ex, wy.data(), wh.data(), u.data(), dt.data(), dtb.data(), A.data(), q.data() + R,
                               q.data() + R + N, ldbc, D.data(), xz.data() + E, ldz, n_seq, E, N);
    const int64_t threads = n_seq * E * TPC;
    launch((unsigned)((threads + 127) / 128), 1, 128, [&] {
        scan_step_kernel<TPC>(gy.data(), gh.data(), u.data(), dt.data(), dtb.data(), A.data(), q.data() + R,
                              q.data() + R + N, ldbc, D.data(), xz.data() + E, ldz, n_seq, E, N);
    });
    double e = fmax(relerr(gy.data(), wy.data(), n_seq * E), relerr(gh.data(), wh.data(), n_seq * E * N));
    printf("step TPC=%d n_seq=%ld E=%ld N=%ld: max err %.3g\n", TPC, n_seq, E, N, e);
    // dt_proj folded in: q's first R columns times a [E, R] weight in each dtype (int8 with group scales)
    for (int dtype : {MC_DTYPE_F32, MC_DTYPE_BF16, MC_DTYPE_F16, MC_DTYPE_I8}) {
        const int64_t R = g_aligned ? 48 : 1 + (int64_t)(g_rs % 50), ldq = R + 2 * N + (g_aligned ? 0 : 3), group = 8,
                      ng = (R + group - 1) / group;
        std::vector<float> qq(n_seq * ldq), wf(E * R), sc(E * ng);
        std::vector<uint16_t> w16(E * R);
        std::vector<int8_t> w8(E * R);
        for (auto &v : qq) v = U(-1, 1);
        for (auto &v : sc) v = U(0.001f, 0.02f);
        for (int64_t k = 0; k < E * R; k++) {
            wf[k] = U(-1, 1);
            w16[k] = dtype == MC_DTYPE_BF16 ? mc_f32_to_bf16(wf[k]) : mc_f32_to_f16(wf[k]);
            w8[k] = (int8_t)(int)U(-127, 127);
        }
        mc_weight w = {};
        w.dtype = dtype; w.rows = E; w.cols = R;
        w.data = dtype == MC_DTYPE_F32 ? (const void *)wf.data() : dtype == MC_DTYPE_I8 ? (const void *)w8.data() : (const void *)w16.data();
        if (dtype == MC_DTYPE_I8) { w.scales = sc.data(); w.group = group; }
        std::vector<float> ry(n_seq * E), rh = h, qy(n_seq * E, NAN), qh = h;
        mc_ref_selective_scan_step_dt(&ex, ry.data(), rh.data(), u.data(), qq.data(), ldq, &w, dtb.data(), A.data(), D.data(), xz.data() + E, ldz, n_seq, E, N, R);
        launch((unsigned)((threads + 127) / 128), 1, 128, [&] {
            scan_step_dt_kernel<TPC>(qy.data(), qh.data(), u.data(), qq.data(), ldq, w.data, w.dtype, w.scales, w.group, dtb.data(), A.data(), D.data(), xz.data() + E, ldz, n_seq, E, N, R);
        });
        const double ed = fmax(relerr(qy.data(), ry.data(), n_seq * E), relerr(qh.data(), rh.data(), n_seq * E * N));
        printf("step_dt TPC=%d dtype=%d n_seq=%ld E=%ld N=%ld R=%ld: max err %.3g\n", TPC, dtype, n_seq, E, N, R, ed);
        e = fmax(e, ed);
    }
    return e;
}

int main() {
    double worst = 0;
    const int64_t shapes[][3] = { {1, 1, 1}, {1, 3, 4}, {2, 5, 8}, {1, 7, 16}, {3, 9, 17}, {2, 5, 32}, {1, 3, 33}, {2, 4, 64}, {1, 2, 65}, {1, 37, 16} };
    for (int al = 0; al < 2; al++)
    for (auto &s : shapes) {
        g_aligned = al == 1; // aligned rows: the four-states-a-lane path where N = 4 · lanes (16 at 4, 64 at 16)
        const int64_t N = s[2];
        if (N == 64) worst = fmax(worst, run<16>(s[0], s[1], N));
        double e = N <= 4 ? run<4>(s[0], s[1], N) : N <= 8 ? run<8>(s[0], s[1], N) : N <= 16 ? run<16>(s[0], s[1], N) : run<32>(s[0], s[1], N);
        worst = fmax(worst, e);
        if (N <= 16) worst = fmax(worst, run<32>(s[0], s[1], N)); // more lanes than states: idle lanes add zeros
        worst = fmax(worst, run<4>(s[0], s[1], N)); // batched decode: 4 lanes, several states each
    }
    printf(worst < 1e-5 ? "ok\n" : "FAILED (worst %.3g)\n", worst);
    return worst < 1e-5 ? 0 : 1;
}
